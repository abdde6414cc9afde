"""The runner end to end on the tiny built-in model: statuses, timeouts, crashes, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
