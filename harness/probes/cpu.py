"""CPU memory probes: torch CPU allocator peak (profiler memory events) and peak RSS.

Both run only in the untimed memory window: the profiler records every operator and
slows CPU-bound code down (see ``CpuAllocatorProbe``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.probes import PEAK_RSS_BYTES, WINDOW_PEAK_BYTES, Phase, Probe
from harness.results import MetricDef, Value

if TYPE_CHECKING:
    import torch.profiler

# Name torch gives the profiler's allocator records (torch.autograd.profiler_util).
_MEMORY_EVENT_NAME = "[memory]"
# Device types whose allocations torch itself counts as CPU memory
# (torch.autograd.profiler.profile._parse_kineto_results._cpu_memory_usage).
_CPU_DEVICE_TYPES = ("CPU", "MKLDNN", "IDEEP")


def window_peak_bytes(deltas: Iterable[int]) -> int:
    """Peak of the running sum of signed allocation sizes, never below 0.

    Args:
        deltas: Bytes allocated (+) and freed (-), in the order they happened.

    Returns:
        max(0, max_t sum_{i<=t} deltas[i]) in bytes: how far the allocated total rose
        above its value at the start of the sequence.
    """
    return max(itertools.accumulate(deltas, initial=0))


def _is_cpu(device: str) -> bool:
    return device.split(":", 1)[0] == "cpu"


class CpuAllocatorProbe(Probe):
    """Allocator-level peak of the torch CPU allocator over the window.

    The window runs under ``torch.profiler.profile(activities=[CPU], profile_memory=True)``.
    With memory profiling on, torch's CPU allocator reports every allocation and free to
    the profiler with its exact requested size in bytes (no rounding is applied to the
    reported size; ``c10::ProfiledCPUMemoryReporter``). ``stop()`` walks those raw
    ``[memory]`` events of the kineto result (``prof.profiler.kineto_results.events()``,
    ``nbytes()`` signed: + alloc, - free) in time order, and reports the peak of their
    running sum (``window_peak_bytes``). The result is deterministic: it does not depend
    on the OS, the C allocator or timing.

    What it does not see: memory not allocated through torch's CPU allocator (Python
    objects, tokenizers, mmapped safetensors, malloc in third-party libraries; use the
    ``rss`` probe for those); allocations on Python threads other than the one that
    called ``start()`` (the profiler follows that thread and the intra-op threads torch
    runs for it); and frees of blocks allocated before any profiled window (torch does
    not know their size; it logs "Memory block of unknown size ..." once).
    Frees of blocks allocated in an earlier profiled window are seen, so the running sum
    may go below 0; the reported peak is never below 0.

    Overhead: the profiler records every operator, so CPU-bound code runs slower inside
    the window; it therefore runs only in the untimed memory window.

    Always pair ``start()`` with ``stop()`` (also when the window raises): a profiler
    left running makes the next ``start()`` fail.
    """

    name: ClassVar[str] = "cpu-allocator"
    phase: ClassVar[Phase] = "memory"
    metrics: ClassVar[tuple[MetricDef, ...]] = (WINDOW_PEAK_BYTES,)
    source: ClassVar[str] = "torch-profiler"
    slows: ClassVar[bool] = True

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self._profiler: torch.profiler.profile | None = None

    def unavailable(self) -> str | None:
        if not _is_cpu(self.device):
            return (
                f"cpu-allocator measures the torch CPU allocator; device {self.device!r} "
                "is measured by cuda-allocator"
            )
        try:
            import torch.profiler
        except ImportError as err:  # torch is a dependency; a broken install lands here
            return f"torch.profiler cannot be imported: {err}"
        if not torch.profiler.kineto_available():
            return "this torch build has no kineto profiler (torch.profiler.kineto_available())"
        return None

    def start(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        # Kineto prints "profiler_start/stop" lines on stderr at every level below 6
        # (its ENUM_COUNT); the level is read when kineto first initializes. A user who
        # sets KINETO_LOG_LEVEL keeps theirs.
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        profiler.start()
        self._profiler = profiler

    def stop(self) -> list[Value]:
        profiler = self._profiler
        if profiler is None:
            raise RuntimeError("cpu-allocator: stop() called without start()")
        self._profiler = None
        profiler.stop()
        peak = window_peak_bytes(_cpu_memory_deltas(profiler))
        del profiler
        _give_back_freed_memory()
        return [self._value(WINDOW_PEAK_BYTES.name, float(peak), self.source)]


def _give_back_freed_memory() -> None:
    """Free the profiler's event records and return the freed heap to the OS.

    A stopped profiler's records sit in reference cycles. glibc keeps the memory they freed,
    so without this the process stays about 500 MB larger (smollm2-135m, 128 + 32 tokens)
    and every later RSS window starts from there. ``gc.collect()`` followed by glibc's
    ``malloc_trim(0)`` brought it back to within 10 MB of the RSS before the window
    (docs/validation.md). Elsewhere (no glibc) only the collection runs.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: no malloc_trim
        ctypes.CDLL(None).malloc_trim(0)


