"""CUDA caching-allocator peaks over a window (torch.cuda memory statistics)."""

from __future__ import annotations

from typing import ClassVar

from harness.probes import (
    PEAK_ALLOC_BYTES,
    PEAK_RESERVED_BYTES,
    WINDOW_PEAK_BYTES,
    Phase,
    Probe,
)
from harness.results import MetricDef, Value


class CudaAllocatorProbe(Probe):
    """Peak allocated and reserved bytes of torch's CUDA caching allocator.

    ``start()`` resets the allocator's peak statistics
    (``torch.cuda.reset_peak_memory_stats``) and records ``memory_allocated`` at that
    moment; ``stop()`` reads the peaks. All three are allocator bookkeeping, updated on
    the host when a block is handed out, so no device synchronization is needed and the
    numbers are deterministic for a deterministic program.

    Emits ``memory.window_peak_bytes`` = max_memory_allocated - allocated at start,
    ``memory.peak_alloc_bytes`` = max_memory_allocated (includes weights and everything
    alive at start) and ``memory.peak_reserved_bytes`` = max_memory_reserved (what the
    allocator held from the driver, including its cache). Sizes are as the allocator
    rounds them (multiples of 512 bytes). Memory allocated outside torch's allocator
    (cuBLAS workspaces set up by the driver, NCCL, other processes) is not included;
    ``nvml-memory`` sees it.
    """

    name: ClassVar[str] = "cuda-allocator"
    phase: ClassVar[Phase] = "memory"
    metrics: ClassVar[tuple[MetricDef, ...]] = (
        WINDOW_PEAK_BYTES,
        PEAK_ALLOC_BYTES,
        PEAK_RESERVED_BYTES,
    )
    source: ClassVar[str] = "cuda-allocator"

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self._allocated_at_start: int | None = None

    def unavailable(self) -> str | None:
        if not self.device.startswith("cuda"):
            return f"cuda-allocator measures CUDA devices; device {self.device!r} is not one"
        try:
            import torch
        except ImportError as err:
            return f"torch cannot be imported: {err}"
        if not torch.cuda.is_available():
            build = torch.version.cuda
            why = f"built for CUDA {build}, no GPU visible" if build else "a CPU-only build"
            return f"CUDA is not available (torch {torch.__version__}: {why})"
        try:
            index = torch.device(self.device).index
        except RuntimeError as err:
            return f"invalid device {self.device!r}: {err}"
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            return f"device {self.device!r} does not exist: {count} CUDA device(s) visible"
        return None

    def start(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)
        self._allocated_at_start = torch.cuda.memory_allocated(self.device)

    def stop(self) -> list[Value]:
        import torch

        at_start = self._allocated_at_start
        if at_start is None:
            raise RuntimeError("cuda-allocator: stop() called without start()")
        self._allocated_at_start = None
        peak_alloc = torch.cuda.max_memory_allocated(self.device)
        peak_reserved = torch.cuda.max_memory_reserved(self.device)
        return [
            self._value(WINDOW_PEAK_BYTES.name, float(peak_alloc - at_start), self.source),
            self._value(PEAK_ALLOC_BYTES.name, float(peak_alloc), self.source),
            self._value(PEAK_RESERVED_BYTES.name, float(peak_reserved), self.source),
        ]
