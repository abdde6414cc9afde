"""Bad input exits 2 with one line naming the fix, and writes nothing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = [sys.executable, "-m", "harness"]
ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, cwd=cwd, env=env)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ERROR: ")
    return lines[0]


@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        ("name: x\nmodels: [smollm2-135m\n", "malformed YAML"),
        (
            "name: x\nmodels: [smollm2-135m]\nworkload: {generate: {}}\ntechniques: [int4]\n",
            "unknown technique 'int4'. Installed:",
        ),
        (
            "name: x\nmodels: [smollm2-135m]\nworkload: {generate: {new_tokens: 1}}\n",
            "new_tokens: Input should be greater than or equal to 2",
        ),
    ],
)
def test_bad_suites_exit_2_and_write_nothing(tmp_path: Path, suite: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(suite)
    done = bench("run", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert expected in one_error_line(done)
    assert not (tmp_path / "results").exists()


def test_unknown_model_exits_2_at_check(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nmodels: [smolm2-135m]\nworkload: {generate: {}}\n")
    done = bench("check", str(path))
    assert done.returncode == 2
    assert "smolm2-135m" in one_error_line(done)


def test_missing_suite_file(tmp_path: Path) -> None:
    done = bench("check", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert "cannot read suite" in one_error_line(done)


def test_check_and_dry_run() -> None:
    done = bench("check", str(ROOT / "suites/inference.yaml"))
    assert done.returncode == 0 and "ok, 46 cells" in done.stdout
    dry = bench("run", "--dry-run", str(ROOT / "suites/smoke.yaml"))
    assert dry.returncode == 0 and "4 cells" in dry.stdout


def test_check_counts_one_cell_in_the_singular(tmp_path: Path) -> None:
    suite = tmp_path / "one.yaml"
    suite.write_text(RUN_SUITE)
    done = bench("check", str(suite))
    assert done.returncode == 0 and ": ok, 1 cell, " in done.stdout, done.stdout


def test_help_lists_the_commands() -> None:
    done = bench("--help")
    for command in ("run", "check", "plugins", "new-plugin", "results", "export", "dashboard"):
        assert f"  {command}" in done.stdout


# --- hostile suites (issue 18's table): check and run refuse alike, before writing anything --

_SIZES = ", ".join(str(i) for i in range(1, 1001))
_BOMB = "name: x\nmodels: [smollm2-135m]\nworkload: {generate: {}}\nexclude:\n"
_BOMB += '  - {a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]}\n'
for _new, _old in zip("bcdefghi", "abcdefgh", strict=True):
    _BOMB += f"  - {{{_new}: &{_new} [{', '.join([f'*{_old}'] * 9)}]}}\n"
_OK = "name: x\nmodels: [smollm2-135m]\ndevices: [cpu]\nworkload: {generate: {}}\n"

HOSTILE: list[tuple[str, str | bytes, str]] = [
    (
        "duplicated-key",
        _OK + "techniques: [baseline]\ntechniques: [baseline]\n",
        "s.yaml:6: key 'techniques' is given twice (lines 5 and 6)",
    ),
    ("deep-nesting", "name: x\nmodels: " + "[" * 5000 + "]" * 5000, "suite nested too deeply"),
    (
        "latin-1",
        (_OK + "description: café\n").encode("latin-1"),
        "s.yaml:5: not UTF-8 (byte 0xE9, perhaps Latin-1 or Windows-1252). Save the file as UTF-8",
    ),
    ("random-bytes", bytes((i * 131 + 7) % 256 for i in range(4000)), "not a YAML text file"),
    (
        "missing-model-folder",
        _OK.replace("smollm2-135m", "./no-such-model"),
        "s.yaml:2: model folder './no-such-model' not found",
    ),
    ("alias-bomb", _BOMB, "(more than 100,000 added; an alias bomb?)"),
    ("device-cudafoo", _OK.replace("[cpu]", "[cudafoo]"), "unknown device 'cudafoo'"),
    ("device-cuda-minus-1", _OK.replace("[cpu]", "['cuda:-1']"), "unknown device 'cuda:-1'"),
    (
        "prompt-tokens-true",
        _OK.replace("{generate: {}}", "{generate: {prompt_tokens: true}}"),
        "prompt_tokens: booleans are not numbers",
    ),
    (
        "policy-repeats-true",
        _OK + "policy: {repeats: true}\n",
        "policy.repeats: booleans are not numbers",
    ),
    (
        "prompt-tokens-beyond-the-text",
        _OK.replace("{generate: {}}", "{generate: {prompt_tokens: 9000000}}"),
        "reads 9,000,000 tokens of text 'shakespeare' (prompt split), which holds",
    ),
    (
        "million-cells",
        _OK.replace(
            "{generate: {}}", f"{{generate: {{prompt_tokens: [{_SIZES}], batch_size: [{_SIZES}]}}}}"
        ),
        "the matrix has 1,000,000 cells, about ",
    ),
]


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``bench ARGS`` in this process: (exit code, stdout, stderr)."""
    from harness.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), out.out, out.err


