"""The runner end to end on the tiny built-in model: statuses, timeouts, crashes, resume,
and each kind of worker fault (abort, exit, out of host memory, SIGKILL from outside)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.store import Store

ROOT = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, "-m", "harness"]

pytestmark = pytest.mark.slow

SUITE = """\
name: {name}
models: [tiny-random-llama]
devices: [cpu]
workload:
  generate: {{prompt_tokens: 8, new_tokens: 3, batch_size: [1, 2]}}
techniques: {techniques}
policy: {{warmup: 0, repeats: 2, timeout_s: {timeout}}}
"""


def suite_file(tmp_path: Path, techniques: str, timeout: float = 120, name: str = "t") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, techniques=techniques, timeout=timeout))
    return path


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, env=os.environ)


def statuses(db: str) -> dict[str, str]:
    frame = Store.open(db, read_only=True).cells_frame()
    return {f"{r.technique}/{r.workload}": r.status for r in frame.itertuples()}


def test_failures_are_data_and_the_suite_goes_on(
    tmp_path: Path, db_url: str, test_plugins: None
) -> None:
    suite = suite_file(
        tmp_path, "[baseline, skippy, explode, crashy, {sleepy: {seconds: 90}}]", timeout=20
    )
    done = bench("run", str(suite), "--db", db_url)
    assert done.returncode == 1, done.stderr
    frame = Store.open(db_url, read_only=True).cells_frame()
    by = frame.groupby("technique")["status"].agg(set).to_dict()
    assert by == {
        "baseline": {"ok"},
        "skippy": {"skipped"},
        "explode": {"error"},
        "crashy": {"crashed"},
        "sleepy(seconds=90.0)": {"timeout"},
    }
    reasons = frame.set_index("technique")["reason"].to_dict()
    assert reasons["skippy"] == "needs hardware this test does not have"
    assert reasons["explode"].startswith("RuntimeError: boom (bench_testplugins.py:")
    assert reasons["crashy"] == "worker exited with code 3"
    assert reasons["sleepy(seconds=90.0)"] == "cell ran longer than 20 s"
    # Cells after the crash and the timeout ran on a restarted worker.
    assert len(frame) == 10


def test_resume_skips_finished_cells_and_rerun_forces(tmp_path: Path, db_url: str) -> None:
    suite = suite_file(tmp_path, "[baseline]")
    assert bench("run", str(suite), "--db", db_url).returncode == 0
    again = bench("run", str(suite), "--db", db_url)
    assert again.returncode == 0
    assert "already have results" in again.stdout
    store = Store.open(db_url, read_only=True)
    assert len(store.runs_frame()) == 1
    assert bench("run", str(suite), "--db", db_url, "--rerun").returncode == 0
    assert len(store.runs_frame()) == 2


def test_sigkill_mid_suite_then_resume_gives_one_result_per_cell(
    tmp_path: Path, db_url: str, test_plugins: None
) -> None:
    suite = suite_file(
        tmp_path, "[baseline, {sleepy: {seconds: 2}}, {precision: {dtype: fp32}}]", name="kill"
    )
    proc = subprocess.Popen(
        [*BENCH, "run", str(suite), "--db", db_url],
        env=os.environ,
        stdout=subprocess.DEVNULL,  # never read: a pipe would stay open (ResourceWarning)
        stderr=subprocess.DEVNULL,
    )
    db_path = Path(db_url.removeprefix("sqlite:///"))
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until some, not all, cells are stored
        if db_path.exists():
            try:
                n = len(Store.open(db_url, read_only=True).cells_frame())
            except Exception:
                n = 0
            if n >= 2:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(Store.open(db_url, read_only=True).cells_frame())
    assert 2 <= partial < 6

    done = bench("run", str(suite), "--db", db_url)
    assert done.returncode == 0, done.stdout + done.stderr
    store = Store.open(db_url, read_only=True)
    frame = store.cells_frame()
    assert len(frame) == 6 and set(frame["status"]) == {"ok"}
    import sqlite3

    rows = (
        sqlite3.connect(db_path).execute("select key, count(*) from cells group by key").fetchall()
    )
    assert len(rows) == 6 and {count for _, count in rows} == {1}


def _speedups(db_path: Path, run_id: int) -> dict[tuple[str, str], tuple[float | None, str]]:
    """(technique, workload JSON) -> (latency.speedup, its reason) of one run's cells."""
    import sqlite3

    rows = sqlite3.connect(db_path).execute(
        "select c.technique, c.workload, m.value, m.reason from cells c join metrics m "
        "on m.cell_id = c.id where m.name = 'latency.speedup' and c.run_id = ?",
        (run_id,),
    )
    return {(t, w): (v, r or "") for t, w, v, r in rows}


