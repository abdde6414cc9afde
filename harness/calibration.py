"""The machine's speed as a cell begins: a fixed workload timed in the cell's own worker.

Two runs of the same suite on a shared machine differ by more than their repeats show: the
machine itself gets faster or slower between hours (on this project's 2-core VM the
baseline's TPOT moved ×1.10 in six hours, every stack with it). ``bench compare`` cannot
tell that from a change in the software unless each run also measures something that does
not change: this workload. It depends on numpy and the interpreter only, never on torch,
transformers or a plugin, so a new version of those leaves it alone, while a busier or
slower machine slows it down with the cells.

Three parts, each the median of :data:`REPEATS` timings, about 0.2 s in all on a 2-core VM:

    python_s   a pure-Python loop (interpreter speed: what small models' decode waits on)
    matmul_s   float32 matrix products (compute)
    copy_s     copying a buffer larger than the caches (memory bandwidth)

:func:`speed` folds them into one number, the geometric mean of the three: a run's cells
compare their machines by its ratio (``harness.compare``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

#: Timings of each part; the median is stored.
REPEATS = 5
#: The parts' names, in the fingerprint's ``host.calibration``.
PARTS: tuple[str, ...] = ("python_s", "matmul_s", "copy_s")
_MATMUL_N = 256
_MATMUL_TIMES = 64
_COPY_BYTES = 32 * 1024 * 1024
_COPY_TIMES = 8


def _python() -> None:
    total = 0
    for i in range(500_000):
        total += i * i


def _matmul_part() -> Callable[[], None]:
    a = np.random.default_rng(0).random((_MATMUL_N, _MATMUL_N), dtype=np.float32)
    b = a.T.copy()

    def run() -> None:
        for _ in range(_MATMUL_TIMES):
            np.matmul(a, b)

    return run


def _copy_part() -> Callable[[], None]:
    source = np.ones(_COPY_BYTES // 8)
    target = np.empty_like(source)

    def run() -> None:
        for _ in range(_COPY_TIMES):
            np.copyto(target, source)

    return run


def measure() -> dict[str, float]:
    """Time the three parts (module docstring); seconds, the median of each."""
    out = {}
    for name, part in zip(PARTS, (_python, _matmul_part(), _copy_part()), strict=True):
        part()  # warm: caches, pages, the BLAS threads
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            part()
            times.append(time.perf_counter() - start)
        out[name] = round(statistics.median(times), 7)
    return out


def speed(calibration: Mapping[str, Any] | None) -> float | None:
    """The calibration's one number, seconds: the geometric mean of its parts (None when a
    part is missing or not positive)."""
    if not calibration:
        return None
    parts = [calibration.get(name) for name in PARTS]
    numbers = [float(p) for p in parts if isinstance(p, int | float) and p > 0]
    return statistics.geometric_mean(numbers) if len(numbers) == len(PARTS) else None
