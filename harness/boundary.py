"""Out-of-memory boundary search: the largest prompt (or batch) that fits, for each stack.

A suite's ``search:`` key (``harness.suitefile.Search``) asks, for every stack of the
suite, for the largest ``prompt_tokens`` (``max_prompt_tokens``) and, separately, the
largest ``batch_size`` (``max_batch_size``) that fits, the other workload parameters as in
the suite's cells. Each search is

1. seeded by the estimate: the largest value whose predicted peak fits the memory the
   cell may use (the policy's ``memory_limit_gib``, else the device's), found by bisection
   over ``harness.estimate`` in microseconds per step;
2. confirmed by real runs: a *probe* cell (the workload at that value, one repeat, no
   warm-up, no accuracy tasks, no pre-flight) runs in the worker and is recorded with its
   status, so every OOM is a stored, survived result (``oom`` / ``oom_host``; a worker
   killed by the kernel is restarted by the runner);
3. widened from the seed until a fitting and a failing value bracket the boundary
   (the factor from the last value growing: ×1.25, ×1.5, ×2, ×3, ...), then bisected
   until they are within ``tolerance`` of each other or ``max_probes`` runs were made
   (:func:`bisect`).

The outcome is a cell of its own (workload ``boundary``) holding
``boundary.max_prompt_tokens`` / ``boundary.max_batch_size`` (the largest value that ran,
its samples the probed values in order), the estimate's seed
(``boundary.predicted_max_*``) and ``boundary.probes``. A probe that fails for another
reason (an error, a timeout, a skip) ends the search: the outcome is ``error`` with that
reason. The runner calls :func:`pending` and :func:`search` after the suite's cells.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.matrix import Cell, TaskSpec, cell_key
from harness.results import CellResult, MetricDef, Status, Value

if TYPE_CHECKING:
    from harness.registry import Registry
    from harness.suite import Suite
    from harness.suitefile import SearchAxis

#: suite key -> the workload parameter it searches.
AXES: dict[str, str] = {"max_prompt_tokens": "prompt_tokens", "max_batch_size": "batch_size"}
UNITS = {"prompt_tokens": "tokens", "batch_size": "sequences"}
FAILED: tuple[Status, ...] = ("oom", "oom_host")


@dataclass(frozen=True)
class Job:
    """One search: an axis over one cell's stack, model, device and other parameters.

    Attributes:
        key: the key of the outcome cell.
        axis: ``max_prompt_tokens`` or ``max_batch_size``.
        spec: the suite's settings of the axis.
        base: the suite cell it starts from.
    """

    key: str
    axis: str
    spec: SearchAxis
    base: Cell

    @property
    def param(self) -> str:
        return AXES[self.axis]


@dataclass
class Outcome:
    """What a bisection found.

    Attributes:
        largest: the largest value that fitted (None: none did).
        smallest_failing: the smallest value that did not fit (None: all fitted).
        probes: (value, fitted) of every real run, in order.
        stopped: why the search ended without a verdict (a probe that failed otherwise).
    """

    largest: int | None = None
    smallest_failing: int | None = None
    probes: list[tuple[int, bool]] = field(default_factory=list)
    stopped: str | None = None


class Stop(Exception):
    """Raised by a ``fits`` callback when a probe neither fitted nor ran out of memory."""


def bisect(
    fits: Callable[[int], bool],
    seed: int,
    *,
    at_least: int,
    up_to: int,
    tolerance: float,
    max_probes: int,
) -> Outcome:
    """The largest value in [at_least, up_to] for which ``fits`` holds, assuming it is
    monotone (fits at v ⇒ fits below v), probing from ``seed``.

    From the seed the value is multiplied (up) or divided (down) by 1.25, then 1.5, 2, 3,
    ... (the factor's excess over 1 doubling) until a fitting and a failing value bracket
    the boundary, then the bracket is halved until
    hi − lo ≤ max(1, tolerance × lo) or ``max_probes`` probes were made.

    Args:
        fits: runs the workload at a value; True if it fitted, False if it ran out of
            memory; raises ``Stop`` to end the search.
    """
    out = Outcome()
    lo: int | None = None  # largest value known to fit
    hi: int | None = None  # smallest value known not to fit

    def probe(value: int) -> bool:
        ok = fits(value)
        out.probes.append((value, ok))
        return ok

    def close() -> bool:
        return lo is not None and hi is not None and hi - lo <= max(1, int(tolerance * lo))

    try:
        value = min(max(seed, at_least), up_to)
        factor = 1.25
        while len(out.probes) < max_probes:
            if probe(value):
                lo = value
                if value >= up_to or (hi is not None and close()):
                    break
                if hi is None:
                    value = min(up_to, max(value + 1, int(value * factor)))
                    factor = 1 + 2 * (factor - 1)
                    continue
            else:
                hi = value
                if value <= at_least or (lo is not None and close()):
                    break
                if lo is None:
                    value = max(at_least, min(value - 1, int(value / factor)))
                    factor = 1 + 2 * (factor - 1)
                    continue
            if lo is not None and hi is not None:
                if close():
                    break
                value = (lo + hi) // 2
    except Stop as exc:
        out.stopped = str(exc)
    out.largest, out.smallest_failing = lo, hi
    return out


def _aborted_under_cap(result: CellResult, cell: Cell) -> bool:
    """A worker killed by SIGABRT under a memory cap: a native allocator (the tokenizer's,
    a BLAS library's) aborts instead of raising when the cap refuses it memory."""
    return (
        result.status == "crashed"
        and cell.policy.memory_limit_gib is not None
        and f"code {-signal.SIGABRT}" in (result.reason or "")
    )


def probe_cell(base: Cell, param: str, value: int) -> Cell:
    """``base`` with its workload's ``param`` set to ``value``, measured once: no warm-up,
    one repeat, no accuracy tasks, no pre-flight (a probe is the real run that decides)."""
    workload = TaskSpec(base.workload.name, {**base.workload.params, param: value})
    policy = base.policy.model_copy(
        update={"warmup": 0, "repeats": 1, "target_ci": None, "preflight": False}
    )
    key = cell_key(base.model, base.stack, workload, (), base.device, policy)
    return Cell(key, base.model, base.stack, workload, (), base.device, policy, base.label)


def jobs(suite: Suite) -> list[Job]:
    """Every search the suite asks for: per axis, one per distinct (model, device, stack,
    other workload parameters) among the suite's cells that have the axis's parameter."""
    search = suite.file.search
    if search is None:
        return []
    out: list[Job] = []
    seen: set[str] = set()
    for axis, param in AXES.items():
        spec: SearchAxis | None = getattr(search, axis)
        if spec is None:
            continue
        for cell in suite.cells:
            if param not in cell.workload.params:
                continue
            others = {k: v for k, v in cell.workload.params.items() if k != param}
            workload = TaskSpec("boundary", {"axis": axis, **spec.model_dump(), **others})
            key = cell_key(cell.model, cell.stack, workload, (), cell.device, cell.policy)
            if key not in seen:
                seen.add(key)
                out.append(Job(key, axis, spec, cell))
    return out


def predicted_largest(job: Job, registry: Registry) -> int | None:
    """The largest value whose predicted peak fits the cell's memory (the estimate's seed);
    None when the stack has no estimate."""
    from harness.environment import Environment, machine_info
    from harness.estimate.cellstep import predict_cell
    from harness.estimate.predict import build_techniques

    base = job.base
    stack = [{s.name: dict(s.config)} for s in base.stack]
    techniques = build_techniques(stack, registry)
    env = Environment(base.device, base.device.startswith("cuda"), machine_info().get("gpu"))

    def peak(value: int) -> tuple[float, float] | None:
        prediction = predict_cell(probe_cell(base, job.param, value), techniques, env)
        e = prediction.estimate
        if e is None or e.memory is None or not prediction.capacity_bytes:
            return None
        return e.memory.peak_bytes + e.memory.overhead_bytes, prediction.capacity_bytes

    spec = job.spec
    first = peak(spec.at_least)
    if first is None:
        return None
    if first[0] > first[1]:
        return spec.at_least
    lo, hi = spec.at_least, spec.up_to + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = peak(mid)
        if got is None:
            return None
        lo, hi = (mid, hi) if got[0] <= got[1] else (lo, mid)
    return lo


def search(job: Job, registry: Registry, run: Callable[[Cell], CellResult]) -> CellResult:
    """Run one search; ``run`` measures (and records) each probe cell. Returns the outcome
    cell (see module docstring)."""
    started = time.time()
    seed = predicted_largest(job, registry)
    spec = job.spec

    def fits(value: int) -> bool:
        result = run(probe_cell(job.base, job.param, value))
        if result.status == "ok":
            return True
        if result.status in FAILED or _aborted_under_cap(result, job.base):
            return False
        raise Stop(f"probe {job.param}={value}: {result.status}: {result.reason}")

    outcome = bisect(
        fits,
        seed if seed is not None else spec.at_least,
        at_least=spec.at_least,
        up_to=spec.up_to,
        tolerance=spec.tolerance,
        max_probes=spec.max_probes,
    )
    return outcome_cell(job, outcome, seed, started)


def outcome_cell(job: Job, outcome: Outcome, seed: int | None, started: float) -> CellResult:
    """The stored outcome of a search."""
    base, name, unit = job.base, f"boundary.{job.axis}", UNITS[job.param]
    probed = tuple(float(v) for v, _ in outcome.probes)
    if outcome.largest is not None:
        verdict = Value(
            name, float(outcome.largest), unit, n=len(probed), source="probes", samples=probed
        )
    else:
        why = outcome.stopped or f"nothing fits at {job.param} = {job.spec.at_least}"
        verdict = Value(name, None, unit, n=len(probed), reason=why, samples=probed)
    predicted = Value(
        f"boundary.predicted_{job.axis}",
        float(seed) if seed is not None else None,
        unit,
        source="estimate" if seed is not None else None,
        reason=None if seed is not None else "the stack has no estimate",
    )
    values = [verdict, predicted, Value("boundary.probes", float(len(probed)), "runs")]
    status: Status = "error" if outcome.stopped else "ok"
    params: dict[str, Any] = {"axis": job.axis, **job.spec.model_dump()}
    params.update({k: v for k, v in base.workload.params.items() if k != job.param})
    return CellResult(
        key=job.key,
        model=base.model.id,
        device=base.device,
        technique=base.label,
        stack=tuple(s.as_dict() for s in base.stack),
        workload={"name": "boundary", "params": json.loads(json.dumps(params))},
        status=status,
        reason=outcome.stopped,
        started_at=started,
        duration_s=time.time() - started,
        values=tuple(values),
    )


METRICS = [
    MetricDef(
        "boundary.max_prompt_tokens",
        "tokens",
        True,
        "largest prompt_tokens that ran without running out of memory (bisection seeded by "
        "the estimate, confirmed by real runs; samples: the values probed)",
    ),
    MetricDef(
        "boundary.max_batch_size",
        "sequences",
        True,
        "largest batch_size that ran without running out of memory (as max_prompt_tokens)",
    ),
    MetricDef(
        "boundary.predicted_max_prompt_tokens",
        "tokens",
        True,
        "largest prompt_tokens whose predicted peak fits the cell's memory (the seed)",
    ),
    MetricDef(
        "boundary.predicted_max_batch_size",
        "sequences",
        True,
        "largest batch_size whose predicted peak fits the cell's memory (the seed)",
    ),
    MetricDef("boundary.probes", "runs", False, "real runs a boundary search made"),
]
