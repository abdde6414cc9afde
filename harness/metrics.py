"""Metrics the harness itself emits for every cell, whatever the workload."""

from __future__ import annotations

from harness import applied, boundary, costs, derive
from harness.markers import hookimpl
from harness.results import MetricDef

CORE_METRICS = [
    MetricDef(
        "memory.weights_bytes",
        "bytes",
        False,
        "bytes of the prepared model's parameters and buffers, counted from the tensors "
        "(inner tensors of quantized subclasses included; shared storage once)",
    ),
]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return [*CORE_METRICS, *costs.METRICS, *applied.METRICS, *derive.METRICS, *boundary.METRICS]
