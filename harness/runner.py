"""Schedules cells onto an executor's seats; resume, claims, statuses, progress.

The runner never imports a model. It skips cells that already have an ``ok`` or
``skipped`` result on the measuring hardware (resume), claims each group's remaining cells
in the database (``harness.store.claims``) so that concurrent runners of the same suite
split them, hands the claimed cells to a seat of the executor (``harness.executors``: a
worker process per device, or a Ray actor per group), and writes each result in one
transaction with its claim. A cell that times out or kills its seat is recorded as such
and the seat is replaced: a failed cell never stops the suite. Each ``ok`` cell also gets
the ratios of ``harness.derive.relative_values`` against the cell of the suite's reference
stack with the same model, device and workload measured in the same run (reference cells
run first in their group): ratios, per-sample flips and agreement, and the verdict of the
suite's quality gates. After the cells come the suite's out-of-memory boundary
searches (``harness.boundary``), whose probe cells run on the executor's seats too.

A group's cells are claimed together when the runner reaches the group, so one runner
measures a whole group (one model load, the reference with the others). Cells another
runner holds are left to it; once this runner has nothing else to do it waits for them,
and takes over those whose holder stopped renewing its lease (a runner that died).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from harness import boundary, derive
from harness.environment import fingerprint, git_commit, library_versions
from harness.estimate.cellstep import PREFLIGHT_PREFIX
from harness.executors import Executor, Seat
from harness.registry import Registry
from harness.results import CellResult
from harness.store import Store
from harness.store.claims import DEFAULT_LEASE_S, ClaimLost, ClaimRef
from harness.store.store import hardware_key
from harness.suite import Cell, Suite


@dataclass
class RunSummary:
    """What one ``run_suite`` did.

    Attributes:
        run_id: The (first) run this runner recorded into; None when it measured nothing.
        total: Cells in the suite.
        already_done: Cells with a result on this hardware before the run (resume).
        counts: This runner's results by status.
        by_others: Cells that concurrent runners measured while this one ran.
        run_ids: Every run recorded into (one per measuring machine).
    """

    run_id: int | None
    total: int
    already_done: int
    counts: dict[str, int] = field(default_factory=dict)
    by_others: int = 0
    run_ids: list[int] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.counts.items() if s not in ("ok", "skipped"))


def order_cells(cells: Iterable[Cell], registry: Registry) -> list[Cell]:
    """Group by (model, device); reference cells first, then weight-mutating stacks last.

    Reference cells go first so that every other cell's ratios can be derived as it is
    recorded. The pristine model is loaded once per group and reused by every stack that
    leaves the weights alone; each mutating stack gets a fresh copy.
    """
    return [c for group in group_cells(cells, registry) for c in group]


def group_cells(cells: Iterable[Cell], registry: Registry) -> list[list[Cell]]:
    """The groups of :func:`order_cells`: one list per (model, device), in suite order."""

    def order(cell: Cell) -> tuple[bool, bool]:
        mutates = any(registry.techniques[s.name].mutates_weights for s in cell.stack)
        return not cell.reference, mutates

    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model.model_dump_json(), cell.device), []).append(cell)
    return [sorted(group, key=order) for group in groups.values()]


def comparable(cell: Cell) -> tuple[str, str, str]:
    """What a cell and its reference share: model, device and workload."""
    workload = json.dumps(cell.workload.as_dict(), sort_keys=True)
    return cell.model.model_dump_json(), cell.device, workload


@dataclass
class _Lane:
    """One measuring machine of this run: its id, claim scope, resume set and run."""

    machine_id: int
    scope: str
    done: set[str]
    run_id: int | None = None


@dataclass(frozen=True)
class _Measured:
    cell: Cell
    result: CellResult
    lane: _Lane
    claim: ClaimRef


@dataclass(frozen=True)
class _Skipped:
    """Cells this runner will not measure: ``resumed`` (done before) or by another runner."""

    cells: int
    resumed: bool


_Event = _Measured | _Skipped


class _Claimer:
    """The claim side of one ``run_suite``: lanes, claims, heartbeat, waiting."""

    def __init__(
        self,
        store: Store,
        keys: list[str],
        *,
        rerun: bool,
        lease_s: float,
        retry_preflight: bool = False,
    ) -> None:
        self.store = store
        self.keys = keys
        self.rerun = rerun
        self.retry_preflight = retry_preflight  # bench run --no-preflight
        self.lease_s = lease_s
        self.poll_s = max(0.2, min(5.0, lease_s / 4))
        self.holder = uuid.uuid4().hex
        self.since = store.clock()
        self.stopping = threading.Event()
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._heart = threading.Thread(target=self._beat, name="bench-heartbeat", daemon=True)
        self._heart.start()

    def lane(self, info: dict[str, Any]) -> _Lane:
        """The lane of the machine described by ``info`` (``machine_info``)."""
        with self._lock:
            print_ = fingerprint(info)
            if print_ not in self._lanes:
                machine_id = self.store.ensure_machine(print_, info)
                done = set() if self.rerun else self.store.done_keys(machine_id, self.keys)
                if done and self.retry_preflight:  # cells pre-flight skipped run now
                    done -= self.store.skipped_keys(machine_id, self.keys, PREFLIGHT_PREFIX)
                self._lanes[print_] = _Lane(machine_id, hardware_key(info), done)
            return self._lanes[print_]

    def _beat(self) -> None:
        while not self.stopping.wait(self.lease_s / 3):
            try:
                self.store.renew_claims(self.holder, self.lease_s)
            except Exception as exc:  # a lost heartbeat only risks a takeover; say so
                print(f"warning: claim heartbeat failed: {exc}", file=sys.stderr)

    def close(self) -> None:
        self.stopping.set()
        self._heart.join(5)
        self.store.release_claims(self.holder)

    def measure(self, cells: list[Cell], seat: Seat, lane: _Lane) -> Iterator[_Event]:
        """Claim ``cells`` (one group) together; measure those taken, in order.

        Yields the measured results and the cells skipped; leaves the cells other runners
        hold in ``cells`` for :meth:`wait`.
        """
        resumed = [c for c in cells if c.key in lane.done]
        if resumed:
            yield _Skipped(len(resumed), resumed=True)
        wanted = [c for c in cells if c.key not in lane.done]
        refs = [self._ref(lane, cell) for cell in wanted]
        states = self.store.claim(refs, since=self.since, lease_s=self.lease_s) if refs else {}
        others = sum(states[c.key] == "done" for c in wanted)
        if others:
            yield _Skipped(others, resumed=False)
        cells[:] = [c for c in wanted if states[c.key] == "held"]
        for cell in wanted:
            if states[cell.key] != "taken":
                continue
            if self.stopping.is_set():
                return
            yield _Measured(cell, seat.run(cell), lane, self._ref(lane, cell))

    def take(self, lane: _Lane, key: str) -> ClaimRef | None:
        """Claim one key on its own; None when another runner holds or finished it."""
        ref = ClaimRef(lane.scope, key, self.holder)
        state = self.store.claim([ref], since=self.since, lease_s=self.lease_s)[key]
        return ref if state == "taken" else None

    def _ref(self, lane: _Lane, cell: Cell) -> ClaimRef:
        return ClaimRef(lane.scope, cell.key, self.holder)


def _group_events(
    claimer: _Claimer, executor: Executor, group: list[Cell], *, wait: bool
) -> Iterator[_Event]:
    """Measure a group on a seat of its own; with ``wait``, then wait for held cells."""
    seat = executor.seat(group[0].device)
    try:
        lane = claimer.lane(seat.machine())
        yield from claimer.measure(group, seat, lane)
    finally:
        executor.release(seat)
    if wait:
        yield from _wait_events(claimer, executor, [(group, lane)])


def _wait_events(
    claimer: _Claimer, executor: Executor, pending: list[tuple[list[Cell], _Lane]]
) -> Iterator[_Event]:
    """Wait for cells other runners hold: drop them when done, take over expired ones."""
    pending = [(cells, lane) for cells, lane in pending if cells]
    if pending:
        held = sum(len(cells) for cells, _ in pending)
        print(f"waiting for {held} cell(s) that other runners are measuring", file=sys.stderr)
    while pending and not claimer.stopping.is_set():
        time.sleep(claimer.poll_s)
        for cells, lane in pending:
            seat = executor.seat(cells[0].device)
            try:
                yield from claimer.measure(cells, seat, lane)
            finally:
                executor.release(seat)
        pending = [(cells, lane) for cells, lane in pending if cells]


def _events(claimer: _Claimer, executor: Executor, groups: list[list[Cell]]) -> Iterator[_Event]:
    """Every group's events: one group after the other, or each in a thread of its own."""
    if executor.concurrency <= 1:
        lanes: list[tuple[list[Cell], _Lane]] = []
        for group in groups:
            seat = executor.seat(group[0].device)
            lane = claimer.lane(seat.machine())
            try:
                yield from claimer.measure(group, seat, lane)
            finally:
                executor.release(seat)
            lanes.append((group, lane))
        yield from _wait_events(claimer, executor, lanes)
        return
    events: queue.Queue[_Event | BaseException | None] = queue.Queue()

    def drive(group: list[Cell]) -> None:
        try:
            for event in _group_events(claimer, executor, group, wait=True):
                events.put(event)
        except BaseException as exc:
            events.put(exc)
        finally:
            events.put(None)

    threads = [
        threading.Thread(target=drive, args=(group,), name="bench-group", daemon=True)
        for group in groups
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    while running:
        item = events.get()
        if item is None:
            running -= 1
        elif isinstance(item, BaseException):
            raise item
        else:
            yield item


def run_suite(
    suite: Suite,
    store: Store,
    registry: Registry,
    *,
    rerun: bool = False,
    on_result: Callable[[CellResult, int, int], None] | None = None,
    executor: Executor | None = None,
    lease_s: float = DEFAULT_LEASE_S,
) -> RunSummary:
    """Measure every cell of ``suite`` that has no ``ok``/``skipped`` result on its hardware.

    Args:
        suite: The loaded suite.
        store: The results database; concurrent runners of the suite may share it.
        registry: The installed plugins.
        rerun: Measure cells again even if they have results (concurrent ``--rerun``
            runners still split the cells between them).
        on_result: Called as ``on_result(result, done, total)`` after each result of
            this runner is committed; ``done`` counts cells finished by anyone.
        executor: Where cells are measured; default: worker processes on this machine.
        lease_s: How long this runner's claims last without a heartbeat, s.
    """
    if executor is None:
        from harness.executors.local import LocalExecutor

        executor = LocalExecutor()
    keys = [c.key for c in suite.cells]
    summary = RunSummary(None, len(keys), 0)
    retry = not all(c.policy.preflight for c in suite.cells)
    claimer = _Claimer(store, keys, rerun=rerun, lease_s=lease_s, retry_preflight=retry)
    references: dict[tuple[str, str, str], CellResult] = {}  # measured in this run
    finished = 0
    try:
        groups = group_cells(suite.cells, registry)
        for event in _events(claimer, executor, groups):
            if isinstance(event, _Skipped):
                finished += event.cells
                if event.resumed:
                    summary.already_done += event.cells
                else:
                    summary.by_others += event.cells
                continue
            result = _record(store, registry, suite, event, references, summary)
            if result is None:
                summary.by_others += 1
                finished += 1
                continue
            finished += 1
            summary.counts[result.status] = summary.counts.get(result.status, 0) + 1
            if on_result:
                on_result(result, finished, len(keys))
        _run_searches(store, registry, suite, executor, claimer, summary, on_result)
        for run_id in summary.run_ids:
            store.finish_run(run_id)
    finally:
        claimer.close()
        executor.close()
    return summary


def _record(
    store: Store,
    registry: Registry,
    suite: Suite,
    event: _Measured,
    references: dict[tuple[str, str, str], CellResult],
    summary: RunSummary,
) -> CellResult | None:
    """Derive what compares one result with its reference and record it with its claim;
    None if the claim was lost."""
    cell, result, lane = event.cell, event.result, event.lane
    run_id = _lane_run(store, registry, suite, lane, summary)
    if cell.reference:
        references[comparable(cell)] = result
    ratios = derive.relative_values(
        result, references.get(comparable(cell)), defs=registry.metrics, gated=cell.gates
    )
    result = replace(result, values=(*result.values, *ratios))
    try:
        store.record(run_id, result, claim=event.claim)
    except ClaimLost as exc:
        print(f"warning: {cell.label}: {exc}", file=sys.stderr)
        return None
    if result.status == "ok" and result.reason:
        print(f"warning: {cell.label}: {result.reason}", file=sys.stderr)
    return result


def _lane_run(
    store: Store, registry: Registry, suite: Suite, lane: _Lane, summary: RunSummary
) -> int:
    """The run that ``lane``'s results go into, started with its first result."""
    if lane.run_id is None:
        if not summary.run_ids:
            store.save_metric_defs(registry.metrics.values())
        lane.run_id = store.start_run(
            suite_name=suite.name,
            suite_path=str(suite.path),
            suite_hash=suite.text_hash,
            machine_id=lane.machine_id,
            harness_version=library_versions().get("bench", "unknown"),
            git_commit=git_commit(),
            environment={
                **library_versions(),
                **registry.installed_versions(),
                **registry.environment_info(),
            },
        )
        summary.run_ids.append(lane.run_id)
        summary.run_id = summary.run_id or lane.run_id
    return lane.run_id


def _run_searches(
    store: Store,
    registry: Registry,
    suite: Suite,
    executor: Executor,
    claimer: _Claimer,
    summary: RunSummary,
    on_result: Callable[[CellResult, int, int], None] | None,
) -> None:
    """The suite's out-of-memory boundary searches (``harness.boundary``), one after the
    other; every probe is a real cell run on a seat and recorded, then the outcome.

    A search is claimed like a cell (its outcome's key): one that another runner of this
    session holds or finished is left to it.
    """
    total = summary.total

    def recorded(run_id: int, result: CellResult, claim: ClaimRef | None = None) -> CellResult:
        store.record(run_id, result, claim=claim)
        if on_result:
            on_result(result, total, total)
        return result

    def prober(run_id: int, seat: Seat) -> Callable[[Cell], CellResult]:
        return lambda cell: recorded(run_id, seat.run(cell))

    for job in boundary.jobs(suite):
        seat = executor.seat(job.base.device)
        try:
            lane = claimer.lane(seat.machine())
            if not claimer.rerun and store.done_keys(lane.machine_id, [job.key]):
                continue
            claim = claimer.take(lane, job.key)
            if claim is None:
                summary.by_others += 1
                continue
            run_id = _lane_run(store, registry, suite, lane, summary)
            result = boundary.search(job, registry, prober(run_id, seat))
            try:
                recorded(run_id, result, claim)
            except ClaimLost as exc:
                print(f"warning: {job.base.label} ({job.axis}): {exc}", file=sys.stderr)
                continue
            summary.counts[result.status] = summary.counts.get(result.status, 0) + 1
        finally:
            executor.release(seat)
