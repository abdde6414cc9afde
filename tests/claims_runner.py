"""One runner of the claims tests: the real ``run_suite`` with an executor that fakes cells.

Run as ``python tests/claims_runner.py DB SUITE NAME LEASE_S CELL_S GATE``: loads the
suite, writes ``GATE.NAME.ready``, waits for the file ``GATE`` (so that concurrent runners
start together), then measures with seats that sleep ``CELL_S`` per cell and report the
cell's key length as ``memory.weights_bytes``. Every runner claims the same hardware
(the same machine facts under its own hostname), so they split the suite.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from harness.cell import cell_result
from harness.cli.app import load_registry
from harness.results import CellResult, Value
from harness.runner import run_suite
from harness.store import Store
from harness.suite import Cell, load_suite

HARDWARE = {"cpu": "test cpu", "cpu_count": 2, "ram_bytes": 1 << 30}


class FakeSeat:
    def __init__(self, hostname: str, cell_s: float) -> None:
        self.hostname = hostname
        self.cell_s = cell_s

    def machine(self) -> dict[str, Any]:
        return {"hostname": self.hostname, **HARDWARE}

    def run(self, cell: Cell) -> CellResult:
        started = time.time()
        time.sleep(self.cell_s)
        values = (Value("memory.weights_bytes", float(len(cell.key)), "bytes"),)
        return cell_result(cell, "ok", None, started, values)


class FakeExecutor:
    name = "fake"
    concurrency = 1

    def __init__(self, hostname: str, cell_s: float) -> None:
        self.seats = FakeSeat(hostname, cell_s)

    def devices(self) -> list[str]:
        return ["cpu"]

    def seat(self, device: str) -> FakeSeat:
        return self.seats

    def release(self, seat: Any) -> None:
        pass

    def close(self) -> None:
        pass


def main(db: str, suite_path: str, name: str, lease_s: str, cell_s: str, gate: str) -> None:
    registry = load_registry()
    suite = load_suite(suite_path, registry, devices=["cpu"])
    Path(f"{gate}.{name}.ready").touch()
    while not Path(gate).exists():
        time.sleep(0.05)
    with Store.open(db) as store:
        summary = run_suite(
            suite,
            store,
            registry,
            executor=FakeExecutor(name, float(cell_s)),
            lease_s=float(lease_s),
            on_result=lambda result, done, total: print(f"measured {result.key}", flush=True),
        )
    print(f"summary measured={sum(summary.counts.values())} others={summary.by_others}")


if __name__ == "__main__":
    main(*sys.argv[1:])
