"""``bench run --executor ray`` on a local 2-CPU Ray cluster (harness/executors/ray.py).

A small suite runs through Ray actors: an actor killed mid-cell is recorded as ``crashed``
and replaced, the other cells equal the local executor's (same cells, same exact byte
counts), and running again resumes (nothing left to measure).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import Store

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'bench[ray]'")

ROOT = Path(__file__).resolve().parent.parent
SUITE = """\
name: ray
models: [tiny-random-llama]
devices: [cpu]
workload:
  generate: {{prompt_tokens: 8, new_tokens: 3}}
techniques: {techniques}
policy: {{warmup: 0, repeats: 2, timeout_s: 300}}
"""
# Deterministic on CPU: from the tensors, the cache object and the profiler's events.
EXACT = (
    "memory.weights_bytes",
    "memory.kv_cache_bytes",
    "memory.peak_alloc_bytes",
    "memory.window_peak_bytes",
)


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env
    )


def test_ray_executor_matches_local_and_replaces_a_killed_actor(
    tmp_path: Path, test_plugins: None
) -> None:
    local_suite = tmp_path / "local.yaml"
    local_suite.write_text(SUITE.format(techniques="[baseline, {precision: {dtype: fp32}}]"))
    ray_suite = tmp_path / "ray.yaml"
    ray_suite.write_text(SUITE.format(techniques="[baseline, crashy, {precision: {dtype: fp32}}]"))
    local_db, ray_db = f"sqlite:///{tmp_path / 'local.db'}", f"sqlite:///{tmp_path / 'ray.db'}"

    done = bench("run", str(local_suite), "--db", local_db)
    assert done.returncode == 0, done.stdout + done.stderr
    done = bench("run", str(ray_suite), "--db", ray_db, "--executor", "ray")
    assert done.returncode == 1, done.stdout + done.stderr  # the crashed cell failed

    with Store.open(ray_db, read_only=True) as store:
        got = store.cells_frame().set_index("technique")
        assert len(store.runs_frame()) == 1
    assert got.loc["crashy", "status"] == "crashed"
    assert got.loc["crashy", "reason"].startswith("Ray actor died")
    # The cell after the crash ran on a new actor, and every ok cell equals the local one.
    assert got.loc["precision(dtype=fp32)", "status"] == "ok"
    with Store.open(local_db, read_only=True) as store:
        want = store.cells_frame().set_index("technique")
    assert set(want.index) == {"baseline", "precision(dtype=fp32)"}
    for technique in want.index:
        assert got.loc[technique, "cell_key"] == want.loc[technique, "cell_key"]
        assert got.loc[technique, "status"] == "ok"
        for metric in EXACT:
            assert got.loc[technique, metric] == want.loc[technique, metric], (technique, metric)
    assert got.loc["precision(dtype=fp32)", "latency.speedup"] > 0  # ratios as locally

    # Run again: the ok cells resume (the actor's machine is this one), crashy is retried.
    again = bench("run", str(ray_suite), "--db", ray_db, "--executor", "ray")
    assert again.returncode == 1, again.stdout + again.stderr
    with Store.open(ray_db, read_only=True) as store:
        runs = store.runs_frame()
        assert runs["cells"].tolist() == [3, 1]
        assert store.cells_frame(run_id=2)["technique"].tolist() == ["crashy"]
