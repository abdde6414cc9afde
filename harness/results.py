"""Records passed between the worker, the runner and the store.

Frozen dataclasses with units in the names. ORM rows (harness.store) are separate classes
with explicit conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "skipped", "not-applied", "oom", "oom_host", "timeout", "crashed", "error"]
#: ``not-applied``: the cell ran, but a technique's ``verify`` found that it did not take
#: effect (``harness.technique.Applied``); its numbers are kept as evidence, never as ok.
STATUSES: tuple[Status, ...] = (
    "ok",
    "skipped",
    "not-applied",
    "oom",
    "oom_host",
    "timeout",
    "crashed",
    "error",
)
DONE_STATUSES: tuple[Status, ...] = ("ok", "skipped")


MetricKind = Literal["latency", "throughput", "memory", "energy", "accuracy", "other"]
#: What a metric can be about; the dashboard picks its axes and leaderboard columns by kind.
METRIC_KINDS: tuple[MetricKind, ...] = (
    "latency",
    "throughput",
    "memory",
    "energy",
    "accuracy",
    "other",
)


def kind_from_name(name: str) -> MetricKind:
    """The kind a metric gets when its definition names none: the first part of its dotted
    name when that is a kind (``accuracy.passkey`` -> ``accuracy``, ``power.avg_w`` ->
    ``energy``), else ``other``."""
    first = name.split(".", 1)[0]
    if first == "power":
        return "energy"
    return next((kind for kind in METRIC_KINDS if kind == first), "other")


@dataclass(frozen=True)
class MetricDef:
    """A registered metric: its name, unit, which direction is better, and what it is about.

    Names are dotted and carry the unit: ``latency.ttft_s``, ``memory.kv_cache_bytes``.

    Attributes:
        name: the dotted name values carry.
        unit: the unit of its values (``s``, ``bytes``, ``fraction``, ``ratio``, ...).
        higher_is_better: the direction of a better value (Pareto frontiers, deltas).
        description: one line: what it measures, with its formula where it is derived.
        kind: what it is about, one of :data:`METRIC_KINDS`: the dashboard's accuracy axis
            and the leaderboard's default columns use it. Left out, it follows from the
            name (:func:`kind_from_name`), so ``prune.sparsity`` is ``other`` unless its
            definition says ``kind="accuracy"``.
    """

    name: str
    unit: str
    higher_is_better: bool
    description: str
    kind: MetricKind = None  # type: ignore[assignment]  # filled in by __post_init__

    def __post_init__(self) -> None:
        if self.kind is None:
            object.__setattr__(self, "kind", kind_from_name(self.name))


@dataclass(frozen=True)
class Value:
    """One measured metric of a cell.

    ``value`` is None when nothing could measure it; ``reason`` then says why. For repeated
    metrics ``value`` is the median of ``n`` repeats and ``ci_low``/``ci_high`` bound a 95%
    confidence interval of the median. ``samples`` keeps what the value summarises, in the
    order measured (each repeat's value, or each trial's outcome), for comparisons that
    need more than the summary (``bench compare``, flips against the reference).
    """

    name: str
    value: float | None
    unit: str
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 1
    source: str | None = None
    reason: str | None = None
    samples: tuple[float, ...] = ()


@dataclass(frozen=True)
class Measurement:
    """What a workload returns for one cell: its metric values and any extra output."""

    values: tuple[Value, ...]
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellResult:
    """The outcome of one cell, as stored: identity, status and metric values."""

    key: str
    model: str
    device: str
    technique: str  # readable label of the stack, e.g. "precision(dtype=bf16)"
    stack: tuple[dict[str, Any], ...]  # [{"name": ..., "config": {...}}, ...]
    workload: dict[str, Any]  # {"name": "generate", "params": {...}}
    status: Status
    reason: str | None
    started_at: float  # unix time, s
    duration_s: float
    values: tuple[Value, ...] = ()
    reference: bool = False  # the suite's reference stack: what other stacks compare with
    # what exactly was measured (harness.fingerprint): model files, inputs, stack, software
    fingerprint: dict[str, Any] | None = None

    def metric(self, name: str) -> float | None:
        """The value of metric ``name``; None when it is absent or was not measured."""
        return next((v.value for v in self.values if v.name == name), None)
