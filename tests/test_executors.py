"""The runner over the executor interface, in-process with fake seats (no model loads)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from claims_runner import FakeExecutor, FakeSeat
from sqlalchemy import text

from harness.cli.app import load_registry
from harness.errors import ExecutorError
from harness.executors import make_executor
from harness.results import CellResult, Value
from harness.runner import run_suite
from harness.store import Store
from harness.suite import Cell, load_suite

SUITE = """\
name: threads
models: [model-a, model-b, model-c]
devices: [cpu]
workload:
  generate: {prompt_tokens: [8, 16], new_tokens: 3}
techniques: [baseline, {precision: {dtype: bf16}}]
policy: {warmup: 0, repeats: 1}
"""


class TimedSeat(FakeSeat):
    """TPOT 10 ms for the reference stack, 20 ms for the others."""

    def run(self, cell: Cell) -> CellResult:
        result = super().run(cell)
        tpot = Value("latency.tpot_s", 0.01 if cell.reference else 0.02, "s")
        return replace(result, values=(*result.values, tpot))


class ThreadedExecutor(FakeExecutor):
    """Every group at once, each on a seat of its own (as the Ray executor does)."""

    concurrency = 8

    def __init__(self) -> None:
        super().__init__("threaded", 0.01)
        self.released: list[Any] = []

    def seat(self, device: str) -> FakeSeat:
        return TimedSeat("threaded", 0.01)

    def release(self, seat: Any) -> None:
        self.released.append(seat)


class BrokenSeat(FakeSeat):
    def machine(self) -> dict[str, Any]:
        raise ExecutorError("no node can host this group")


class BrokenExecutor(ThreadedExecutor):
    def seat(self, device: str) -> FakeSeat:
        return BrokenSeat("broken", 0.0)


@pytest.fixture
def suite(tmp_path: Path) -> Any:
    path = tmp_path / "threads.yaml"
    path.write_text(SUITE)
    return load_suite(path, load_registry(), devices=["cpu"])


def test_groups_in_threads_record_every_cell_once(suite: Any, db_url: str) -> None:
    registry = load_registry()
    seen: list[tuple[str, int, int]] = []

    def progress(result: CellResult, done: int, total: int) -> None:
        seen.append((result.key, done, total))

    executor = ThreadedExecutor()
    with Store.open(db_url) as store:
        summary = run_suite(suite, store, registry, executor=executor, on_result=progress)
        frame = store.cells_frame()
    assert summary.counts == {"ok": 12} and summary.failed == 0
    assert sorted(k for k, _, _ in seen) == sorted(c.key for c in suite.cells)
    assert [d for _, d, _ in seen] == list(range(1, 13)) and {t for _, _, t in seen} == {12}
    assert len(frame) == 12 and frame["cell_key"].is_unique
    assert len(executor.released) == 3  # one seat per (model, device) group
    # Ratios against the reference of the same group and workload, as locally.
    speedups = frame.groupby("technique")["latency.speedup"].agg(set).to_dict()
    assert speedups == {"baseline": {1.0}, "precision(dtype=bf16)": {0.5}}
    with Store.open(db_url) as store:  # resume: nothing left
        again = run_suite(suite, store, registry, executor=ThreadedExecutor())
    assert again.run_id is None and again.already_done == 12


def test_a_seat_that_cannot_start_stops_the_run_and_frees_its_claims(
    suite: Any, db_url: str
) -> None:
    with Store.open(db_url) as store:
        with pytest.raises(ExecutorError, match="no node can host"):
            run_suite(suite, store, load_registry(), executor=BrokenExecutor())
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM claims")).scalar_one() == 0


def test_make_executor_names_what_is_allowed() -> None:
    with pytest.raises(ExecutorError, match=r"unknown executor 'slurm'\. Allowed: local, ray"):
        make_executor("slurm")
    with pytest.raises(ExecutorError, match="--address is for --executor ray"):
        make_executor("local", address="auto")
    local = make_executor("local")
    assert local.name == "local" and local.devices() is None
    local.close()
