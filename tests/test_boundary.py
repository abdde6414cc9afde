"""Out-of-memory boundary searches (harness/boundary.py): the bisection, its seed, real runs.

The bisection is checked against a known boundary (a threshold ``fits``), exhaustively by
hypothesis; the seed against the estimate it inverts; and whole searches end to end with
``bench run`` under a real memory cap (``policy.memory_limit_gib``: ``RLIMIT_DATA`` of the
worker process), so every OOM is a real, survived, recorded failure.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.boundary import Outcome, Stop, bisect, jobs, predicted_largest, probe_cell
from harness.environment import Environment
from harness.estimate.cellstep import predict_cell
from harness.estimate.predict import build_techniques
from harness.suite import suite_from_data
from harness.testing import registry_with

ROOT = Path(__file__).resolve().parent.parent
BENCH = str(ROOT / ".venv" / "bin" / "bench")


def search_for(threshold: int, seed: int, **kw: Any) -> Outcome:
    """A search whose values up to ``threshold`` fit."""
    kw = {"at_least": 1, "up_to": 1024, "tolerance": 0.05, "max_probes": 12, **kw}
    return bisect(lambda v: v <= threshold, seed, **kw)


# ---------------------------------------------------------------- bisection


def test_from_a_seed_too_high_the_step_grows_then_the_bracket_halves() -> None:
    out = search_for(231, 377, tolerance=1e-6, max_probes=20)
    # ÷1.25, ÷1.5, then a bracket [200, 301] halved down to adjacent values
    assert [v for v, _ in out.probes][:3] == [377, 301, 200]
    assert (out.largest, out.smallest_failing) == (231, 232)
    assert out.stopped is None
    assert all(fitted == (v <= 231) for v, fitted in out.probes)


def test_from_a_seed_too_low_the_step_grows_upwards() -> None:
    out = search_for(1000, 10, tolerance=1e-6, max_probes=30)
    values = [v for v, _ in out.probes]
    assert values[:4] == [10, 12, 18, 36]  # ×1.25, ×1.5, ×2 (ints)
    assert (out.largest, out.smallest_failing) == (1000, 1001)


def test_bounds_everything_fits_and_nothing_fits() -> None:
    every = search_for(5000, 600)
    assert (every.largest, every.smallest_failing) == (1024, None)
    assert every.probes[-1] == (1024, True)
    none = search_for(0, 40)
    assert (none.largest, none.smallest_failing) == (None, 1)
    assert none.probes[-1] == (1, False)


def test_max_probes_ends_the_search_with_the_bracket_so_far() -> None:
    out = search_for(231, 377, tolerance=1e-6, max_probes=4)
    assert len(out.probes) == 4
    assert out.largest is not None and out.smallest_failing is not None
    assert out.largest <= 231 < out.smallest_failing


def test_a_probe_that_fails_otherwise_stops_the_search() -> None:
    def fits(value: int) -> bool:
        if value < 300:
            raise Stop(f"probe batch_size={value}: error: boom")
        return False

    out = bisect(fits, 377, at_least=1, up_to=1024, tolerance=0.05, max_probes=12)
    assert out.stopped == "probe batch_size=200: error: boom"  # 377, 301 ran out of memory
    assert (out.largest, out.smallest_failing) == (None, 301)


@settings(max_examples=300, deadline=None)
@given(
    threshold=st.integers(0, 3000),
    seed=st.integers(1, 3000),
    at_least=st.integers(1, 50),
    span=st.integers(0, 3000),
    tolerance=st.floats(0.001, 0.5),
)
def test_bisection_finds_the_boundary_within_its_tolerance(
    threshold: int, seed: int, at_least: int, span: int, tolerance: float
) -> None:
    up_to = at_least + span
    out = search_for(threshold, seed, at_least=at_least, up_to=up_to, tolerance=tolerance)
    assert all(at_least <= v <= up_to for v, _ in out.probes)
    assert all(fitted == (v <= threshold) for v, fitted in out.probes)
    assert len(out.probes) <= 12
    truth = min(threshold, up_to) if threshold >= at_least else None
    if len(out.probes) < 12:  # converged: the answer is within the tolerance of the truth
        if truth is None:
            assert out.largest is None and out.smallest_failing == at_least
        elif truth == up_to:
            assert out.largest == up_to
        else:
            lo, hi = out.largest, out.smallest_failing
            assert lo is not None and hi is not None and lo <= truth < hi
            assert hi - lo <= max(1, int(tolerance * lo))


# ---------------------------------------------------------------- the estimate's seed


def _suite(limit_gib: float, **search: Any) -> Any:
    data = {
        "name": "boundary",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": 128, "new_tokens": 4}},
        "policy": {"memory_limit_gib": limit_gib, "warmup": 0, "repeats": 1},
        "search": search,
    }
    return suite_from_data(data, registry_with(), devices=["cpu"])


def test_the_seed_is_the_largest_value_whose_predicted_peak_fits() -> None:
    registry = registry_with()
    suite = _suite(0.25, max_batch_size={"up_to": 4096}, max_prompt_tokens={"up_to": 10**7})
    found = jobs(suite)
    assert [j.axis for j in found] == ["max_prompt_tokens", "max_batch_size"]
    env = Environment("cpu", False, None)
    for job in found:
        seed = predicted_largest(job, registry)
        assert seed is not None and 1 < seed < job.spec.up_to

        def peak(value: int, job: Any = job) -> float:
            techniques = build_techniques([], registry)
            prediction = predict_cell(probe_cell(job.base, job.param, value), techniques, env)
            assert prediction.estimate is not None and prediction.estimate.memory is not None
            assert prediction.capacity_bytes == 0.25 * 2**30  # the cap, not the RAM
            memory = prediction.estimate.memory
            return memory.peak_bytes + memory.overhead_bytes

        assert peak(seed) <= 0.25 * 2**30 < peak(seed + 1)


def test_probe_cells_run_once_without_pre_flight() -> None:
    (job,) = jobs(_suite(0.25, max_batch_size={"up_to": 64}))
    probe = probe_cell(job.base, "batch_size", 7)
    assert probe.workload.params["batch_size"] == 7
    assert (probe.policy.warmup, probe.policy.repeats, probe.policy.preflight) == (0, 1, False)
    assert probe.policy.memory_limit_gib == 0.25 and probe.key != job.base.key


# ---------------------------------------------------------------- real searches


def _rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query).fetchall()


SEARCH_SUITE = """\
name: boundary
models: [tiny-random-llama]
devices: [cpu]
workload: {generate: {prompt_tokens: 128, new_tokens: 2}}
policy: {memory_limit_gib: 0.25, warmup: 0, repeats: 1}
search:
  max_batch_size: {up_to: 1024, max_probes: 3}
