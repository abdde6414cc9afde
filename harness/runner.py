"""Schedules cells onto worker processes; resume, statuses, progress.

The runner never imports a model. It skips cells that already have an ``ok`` or
``skipped`` result on this machine (resume), hands the rest to one worker process per
(model, device), and writes each result in one transaction. A cell that times out or kills
its worker is recorded as such and the worker is restarted: a failed cell never stops the
suite. Each ``ok`` cell also gets what ``harness.derive.relative_values`` compares against the
cell of the suite's reference stack with the same model, device and workload measured in
the same run (reference cells run first in their group): ratios, per-sample flips and
agreement, and the verdict of the suite's quality gates.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from harness import derive
from harness.cell import cell_result
from harness.environment import fingerprint, git_commit, library_versions, machine_info
from harness.registry import Registry
from harness.results import CellResult
from harness.store import Store
from harness.suite import Cell, Suite

_START_TIMEOUT_S = 600  # first start may provision the built-in model


@dataclass
class RunSummary:
    run_id: int | None
    total: int
    already_done: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.counts.items() if s not in ("ok", "skipped"))


class WorkerHandle:
    """A worker process for one device, started lazily and restarted after a crash."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.proc: Any = None
        self.conn: Any = None

    def _start(self) -> None:
        from harness.worker import serve

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, self.device), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        if not parent.poll(_START_TIMEOUT_S):
            self.kill()
            raise RuntimeError("worker did not start within 10 minutes")
        kind, detail = parent.recv()
        if kind != "ready":
            self.kill()
            raise RuntimeError(f"worker failed to start: {detail}")

    def run(self, cell: Cell) -> CellResult:
        started = time.time()
        try:
            if self.proc is None or not self.proc.is_alive():
                self._start()
            self.conn.send(cell)
            if self.conn.poll(cell.policy.timeout_s):
                _, result = self.conn.recv()
                return result
            self.kill()
            reason = f"cell ran longer than {cell.policy.timeout_s:g} s"
            return cell_result(cell, "timeout", reason, started)
        except (EOFError, BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
            code = None
            if self.proc is not None:
                self.proc.join(5)  # the pipe closes before the exit status can be read
                code = self.proc.exitcode
            self.kill()
            if code == -signal.SIGKILL:
                reason = "worker killed by SIGKILL (most likely the kernel's out-of-memory killer)"
                return cell_result(cell, "oom_host", reason, started)
            detail = f"worker exited with code {code}" if code is not None else repr(exc)
            return cell_result(cell, "crashed", detail, started)

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.proc = None
        self.conn = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(10)
            except (BrokenPipeError, OSError):
                pass
        self.kill()


def order_cells(cells: Iterable[Cell], registry: Registry) -> list[Cell]:
    """Group by (model, device); reference cells first, then weight-mutating stacks last.

    Reference cells go first so that every other cell's ratios can be derived as it is
    recorded. The pristine model is loaded once per group and reused by every stack that
    leaves the weights alone; each mutating stack gets a fresh copy.
    """

    def order(cell: Cell) -> tuple[bool, bool]:
        mutates = any(registry.techniques[s.name].mutates_weights for s in cell.stack)
        return not cell.reference, mutates

    cells = list(cells)
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model.model_dump_json(), cell.device), []).append(cell)
    return [c for group in groups.values() for c in sorted(group, key=order)]


def comparable(cell: Cell) -> tuple[str, str, str]:
    """What a cell and its reference share: model, device and workload."""
    workload = json.dumps(cell.workload.as_dict(), sort_keys=True)
    return cell.model.model_dump_json(), cell.device, workload


def run_suite(
    suite: Suite,
    store: Store,
    registry: Registry,
    *,
    rerun: bool = False,
    on_result: Callable[[CellResult, int, int], None] | None = None,
) -> RunSummary:
    """Measure every cell of ``suite`` that has no ``ok``/``skipped`` result on this machine.

    ``on_result(result, done, total)`` is called after each result is committed.
    """
    info = machine_info()
    machine_id = store.ensure_machine(fingerprint(info), info)
    keys = [c.key for c in suite.cells]
    done = set() if rerun else store.done_keys(machine_id, keys)
    todo = order_cells((c for c in suite.cells if c.key not in done), registry)
    summary = RunSummary(None, len(keys), len(done))
    if not todo:
        return summary

    store.save_metric_defs(registry.metrics.values())
    run_id = store.start_run(
        suite_name=suite.name,
        suite_path=str(suite.path),
        suite_hash=suite.text_hash,
        machine_id=machine_id,
        harness_version=library_versions().get("bench", "unknown"),
        git_commit=git_commit(),
        environment={**library_versions(), **registry.environment_info()},
    )
    summary.run_id = run_id
    references: dict[tuple[str, str, str], CellResult] = {}  # measured in this run
    workers: dict[str, WorkerHandle] = {}
    try:
        for i, cell in enumerate(todo, start=1):
            handle = workers.setdefault(cell.device, WorkerHandle(cell.device))
            result = handle.run(cell)
            if cell.reference:
                references[comparable(cell)] = result
            ratios = derive.relative_values(
                result,
                references.get(comparable(cell)),
                defs=registry.metrics,
                gated=cell.gates,
            )
            result = replace(result, values=(*result.values, *ratios))
            store.record(run_id, result)
            if result.status == "ok" and result.reason:
                print(f"warning: {cell.label}: {result.reason}", file=sys.stderr)
            summary.counts[result.status] = summary.counts.get(result.status, 0) + 1
            if on_result:
                on_result(result, len(done) + i, len(keys))
        store.finish_run(run_id)
    finally:
        for handle in workers.values():
            handle.stop()
    return summary
