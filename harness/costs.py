"""Costs paid once per cell: loading the model and preparing the stack.

Calibration, conversion and compression happen in a technique's ``prepare``; loading
happens before it. Both are measured by the harness, never by the technique, in a window
of their own that is timed by the device clock and watched by the memory probes that do
not slow the code down (``Probe.slows``: the CPU allocator's profiler is left out, so the
time is the real one):

- ``cost.load_s`` / ``cost.load_peak_bytes``: the load of the model the cell ran on (a
  stack that leaves the weights alone runs on the worker's pristine model, loaded once and
  shared by those cells: they all carry that load's cost);
- ``cost.prepare_s`` / ``cost.prepare_peak_bytes``: the stack's ``prepare``, every
  technique in order.

Peak = the probes' absolute peak during the window: ``memory.peak_alloc_bytes`` of the
CUDA allocator where there is one, else the process's peak RSS (``memory.peak_rss_bytes``,
VmHWM). Every memory window resets its probe's peak when it starts (the CUDA allocator's
peak statistics, VmHWM through ``/proc/self/clear_refs``), so the load's and the prepare's
peaks never leak into the workload's own memory window, which starts after them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from harness.meter import clock
from harness.probes import PEAK_ALLOC_BYTES, PEAK_RSS_BYTES, Probe
from harness.results import MetricDef, Value

METRICS = [
    MetricDef(
        "cost.load_s",
        "s",
        False,
        "wall time of loading the model the cell ran on (paid once per loaded copy)",
    ),
    MetricDef(
        "cost.load_peak_bytes",
        "bytes",
        False,
        "peak memory while that model loaded: CUDA allocator peak, else peak RSS",
    ),
    MetricDef(
        "cost.prepare_s",
        "s",
        False,
        "wall time of the stack's prepare: calibration, conversion, compression (once)",
    ),
    MetricDef(
        "cost.prepare_peak_bytes",
        "bytes",
        False,
        "peak memory during the stack's prepare: CUDA allocator peak, else peak RSS",
    ),
]

#: The probe metrics a window's peak is taken from, in order of preference.
PEAK_SOURCES = (PEAK_ALLOC_BYTES.name, PEAK_RSS_BYTES.name)


def window_probes(probes: Sequence[Probe]) -> list[Probe]:
    """The memory probes that can measure here and do not slow the code down."""
    return [p for p in probes if p.phase == "memory" and not p.slows and p.unavailable() is None]


@contextmanager
def cost_window(probes: Sequence[Probe], device: str, phase: str) -> Iterator[list[Value]]:
    """Time the body and watch its peak memory; yields the list that receives the values.

    Args:
        probes: the worker's probes (filtered by :func:`window_probes`).
        device: the device, synchronized before each clock read.
        phase: ``load`` or ``prepare``: the values are ``cost.<phase>_s`` and
            ``cost.<phase>_peak_bytes``.

    The values are filled in when the body ends normally; an exception leaves them out.
    """
    watching = window_probes(probes)
    out: list[Value] = []
    started: list[Probe] = []
    try:
        for probe in watching:
            probe.start()
            started.append(probe)
        t0 = clock(device)
        yield out
        elapsed = clock(device) - t0
    finally:
        measured = [v for probe in reversed(started) for v in probe.stop()]
    out.append(Value(f"cost.{phase}_s", elapsed, "s", source="clock"))
    out.append(peak_value(f"cost.{phase}_peak_bytes", measured, watching))


def peak_value(name: str, measured: Sequence[Value], probes: Sequence[Probe]) -> Value:
    """The window's peak from the first of :data:`PEAK_SOURCES` that was measured; null with
    the reason when none was."""
    by_name = {v.name: v for v in measured}
    for source in PEAK_SOURCES:
        value = by_name.get(source)
        if value is not None and value.value is not None:
            return Value(name, value.value, "bytes", source=f"{source} ({value.source})")
    reasons = [v.reason for v in measured if v.name in PEAK_SOURCES and v.reason]
    why = "; ".join(reasons) or (
        "no memory probe that leaves the code at full speed gives an absolute peak here "
        f"(probes: {', '.join(p.name for p in probes) or 'none'})"
    )
    return Value(name, None, "bytes", reason=why)