"""


def test_a_real_search_records_every_probe_and_its_outcome(tmp_path: Path) -> None:
    suite, db = tmp_path / "s.yaml", tmp_path / "b.db"
    suite.write_text(SEARCH_SUITE)
    done = subprocess.run(
        [BENCH, "run", str(suite), "--db", f"sqlite:///{db}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    cells = _rows(db, "SELECT id, status, workload FROM cells ORDER BY id")
    suite_cell, *probes, outcome = cells
    assert json.loads(suite_cell[2])["params"]["batch_size"] == 1
    assert json.loads(outcome[2])["name"] == "boundary" and outcome[1] == "ok"
    assert len(probes) == 3  # max_probes
    assert {status for _, status, _ in probes} <= {"ok", "oom_host"}
    assert any(status == "oom_host" for _, status, _ in probes)  # 0.25 GiB does not hold 1024
    values = {
        name: value
        for name, value in _rows(db, f"SELECT name, value FROM metrics WHERE cell_id={outcome[0]}")
    }
    batches = [(json.loads(w)["params"]["batch_size"], s) for _, s, w in probes]
    fitted = [b for b, status in batches if status == "ok"]
    assert values["boundary.max_batch_size"] == (max(fitted) if fitted else None)
    assert values["boundary.probes"] == 3
    assert values["boundary.predicted_max_batch_size"] == batches[0][0]  # the first probe
    samples = _rows(
        db,
        "SELECT s.value FROM samples s JOIN metrics m ON m.id = s.metric_id WHERE "
        f"m.cell_id = {outcome[0]} AND m.name = 'boundary.max_batch_size' ORDER BY s.position",
    )
    assert [v for (v,) in samples] == [float(b) for b, _ in batches]

    again = subprocess.run(
        [BENCH, "run", str(suite), "--db", f"sqlite:///{db}"], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert len(_rows(db, "SELECT id FROM cells")) == len(cells)  # resumed: nothing rerun


def test_a_search_another_runner_holds_is_left_to_it(tmp_path: Path) -> None:
    from harness.environment import machine_info
    from harness.store import Store
    from harness.store.claims import ClaimRef
    from harness.store.store import hardware_key

    suite, db = tmp_path / "s.yaml", tmp_path / "b.db"
    suite.write_text(SEARCH_SUITE)
    (job,) = jobs(suite_from_data(yaml.safe_load(SEARCH_SUITE), registry_with(), devices=["cpu"]))
    url = f"sqlite:///{db}"
    with Store.open(url) as store:
        ref = ClaimRef(hardware_key(machine_info()), job.key, "another-runner")
        assert store.claim([ref], since=store.clock(), lease_s=3600)[job.key] == "taken"
    done = subprocess.run([BENCH, "run", str(suite), "--db", url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1 cell(s) were measured by other runners" in done.stdout
    statuses = _rows(db, "SELECT workload FROM cells")
    assert [json.loads(w)["name"] for (w,) in statuses] == ["generate"]  # no probe, no outcome


def test_a_cap_below_what_a_load_needs_is_a_host_oom_not_a_hang(tmp_path: Path) -> None:
    suite, db = tmp_path / "s.yaml", tmp_path / "b.db"
    policy = "policy: {memory_limit_gib: 0.25, warmup: 0, repeats: 1}"
    capped = "policy: {memory_limit_gib: 0.03, warmup: 0, repeats: 1, timeout_s: 120}"
    suite.write_text(SEARCH_SUITE.split("search:")[0].replace(policy, capped))
    done = subprocess.run(
        [BENCH, "run", str(suite), "--db", f"sqlite:///{db}"], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr  # some cells failed
    ((status, reason),) = _rows(db, "SELECT status, reason FROM cells")
    assert status == "oom_host" and reason.startswith("host out of memory"), reason


@pytest.mark.parametrize("axis", ["max_prompt_tokens", "max_batch_size"])
def test_every_stack_gets_one_search_per_axis(axis: str) -> None:
    data = {
        "name": "boundary",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": [16, 32], "new_tokens": 2}},
        "techniques": ["baseline", {"kv-quant": {"bits": 4}}],
        "search": {axis: {"up_to": 64}},
    }
    found = jobs(suite_from_data(data, registry_with(), devices=["cpu"]))
    stacks = sorted(j.base.label for j in found)
    # prompt_tokens is the axis itself or one of the other parameters kept from the cells
    per_stack = 1 if axis == "max_prompt_tokens" else 2
    assert len(found) == 2 * per_stack and len(set(stacks)) == 2
    assert len({j.key for j in found}) == len(found)
