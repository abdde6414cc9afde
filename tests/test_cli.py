"""Bad input exits 2 with one line naming the fix, and writes nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
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


def test_unreadable_database_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "bench.db"
    db.write_bytes(b"this is not a database\n" * 100)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args in (["results"], ["run", str(ROOT / "suites/smoke.yaml")]):
        done = bench(*args, "--db", f"sqlite:///{db}")
        assert done.returncode == 2
        assert str(db) in one_error_line(done)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_check_and_dry_run() -> None:
    done = bench("check", str(ROOT / "suites/inference.yaml"))
    assert done.returncode == 0 and "ok, 46 cells" in done.stdout
    dry = bench("run", "--dry-run", str(ROOT / "suites/smoke.yaml"))
    assert dry.returncode == 0 and "4 cells" in dry.stdout


def test_help_lists_the_commands() -> None:
    done = bench("--help")
    for command in ("run", "check", "plugins", "new-plugin", "results", "export", "dashboard"):
        assert f"  {command}" in done.stdout
