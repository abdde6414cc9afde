"""Concurrent runners of one suite split its cells through claims (harness/store/claims.py).

Each runner is a process running the real ``run_suite`` with a fake executor
(tests/claims_runner.py), so the claims, the waiting and the takeover are the runner's
own while no model loads. The same tests run on SQLite and on a private PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from harness.results import CellResult
from harness.store import Store
from harness.store.claims import ClaimLost, ClaimRef

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "claims_runner.py"
SUITE = """\
name: split
models: [model-a, model-b, model-c, model-d, model-e, model-f]
devices: [cpu]
workload:
  generate: {prompt_tokens: [8, 16, 32], new_tokens: 3}
techniques: [baseline]
policy: {warmup: 0, repeats: 1}
"""
CELLS = 18


def start(db: str, suite: Path, name: str, gate: Path, *, lease_s: float, cell_s: float) -> Any:
    return subprocess.Popen(
        [sys.executable, str(RUNNER), db, str(suite), name, str(lease_s), str(cell_s), str(gate)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def cell_counts(db: str) -> dict[str, int]:
    """Stored cells per key, over every run of the database."""
    engine = create_engine(db)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT key, count(*) FROM cells GROUP BY key"))
            return {key: int(n) for key, n in rows}
    finally:
        engine.dispose()


def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "split.yaml"
    path.write_text(SUITE)
    return path


def three_runners_split_the_suite(db: str, tmp_path: Path) -> None:
    suite, gate = suite_file(tmp_path), tmp_path / "go"
    names = ("r1", "r2", "r3")
    procs = [start(db, suite, n, gate, lease_s=30, cell_s=0.2) for n in names]
    wait_for(lambda: all(Path(f"{gate}.{n}.ready").exists() for n in names), "runners ready")
    gate.touch()
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
    measured = [out.count("measured ") for out, _ in outputs]
    counts = cell_counts(db)
    assert len(counts) == CELLS and set(counts.values()) == {1}  # 0 lost, 0 duplicated
    assert sum(measured) == CELLS
    assert sum(n > 0 for n in measured) >= 2, measured  # the work was split
    for out, _ in outputs:  # each runner saw the rest measured by the others
        mine = out.count("measured ")
        assert f"summary measured={mine} others={CELLS - mine}" in out
    with Store.open(db, read_only=True) as store:
        frame = store.cells_frame()
        assert len(frame) == CELLS and set(frame["status"]) == {"ok"}
        runs = store.runs_frame()
        assert set(runs["machine"]) <= set(names) and runs["ended_at"].notna().all()


def killed_runner_is_taken_over(db: str, tmp_path: Path) -> None:
    """A runner SIGKILLed mid-group: another finds its claims held, waits, takes them over."""
    suite, gate, later = suite_file(tmp_path), tmp_path / "go", tmp_path / "later"
    gate.touch()
    victim = start(db, suite, "victim", gate, lease_s=5, cell_s=1.5)
    heir = start(db, suite, "heir", later, lease_s=5, cell_s=0.05)  # waits for `later`
    assert victim.stdout is not None
    wait_for(lambda: Path(f"{later}.heir.ready").exists(), "the heir to be ready")
    wait_for(lambda: "measured" in victim.stdout.readline(), "the victim's first cell")
    victim.send_signal(signal.SIGKILL)  # mid-group: its next cells are claimed
    victim.communicate()
    later.touch()  # the heir starts while the victim's lease still runs
    engine = create_engine(db)
    with engine.connect() as connection:
        held = connection.execute(
            text("SELECT count(*) FROM claims WHERE finished_at IS NULL")
        ).scalar_one()
    engine.dispose()
    assert held >= 1
    before = cell_counts(db)
    assert 1 <= len(before) < CELLS
    out, err = heir.communicate(timeout=300)
    assert heir.returncode == 0, out + err
    assert "waiting for" in err  # it found the victim's claims unexpired, and waited
    counts = cell_counts(db)
    assert len(counts) == CELLS and set(counts.values()) == {1}
    assert f"summary measured={CELLS - len(before)} others=0" in out


def test_three_runners_split_the_suite_sqlite(db_url: str, tmp_path: Path) -> None:
    three_runners_split_the_suite(db_url, tmp_path)


def test_three_runners_split_the_suite_postgresql(pg_url: str, tmp_path: Path) -> None:
    three_runners_split_the_suite(pg_url, tmp_path)


def test_killed_runner_is_taken_over_sqlite(db_url: str, tmp_path: Path) -> None:
    killed_runner_is_taken_over(db_url, tmp_path)


def test_killed_runner_is_taken_over_postgresql(pg_url: str, tmp_path: Path) -> None:
    killed_runner_is_taken_over(pg_url, tmp_path)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_claim_states(backend: str, db_url: str, request: pytest.FixtureRequest) -> None:
    """taken / held / done, expiry, a takeover, and the loser's result refused."""
    url = db_url if backend == "sqlite" else request.getfixturevalue("pg_url")
    with Store.open(url) as store:
        since = store.clock()
        a, b = ClaimRef("hw", "k1", "A"), ClaimRef("hw", "k1", "B")
        assert store.claim([a], since=since, lease_s=0.5) == {"k1": "taken"}
        assert store.claim([b], since=since, lease_s=0.5) == {"k1": "held"}
        assert store.renew_claims("A", 0.5) == 1
        wait_for(lambda: store.clock() > since + 1.0, "the lease to run out", 10)
        assert store.claim([b], since=since, lease_s=30) == {"k1": "taken"}  # A expired
        machine = store.ensure_machine("m", MACHINE)
        run = store.start_run(
            suite_name="s",
            suite_path="s.yaml",
            suite_hash="0" * 64,
            machine_id=machine,
            harness_version="0",
            git_commit=None,
            environment={},
        )
        with pytest.raises(ClaimLost, match="took this cell over"):
            store.record(run, result("k1"), claim=a)  # A's lease ran out: refused
        assert cell_counts(url) == {}
        store.record(run, result("k1"), claim=b)
        assert cell_counts(url) == {"k1": 1}
        c = ClaimRef("hw", "k1", "C")
        assert store.claim([c], since=since, lease_s=30) == {"k1": "done"}  # this session
        later = store.clock()
        assert store.claim([c], since=later, lease_s=30) == {"k1": "taken"}  # a new one
        d, e = ClaimRef("hw", "k2", "D"), ClaimRef("hw", "k2", "E")
        assert store.claim([d], since=since, lease_s=30) == {"k2": "taken"}
        assert store.release_claims("D") == 1  # a runner that stops gives its cells back
        assert store.claim([e], since=since, lease_s=30) == {"k2": "taken"}
        assert store.claim([ClaimRef("other-hw", "k2", "D")], since=since, lease_s=30) == {
            "k2": "taken"
        }  # claims are per hardware


MACHINE = {"hostname": "h", "cpu": "c", "cpu_count": 1, "ram_bytes": 1}


def result(key: str) -> CellResult:
    workload = {"name": "generate", "params": {}}
    return CellResult(key, "m", "cpu", "baseline", (), workload, "ok", None, 0.0, 0.1)