def test_speedup_is_against_the_reference_of_the_same_run(tmp_path: Path, db_url: str) -> None:
    db_path = Path(db_url.removeprefix("sqlite:///"))
    alone = suite_file(tmp_path, "[{precision: {dtype: fp32}}]", name="alone")
    assert bench("run", str(alone), "--db", db_url).returncode == 0
    assert all(
        v is None and "no ok cell of the reference stack" in r
        for v, r in _speedups(db_path, 1).values()
    )
    first = suite_file(tmp_path, "[baseline]", name="first")
    assert bench("run", str(first), "--db", db_url).returncode == 0
    # The baseline is listed last and was measured by the previous run: a resumed run has
    # no reference of its own, so no speedup (never one against another run's cell).
    both = suite_file(tmp_path, "[{precision: {dtype: bf16}}, baseline]", name="both")
    assert bench("run", str(both), "--db", db_url).returncode == 0
    resumed = _speedups(db_path, 3)
    assert len(resumed) == 2 and all(v is None for v, _ in resumed.values())
    assert bench("run", str(both), "--db", db_url, "--rerun").returncode == 0
    frame = Store.open(db_url, read_only=True).cells_frame(run_id=4)
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}
    assert frame.set_index("technique")["reference"].to_dict() == {
        "baseline": True,
        "precision(dtype=bf16)": False,
    }
    for _, group in frame.groupby("workload"):
        rows = group.set_index("technique")
        base = rows.loc["baseline"]
        assert base["latency.speedup"] == 1.0
        other = rows.loc["precision(dtype=bf16)"]
        expected = base["latency.tpot_s"] / other["latency.tpot_s"]
        assert other["latency.speedup"] == pytest.approx(expected, rel=1e-12)


def test_the_suite_names_its_reference_stack(tmp_path: Path, db_url: str) -> None:
    suite = suite_file(tmp_path, "[baseline, {precision: {dtype: bf16}}]", name="ref")
    suite.write_text(suite.read_text() + "reference: {precision: {dtype: bf16}}\n")
    assert bench("run", str(suite), "--db", db_url).returncode == 0
    frame = Store.open(db_url, read_only=True).cells_frame()
    for _, group in frame.groupby("workload"):
        rows = group.set_index("technique")
        ref = rows.loc["precision(dtype=bf16)"]
        assert bool(ref["reference"]) and ref["latency.speedup"] == 1.0
        expected = ref["latency.tpot_s"] / rows.loc["baseline"]["latency.tpot_s"]
        assert rows.loc["baseline"]["latency.speedup"] == pytest.approx(expected, rel=1e-12)


_BUMP = '''
from harness import Context, MetricDef, Technique, hookimpl


class Bump(Technique):
    """Leaves the model alone; reports one registered and one unregistered metric."""

    name = "bump"

    def metrics(self, ctx: Context) -> dict[str, float]:
        return {"bump.calls": 1, "bump.unregistered": 2}


@hookimpl
def register_techniques():
    return [Bump]


@hookimpl
def register_metrics():
    return [MetricDef("bump.calls", "calls", True, "calls")]
'''


