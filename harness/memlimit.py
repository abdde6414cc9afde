"""A memory cap for the measuring process, and the memory a cell may use.

``policy.memory_limit_gib`` caps what a cell may allocate, so that out-of-memory
boundaries can be searched (``harness.boundary``) on any machine and pre-flight
(``harness.estimate.cellstep``) compares the estimate with the cap:

- CPU: the soft ``RLIMIT_DATA`` of the worker is set to its data size when it started
  (the interpreter and libraries, before any model: ``data_bytes()``) plus the limit.
  Since Linux 4.7 it bounds private writable mappings, where torch's CPU allocator and
  Python's heap live; an allocation past it fails (``RuntimeError: DefaultCPUAllocator:
  can't allocate memory``, or ``MemoryError``) and the worker records ``oom_host``.
- CUDA: ``torch.cuda.set_per_process_memory_fraction(limit / total)``: the caching
  allocator raises ``torch.OutOfMemoryError`` (``oom``) past it.

Without a limit a cap set before is lifted (back to the limits the worker started with);
a worker that never had one is left alone.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

GiB = 2**30
_CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
#: The soft RLIMIT_DATA the process had before the first cap (None: never capped).
_ORIGINAL: dict[str, int] = {}


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in /proc/self/status")


def data_bytes() -> int:
    """This process's data size now (``VmData``: private writable mappings), bytes."""
    return _status_bytes("VmData:")


def apply(device: str, limit_bytes: float | None, base_bytes: int) -> None:
    """Cap what cells on ``device`` may allocate at ``limit_bytes`` (None: no cap).

    Args:
        device: the worker's torch device.
        limit_bytes: bytes a cell may use beyond the worker's start-up footprint.
        base_bytes: ``data_bytes()`` when the worker started (CPU).
    """
    if limit_bytes is None and device not in _ORIGINAL:
        return
    if device.startswith("cuda"):
        import torch

        _ORIGINAL.setdefault(device, 1)
        index = torch.device(device).index or 0
        total = torch.cuda.get_device_properties(index).total_memory
        fraction = 1.0 if limit_bytes is None else min(1.0, limit_bytes / total)
        torch.cuda.set_per_process_memory_fraction(fraction, index)
        return
    if limit_bytes is not None:
        _return_freed_memory()
    original, hard = resource.getrlimit(resource.RLIMIT_DATA)
    original = _ORIGINAL.setdefault(device, original)
    soft = original if limit_bytes is None else base_bytes + int(limit_bytes)
    if hard != resource.RLIM_INFINITY:
        soft = hard if soft == resource.RLIM_INFINITY else min(soft, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the kernel (``mallopt``), so the data size
    the cap bounds follows what is allocated instead of growing with fragmentation: blocks
    from 128 KiB are mmapped (a fixed threshold: glibc otherwise raises it after each free)
    and the heap is trimmed above 128 KiB of free space."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)


def ram_bytes() -> int:
    """Physical memory, or the cgroup's memory limit when that is lower, bytes."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 0
    try:
        text = _CGROUP_LIMIT.read_text().strip()
        if text != "max":
            ram = min(ram, int(text)) if ram else int(text)
    except (OSError, ValueError):
        pass
    return ram


def capacity(device: str, limit_bytes: float | None, gpu_total_bytes: float | None = None) -> float:
    """Memory a cell on ``device`` may use, bytes: the limit when set, else the GPU's total
    memory (``gpu_total_bytes``, from torch) or this machine's RAM."""
    if limit_bytes is not None:
        return float(limit_bytes)
    if device.startswith("cuda") and gpu_total_bytes:
        return float(gpu_total_bytes)
    return float(ram_bytes())
