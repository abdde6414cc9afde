"""Measurement back-ends behind the meter: memory peaks and energy meters.

A probe measures one window: ``start()`` before it, ``stop()`` after it, returning the
window's values. Memory probes run only in the untimed memory window (some, like the
profiler, slow the code down); timing probes (energy) run around timed windows, and the
caller synchronizes the device before ``start()`` and ``stop()``.

A probe that cannot measure on this machine says why through ``unavailable()`` (which
never raises); the caller then records ``null_values(reason)`` instead of running it.

Built-in probes are registered through the same hooks as third-party ones; the hook
implementations import the probe modules lazily, so importing this package stays cheap
(no torch, no NVML).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

from harness.markers import hookimpl
from harness.results import MetricDef, Value

Phase = Literal["memory", "timing"]

__all__ = [
    "BUILTIN_METRICS",
    "DEVICE_USED_BYTES",
    "ENERGY_TOTAL_J",
    "PEAK_ALLOC_BYTES",
    "PEAK_RESERVED_BYTES",
    "PEAK_RSS_BYTES",
    "WINDOW_PEAK_BYTES",
    "Phase",
    "Probe",
    "is_energy_probe",
    "register_metrics",
    "register_probes",
]

WINDOW_PEAK_BYTES = MetricDef(
    "memory.window_peak_bytes",
    "bytes",
    higher_is_better=False,
    description="Peak bytes held by the torch allocator during the window, above what it "
    "held when the window began.",
)
PEAK_RSS_BYTES = MetricDef(
    "memory.peak_rss_bytes",
    "bytes",
    higher_is_better=False,
    description="Peak resident set size of the measuring process during the window (VmHWM).",
)
PEAK_ALLOC_BYTES = MetricDef(
    "memory.peak_alloc_bytes",
    "bytes",
    higher_is_better=False,
    description="Peak bytes allocated by the CUDA caching allocator during the window "
    "(torch.cuda.max_memory_allocated).",
)
PEAK_RESERVED_BYTES = MetricDef(
    "memory.peak_reserved_bytes",
    "bytes",
    higher_is_better=False,
    description="Peak bytes reserved from the driver by the CUDA caching allocator during "
    "the window (torch.cuda.max_memory_reserved).",
)
DEVICE_USED_BYTES = MetricDef(
    "memory.device_used_bytes",
    "bytes",
    higher_is_better=False,
    description="GPU memory in use by all processes as NVML reports it, the larger of the "
    "readings at the window's start and end.",
)
ENERGY_TOTAL_J = MetricDef(
    "energy.total_j",
    "J",
    higher_is_better=False,
    description="Energy the device consumed during one run: NVML total-energy counter "
    "(nvml-counter), NVML power polling (nvml-power) or CPU package+DRAM RAPL (rapl).",
)
BUILTIN_METRICS: tuple[MetricDef, ...] = (
    WINDOW_PEAK_BYTES,
    PEAK_RSS_BYTES,
    PEAK_ALLOC_BYTES,
    PEAK_RESERVED_BYTES,
    DEVICE_USED_BYTES,
    ENERGY_TOTAL_J,
)


class Probe(ABC):
    """One measurement back-end for one device.

    Subclasses set the class attributes and implement ``start``/``stop`` (and
    ``unavailable`` when they need hardware or OS support).

    Attributes:
        name: Unique probe name, e.g. ``"cpu-allocator"``.
        phase: ``"memory"`` (runs only in the untimed memory window) or ``"timing"``
            (runs around timed windows: energy).
        metrics: Every metric ``stop()`` can emit, with units and directions.
        device: The torch device string this probe measures (``"cpu"``, ``"cuda:0"``).
        slows: Whether the probe slows the measured code down (the CPU allocator's
            profiler): windows that are also timed, such as the one-time costs of loading
            and preparing (``harness.costs``), leave it out.
    """

    name: ClassVar[str]
    phase: ClassVar[Phase]
    metrics: ClassVar[tuple[MetricDef, ...]]
    slows: ClassVar[bool] = False

    def __init__(self, device: str) -> None:
        self.device = device

    def unavailable(self) -> str | None:
        """Why this probe cannot measure here, or None if it can. Never raises."""
        return None

    @abstractmethod
    def start(self) -> None:
        """Begin a window."""

    @abstractmethod
    def stop(self) -> list[Value]:
        """End the window begun by ``start()`` and return its values (units in names)."""

    def null_values(self, reason: str) -> list[Value]:
        """One null value per metric of this probe, each carrying ``reason``."""
        return [Value(m.name, None, m.unit, reason=reason) for m in self.metrics]

    def _value(self, name: str, value: float, source: str) -> Value:
        """A single-window value of one of this probe's metrics (unit from ``metrics``)."""
        for metric in self.metrics:
            if metric.name == name:
                return Value(name, value, metric.unit, n=1, source=source)
        raise KeyError(f"probe {self.name!r} emits no metric {name!r}")


def is_energy_probe(probe: Probe | type[Probe]) -> bool:
    """Whether ``probe`` measures energy: a timing probe that emits ``energy.total_j``."""
    return probe.phase == "timing" and ENERGY_TOTAL_J in probe.metrics


@hookimpl
def register_probes() -> list[type[Probe]]:
    """The built-in probes: CPU allocator, RSS, CUDA allocator, NVML memory, and the
    energy probes NVML counter, NVML power polling (GPUs without the counter) and RAPL."""
    from harness.probes.cpu import CpuAllocatorProbe, RssProbe
    from harness.probes.cuda import CudaAllocatorProbe
    from harness.probes.nvml import NvmlEnergyProbe, NvmlMemoryProbe, NvmlPowerProbe
    from harness.probes.rapl import RaplProbe

    return [
        CpuAllocatorProbe,
        RssProbe,
        CudaAllocatorProbe,
        NvmlMemoryProbe,
        NvmlEnergyProbe,
        NvmlPowerProbe,
        RaplProbe,
    ]


@hookimpl
def register_metrics() -> list[MetricDef]:
    """Every metric the built-in probes emit, each once (two probes share
    ``memory.window_peak_bytes``)."""
    return list(BUILTIN_METRICS)