def _cpu_memory_deltas(profiler: torch.profiler.profile) -> list[int]:
    """Signed CPU allocation sizes (bytes) recorded by a stopped profiler, in time order.

    Events with equal timestamps keep their recorded order (a stable sort), which is the
    order of one thread's allocations.
    """
    inner = profiler.profiler
    results = inner.kineto_results if inner is not None else None
    if results is None:
        raise RuntimeError("cpu-allocator: the profiler returned no kineto results")
    events = [
        event
        for event in results.events()
        if event.name() == _MEMORY_EVENT_NAME and event.device_type().name in _CPU_DEVICE_TYPES
    ]
    events.sort(key=lambda event: event.start_ns())
    return [int(event.nbytes()) for event in events]  # type: ignore[attr-defined]


class RssProbe(Probe):
    """Peak resident set size of this process over the window (Linux).

    ``start()`` writes ``5`` to ``/proc/self/clear_refs``, which resets the process's
    high-water mark ``VmHWM`` to its current RSS (Linux >= 4.0, see proc(5)); ``stop()``
    reads ``VmHWM`` from ``/proc/self/status`` (kB, converted to bytes). It counts every
    page the process touches: torch tensors, Python objects, libraries, mmapped weights.
    It is the absolute peak of the process, not the increase over the window.
    """

    name: ClassVar[str] = "rss"
    phase: ClassVar[Phase] = "memory"
    metrics: ClassVar[tuple[MetricDef, ...]] = (PEAK_RSS_BYTES,)
    source: ClassVar[str] = "vmhwm"

    def __init__(self, device: str, proc_self: Path = Path("/proc/self")) -> None:
        """Args:
        device: Any device; RSS is the host process's memory.
        proc_self: The process's /proc directory (tests point it elsewhere).
        """
        super().__init__(device)
        self._clear_refs = proc_self / "clear_refs"
        self._status = proc_self / "status"

    def unavailable(self) -> str | None:
        try:
            self._read_hwm_bytes()
        except (OSError, ValueError) as err:
            return f"cannot read VmHWM from {self._status}: {err}"
        try:
            self._reset_hwm()
        except OSError as err:
            return f"cannot reset the RSS high-water mark via {self._clear_refs}: {err}"
        return None

    def start(self) -> None:
        self._reset_hwm()

    def stop(self) -> list[Value]:
        return [self._value(PEAK_RSS_BYTES.name, float(self._read_hwm_bytes()), self.source)]

    def _reset_hwm(self) -> None:
        with open(self._clear_refs, "w") as f:
            f.write("5")

    def _read_hwm_bytes(self) -> int:
        with open(self._status) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    amount, unit = line.split()[1:3]
                    if unit != "kB":
                        raise ValueError(f"unexpected unit in {line.strip()!r}")
                    return int(amount) * 1024
        raise ValueError("no VmHWM line")
