"""Schedules cells onto worker processes; resume, statuses, progress.

The runner never imports a model. It skips cells that already have an ``ok`` or
``skipped`` result on this machine (resume), hands the rest to one worker process per
(model, device), and writes each result in one transaction. A cell that times out or kills
its worker is recorded as such and the worker is restarted: a failed cell never stops the
suite. Each ``ok`` cell with a TPOT also gets ``latency.speedup`` against the suite's
baseline cell of the same model, device and workload, which runs first.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from harness.environment import fingerprint, git_commit, library_versions, machine_info
from harness.registry import Registry
from harness.results import CellResult, Status, Value
from harness.store import Store
from harness.suite import Cell, Suite

_START_TIMEOUT_S = 600  # first start may provision the built-in model
BASELINE = "baseline"


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
                return result  # type: ignore[no-any-return]
            self.kill()
            return _failed(
                cell, "timeout", f"cell ran longer than {cell.policy.timeout_s:g} s", started
            )
        except (EOFError, BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
            code = None
            if self.proc is not None:
                self.proc.join(5)  # the pipe closes before the exit status can be read
                code = self.proc.exitcode
            self.kill()
            if code == -signal.SIGKILL:
                return _failed(
                    cell,
                    "oom_host",
                    "worker killed by SIGKILL (most likely the kernel's out-of-memory killer)",
                    started,
                )
            detail = f"worker exited with code {code}" if code is not None else repr(exc)
            return _failed(cell, "crashed", detail, started)

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


def _failed(cell: Cell, status: Status, reason: str, started: float) -> CellResult:
    return CellResult(
        key=cell.key,
        model=cell.model.id,
        device=cell.device,
        technique=cell.label,
        stack=tuple(s.as_dict() for s in cell.stack),
        workload=cell.workload.as_dict(),
        status=status,
        reason=reason,
        started_at=started,
        duration_s=time.time() - started,
    )


def order_cells(cells: Iterable[Cell], registry: Registry) -> list[Cell]:
    """Group by (model, device); baseline cells first, weight-mutating stacks last.

    The pristine model is loaded once per group and reused by every stack that leaves the
    weights alone; each mutating stack gets a fresh copy. Baselines go first so that every
    other cell's speedup can be computed as it is recorded.
    """

    def order(cell: Cell) -> tuple[bool, bool]:
        mutates = any(registry.techniques[s.name].mutates_weights for s in cell.stack)
        return mutates, not _is_baseline(cell)

    cells = list(cells)
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model.model_dump_json(), cell.device), []).append(cell)
    return [c for group in groups.values() for c in sorted(group, key=order)]


def _is_baseline(cell: Cell) -> bool:
    return [s.name for s in cell.stack] == [BASELINE]


def _comparable(cell: Cell) -> tuple[str, str, str]:
    workload = json.dumps(cell.workload.as_dict(), sort_keys=True)
    return cell.model.model_dump_json(), cell.device, workload


def _baseline_tpot(
    store: Store, machine_id: int, baseline: str | None, result: CellResult
) -> float | None:
    """TPOT of the baseline cell ``baseline``: this result's own, or stored on this machine."""
    if baseline is None:
        return None
    if baseline == result.key:
        return result.metric("latency.tpot_s")
    return store.metric_value(machine_id, baseline, "latency.tpot_s")


def with_speedup(result: CellResult, baseline_tpot: float | None) -> CellResult:
    """Adds ``latency.speedup`` = baseline TPOT / TPOT to an ``ok`` cell that has a TPOT."""
    tpot = result.metric("latency.tpot_s")
    if result.status != "ok" or not tpot:
        return result
    if baseline_tpot is None:
        value = Value(
            "latency.speedup",
            None,
            "ratio",
            reason="no ok baseline cell of this model, device and workload in the suite",
        )
    else:
        value = Value("latency.speedup", baseline_tpot / tpot, "ratio", source="baseline TPOT")
    return replace(result, values=(*result.values, value))


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
    baselines = {_comparable(c): c.key for c in suite.cells if _is_baseline(c)}
    workers: dict[str, WorkerHandle] = {}
    try:
        for i, cell in enumerate(todo, start=1):
            handle = workers.setdefault(cell.device, WorkerHandle(cell.device))
            result = handle.run(cell)
            baseline = baselines.get(_comparable(cell))
            result = with_speedup(result, _baseline_tpot(store, machine_id, baseline, result))
            store.record(run_id, result)
            summary.counts[result.status] = summary.counts.get(result.status, 0) + 1
            if on_result:
                on_result(result, len(done) + i, len(keys))
        store.finish_run(run_id)
    finally:
        for handle in workers.values():
            handle.stop()
    return summary
