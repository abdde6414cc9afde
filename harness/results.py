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


@dataclass(frozen=True)
class MetricDef:
    """A registered metric: its name, unit and which direction is better.

    Names are dotted and carry the unit: ``latency.ttft_s``, ``memory.kv_cache_bytes``.
    """

    name: str
    unit: str
    higher_is_better: bool
    description: str


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

    def metric(self, name: str) -> float | None:
        """The value of metric ``name``; None when it is absent or was not measured."""
        return next((v.value for v in self.values if v.name == name), None)
