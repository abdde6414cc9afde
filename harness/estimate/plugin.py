"""The estimate as a built-in plugin: its metrics, and this machine's measured bandwidth
stored with every run's environment (``environment_info``)."""

from __future__ import annotations

from harness.estimate.probe import environment_facts
from harness.markers import hookimpl
from harness.results import MetricDef

METRICS = [
    MetricDef(
        "estimate.peak_bytes",
        "bytes",
        False,
        "predicted allocator peak: weights + other models + KV cache + activations "
        "(+ gradients and optimizer state), before the model loads (docs/estimate.md)",
    ),
    MetricDef(
        "estimate.weights_bytes", "bytes", False, "predicted bytes of the weights on the device"
    ),
    MetricDef(
        "estimate.kv_cache_bytes",
        "bytes",
        False,
        "predicted bytes of the KV cache after generation",
    ),
    MetricDef(
        "estimate.prefill_s", "s", False, "predicted prefill time at the roofline (seed 003 §2.3)"
    ),
    MetricDef(
        "estimate.decode_s",
        "s",
        False,
        "predicted time of one decode step at the final KV length, at the roofline, per "
        "emitted token",
    ),
    MetricDef(
        "estimate.train_step_s",
        "s",
        False,
        "predicted training step: 3 forward passes (4 with checkpointing) + the optimizer's "
        "pass over weights, gradients and state",
    ),
    MetricDef("estimate.prefill_ops", "ops", False, "operations of the prefill (estimate)"),
    MetricDef("estimate.prefill_bytes", "bytes", False, "bytes the prefill moves (estimate)"),
    MetricDef("estimate.decode_ops", "ops", False, "operations of one decode step (estimate)"),
    MetricDef("estimate.decode_bytes", "bytes", False, "bytes one decode step moves (estimate)"),
    MetricDef(
        "estimate.roof_flops", "FLOP/s", True, "the device's compute roof in the cell's dtype"
    ),
    MetricDef(
        "estimate.roof_bytes_s", "bytes/s", True, "the device's memory bandwidth (the slope)"
    ),
]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS


@hookimpl
def environment_info() -> dict[str, str]:
    """This machine's bandwidth and peaks measured by ``bench doctor --bandwidth``."""
    return environment_facts()