@pytest.mark.parametrize(
    ("content", "expected"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_suites_exit_2_in_one_line_from_check_and_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str | bytes,
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for command in ("check", "run"):
        code, out, err = in_process(capsys, command, str(path))
        assert code == 2, (command, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ERROR: "), (command, err)
        assert expected in lines[0], (command, lines[0])
        assert "internal error" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing written


# --- store faults: exit 2, one line naming the fix, the file untouched -----------------------

RUN_SUITE = (
    "name: faults\nmodels: [tiny-random-llama]\ndevices: [cpu]\n"
    "workload: {generate: {prompt_tokens: 8, new_tokens: 2}}\n"
)


def _bench_db(path: Path) -> None:
    """A real results database with one run and a few cells."""
    from harness.results import CellResult, Value
    from harness.store import Store

    with Store.open(f"sqlite:///{path}") as store:
        machine = store.ensure_machine(
            "m", {"hostname": "h", "cpu": "c", "cpu_count": 1, "ram_bytes": 1}
        )
        run = store.start_run(
            suite_name="old",
            suite_path="old.yaml",
            suite_hash="0" * 64,
            machine_id=machine,
            harness_version="0",
            git_commit=None,
            environment={},
        )
        for i in range(60):
            values = tuple(Value(f"latency.m{j}", float(j), "s") for j in range(6))
            store.record(
                run,
                CellResult(
                    f"k{i}",
                    "m",
                    "cpu",
                    "baseline",
                    (),
                    {"name": "generate", "params": {}},
                    "ok",
                    "r" * 200,
                    0.0,
                    1.0,
                    values,
                ),
            )


def _damage(path: Path, kind: str) -> None:
    import sqlite3

    if kind == "text":
        path.write_bytes(b"this is not a database\n" * 100)
        return
    _bench_db(path)
    if kind == "newer-schema":
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE alembic_version SET version_num = '9999_future'")
        raw.close()
    elif kind == "damaged-pages":
        with sqlite3.connect(path) as raw:
            (root,) = raw.execute(
                "SELECT rootpage FROM sqlite_master WHERE name = 'cells'"
            ).fetchone()
        raw.close()
        data = bytearray(path.read_bytes())
        for page in (root, root + 1):
            data[(page - 1) * 4096 : page * 4096] = b"\xa5" * 4096
        path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("text", "not a SQLite database. Pass --db"),
        ("damaged-pages", "damaged"),
        ("newer-schema", "written by a newer bench (schema revision 9999_future"),
    ],
)
def test_damaged_or_foreign_database_is_refused_untouched(
    tmp_path: Path, kind: str, expected: str
) -> None:
    db = tmp_path / "bench.db"
    _damage(db, kind)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    suite = tmp_path / "s.yaml"
    suite.write_text(RUN_SUITE)
    commands = (
        [["run", str(suite)]] if kind == "damaged-pages" else [["results"], ["run", str(suite)]]
    )
    for args in commands:
        done = bench(*args, "--db", f"sqlite:///{db}")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        line = one_error_line(done)
        assert str(db) in line and expected in line, line
        assert "--db" in line
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_damaged_database_read_is_one_line_with_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "bench.db"
    _damage(db, "damaged-pages")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    done = bench("results", "--db", f"sqlite:///{db}")
    assert done.returncode == 2
    line = one_error_line(done)
    assert "database disk image is malformed" in line and f"{db} is damaged: restore it" in line
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """Make ``folder`` and what is in it unwritable: permissions for a normal user; as root
    (who ignores permissions) a read-only bind mount, skipped where mounting is not allowed."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    mount = ["mount", "--bind", str(folder), str(folder)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("running as root and cannot bind-mount: no way to make a file read-only")
    try:
        remount = ["mount", "-o", "remount,bind,ro", str(folder)]
        if subprocess.run(remount, capture_output=True).returncode != 0:
            pytest.skip("running as root and cannot remount read-only")
        yield
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_database_is_read_but_never_written(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "bench.db"
    _bench_db(db)
    suite = tmp_path / "s.yaml"
    suite.write_text(RUN_SUITE)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with read_only_folder(folder):
        done = bench("run", str(suite), "--db", f"sqlite:///{db}")
        assert done.returncode == 2, done.stdout + done.stderr
        line = one_error_line(done)
        assert line.startswith(f"ERROR: {db}: cannot write the results database: ")
        assert "Make it writable, or pass --db with another file" in line
        shown = bench("results", "--db", f"sqlite:///{db}")
        assert shown.returncode == 0, shown.stderr
        assert "baseline" in shown.stdout
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_unreachable_postgresql_exits_2_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    url = f"postgresql+psycopg2://bench:secret@127.0.0.1:{port}/bench"
    suite = tmp_path / "s.yaml"
    suite.write_text(RUN_SUITE)
    for args in (["results"], ["run", str(suite)]):
        done = bench(*args, "--db", url)
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert f"bench:***@127.0.0.1:{port}/bench: cannot open the results database" in line
        assert "secret" not in line and "reachable" in line and "--db" in line


def test_wrong_postgresql_password_exits_2_in_one_line(tmp_path: Path, pg_url: str) -> None:
    from harness.postgres import PASSWORD

    url = pg_url.replace(f":{PASSWORD}@", ":wrong-secret@")
    suite = tmp_path / "s.yaml"
    suite.write_text(RUN_SUITE)
    for args in (["results"], ["run", str(suite)]):
        done = bench(*args, "--db", url)
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert "postgres:***@127.0.0.1" in line and "wrong-secret" not in line
        assert "Check the user name and password" in line and "--db" in line