def _install_bump(site: Path, version: str) -> None:
    """(Re)install the distribution bench-bump at ``version`` into ``site``."""
    for old in site.glob("bench_bump-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    (site / "bench_bump.py").write_text(_BUMP)
    dist = site / f"bench_bump-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: bench-bump\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text("[bench]\nbump = bench_bump\n")


def test_a_new_plugin_version_is_measured_again_and_unregistered_metrics_are_reported(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cell key includes the versions of the third-party plugins a cell uses: after an
    upgrade its cells are measured again, while cells of built-ins alone are resumed. A
    metric the plugin did not register is left out, said in the cell's reason and on the
    console, and the cell keeps the rest."""
    import json
    import sqlite3

    site = tmp_path / "site"
    site.mkdir()
    _install_bump(site, "1.0.0")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
    suite = suite_file(tmp_path, "[baseline, bump]", name="bump")
    first = bench("run", str(suite), "--db", db_url)
    assert first.returncode == 0, first.stdout + first.stderr
    note = (
        "metrics bump.unregistered were not stored: they are not registered; return a "
        "MetricDef for each from the plugin's register_metrics hook"
    )
    assert first.stderr.count(f"warning: bump: {note}") == 2  # one per workload variant
    frame = Store.open(db_url, read_only=True).cells_frame()
    bumped = frame[frame["technique"] == "bump"]
    assert set(bumped["status"]) == {"ok"} and set(bumped["reason"]) == {note}
    assert set(bumped["bump.calls"]) == {1.0} and "bump.unregistered" not in frame.columns
    assert bumped["latency.tpot_s"].notna().all()

    assert "already have results" in bench("run", str(suite), "--db", db_url).stdout
    _install_bump(site, "1.1.0")
    again = bench("run", str(suite), "--db", db_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already have results" not in again.stdout
    db = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    per_run = db.execute(
        "select r.id, c.technique, r.environment from runs r join cells c on c.run_id = r.id"
    ).fetchall()
    techniques = {run: sorted(t for r, t, _ in per_run if r == run) for run, _, _ in per_run}
    assert techniques == {1: ["baseline", "baseline", "bump", "bump"], 2: ["bump", "bump"]}
    versions = {run: json.loads(env).get("bench-bump") for run, _, env in per_run}
    assert versions == {1: "1.0.0", 2: "1.1.0"}


# --- worker faults, one run: each fault is followed by a cell on a fresh worker -------------

FAULTS = """\
name: faults
models: [tiny-random-llama]
devices: [cpu]
workload:
  generate: {{prompt_tokens: 8, new_tokens: 3}}
techniques:
  - {{pid: {{tag: 0}}}}
  - aborty
  - {{pid: {{tag: 1}}}}
  - exity
  - {{pid: {{tag: 2}}}}
  - {{hog: {{via: python}}}}
  - {{pid: {{tag: 3}}}}
  - {{hog: {{via: torch}}}}
  - {{pid: {{tag: 4}}}}
  - {{victim: {{pidfile: {pidfile}}}}}
  - {{pid: {{tag: 5}}}}
policy: {{warmup: 0, repeats: 1, timeout_s: 300}}
"""


@dataclass(frozen=True)
class FaultRun:
    returncode: int
    stdout: str
    cells: dict[str, tuple[str, str | None]]  # technique label -> (status, reason)
    pids: dict[str, float]  # pid(tag=N) label -> the worker's process id


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> FaultRun:
    """``bench run`` of FAULTS; the victim's worker is SIGKILLed from here."""
    tmp = tmp_path_factory.mktemp("faults")
    pidfile = tmp / "victim.pid"
    suite = tmp / "faults.yaml"
    suite.write_text(FAULTS.format(pidfile=pidfile))
    db = f"sqlite:///{tmp / 'bench.db'}"
    plugins = str(ROOT / "tests" / "plugins")
    env = {**os.environ, "BENCH_PLUGINS": "bench_testplugins"}
    env["PYTHONPATH"] = os.pathsep.join([plugins, str(ROOT)])
    out = tmp / "stdout.txt"
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [*BENCH, "run", str(suite), "--db", db], env=env, stdout=stdout, stderr=stdout
        )
        deadline = time.time() + 900
        while not pidfile.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        proc.wait(timeout=900)
    frame = Store.open(db, read_only=True).cells_frame()
    cells = {r.technique: (r.status, r.reason) for r in frame.itertuples()}
    pids = dict(zip(frame["technique"], frame.get("test.worker_pid", []), strict=False))
    return FaultRun(proc.returncode, out.read_text(), cells, pids)


def test_worker_abort_is_a_crashed_cell(fault_run: FaultRun) -> None:
    assert fault_run.cells["aborty"] == (
        "crashed",
        "worker killed by SIGABRT (the process aborted)",
    )


def test_worker_sys_exit_is_a_crashed_cell(fault_run: FaultRun) -> None:
    assert fault_run.cells["exity"] == ("crashed", "worker exited with code 3")


@pytest.mark.parametrize("via", ["python", "torch"])
def test_worker_out_of_host_memory_is_an_oom_host_cell(fault_run: FaultRun, via: str) -> None:
    status, reason = fault_run.cells["hog" if via == "python" else f"hog(via={via})"]
    assert status == "oom_host"
    expected = "MemoryError" if via == "python" else "DefaultCPUAllocator: can't allocate memory"
    assert reason is not None and reason.startswith("host out of memory (") and expected in reason


def test_worker_sigkilled_from_outside_is_an_oom_host_cell(fault_run: FaultRun) -> None:
    (label,) = [t for t in fault_run.cells if t.startswith("victim")]
    status, reason = fault_run.cells[label]
    assert status == "oom_host"
    assert reason is not None and reason.startswith("worker killed by SIGKILL")


def test_after_each_worker_fault_the_next_cell_runs_on_a_fresh_worker(
    fault_run: FaultRun,
) -> None:
    tags = [f"pid(tag={i})" if i else "pid" for i in range(6)]
    assert [fault_run.cells[t][0] for t in tags] == ["ok"] * 6, fault_run.stdout
    pids = [fault_run.pids[t] for t in tags]
    assert len(set(pids)) == 6, pids  # each fault's worker was replaced


def test_worker_faults_make_the_run_exit_1(fault_run: FaultRun) -> None:
    assert fault_run.returncode == 1, fault_run.stdout
    assert "5 cell(s) failed" in fault_run.stdout


# --- runner faults: killed or out of disk in the middle of writing a cell --------------------

# Runs `bench` with a SQLAlchemy hook that, while the second cell is being written (its row
# and metrics inserted, not committed), SIGKILLs the runner (FAULT=kill) or, just before it,
# fills the file system that holds the database (FAULT=fill, FAULT_ARG=filler path).
FAULTY_BENCH = """
import errno, os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine

FAULT, ARG = os.environ["FAULT"], os.environ.get("FAULT_ARG", "")
cells = 0


def fill(path):
    with open(path, "wb") as filler:
        try:
            while True:
                filler.write(b"\\0" * 65536)
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


@event.listens_for(Engine, "before_cursor_execute")
def before(conn, cursor, statement, parameters, context, executemany):
    global cells
    if statement.lstrip().upper().startswith("INSERT INTO CELLS"):
        cells += 1
        if FAULT == "fill" and cells == 2:
            fill(ARG)


@event.listens_for(Engine, "after_cursor_execute")
def after(conn, cursor, statement, parameters, context, executemany):
    metrics = statement.lstrip().upper().startswith("INSERT INTO METRICS")
    if FAULT == "kill" and cells == 2 and metrics:
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":  # not again in the spawned worker, which imports this file
    from harness.cli import main

    main()
"""


def faulty_bench(
    tmp_path: Path, fault: str, *args: str, arg: str = ""
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "faulty_bench.py"
    script.write_text(FAULTY_BENCH)
    env = {**os.environ, "FAULT": fault, "FAULT_ARG": arg, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env
    )


def integrity(db_path: Path) -> tuple[str, list[tuple[str, int]], int]:
    """(integrity_check, cells per key, metrics whose cell is missing)."""
    import sqlite3

    with sqlite3.connect(db_path) as raw:
        check = raw.execute("PRAGMA integrity_check").fetchone()[0]
        keys = raw.execute("select key, count(*) from cells group by key").fetchall()
        orphans = raw.execute(
            "select count(*) from metrics where cell_id not in (select id from cells)"
        ).fetchone()[0]
    raw.close()
    return check, keys, orphans


def test_runner_killed_while_writing_leaves_an_intact_database_and_resumes(
    tmp_path: Path, db_url: str
) -> None:
    suite = suite_file(tmp_path, "[baseline, {precision: {dtype: bf16}}]", name="killed")
    db_path = Path(db_url.removeprefix("sqlite:///"))
    killed = faulty_bench(tmp_path, "kill", "run", str(suite), "--db", db_url)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    check, keys, orphans = integrity(db_path)
    assert check == "ok" and orphans == 0
    assert len(keys) == 1  # the first cell; the second was in flight and is gone entirely
    done = bench("run", str(suite), "--db", db_url)
    assert done.returncode == 0, done.stdout + done.stderr
    check, keys, orphans = integrity(db_path)
    assert check == "ok" and orphans == 0
    assert len(keys) == 4 and {count for _, count in keys} == {1}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test (as root), else the test is skipped."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_disk_full_while_writing_is_one_clear_error_and_nothing_half_written(
    tmp_path: Path, small_disk: Path
) -> None:
    suite = suite_file(tmp_path, "[baseline, {precision: {dtype: bf16}}]", name="full")
    db_path = small_disk / "bench.db"
    db_url = f"sqlite:///{db_path}"
    filler = small_disk / "filler"
    full = faulty_bench(tmp_path, "fill", "run", str(suite), "--db", db_url, arg=str(filler))
    assert full.returncode == 2, full.stdout + full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: {db_path}: cannot write"), full.stderr
    assert "disk is full" in lines[0] and "nothing of this write was stored" in lines[0]
    filler.unlink()
    check, keys, orphans = integrity(db_path)
    assert check == "ok" and orphans == 0 and len(keys) == 1
    done = bench("run", str(suite), "--db", db_url)
    assert done.returncode == 0, done.stdout + done.stderr
    check, keys, orphans = integrity(db_path)
    assert check == "ok" and orphans == 0
    assert len(keys) == 4 and {count for _, count in keys} == {1}
