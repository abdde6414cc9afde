"""``bench doctor --bandwidth``: what this machine's memory and arithmetic really do.

The roofline of the local CPU (and of a GPU whose spec numbers one doubts) uses measured
numbers when they exist:

- bandwidth: a STREAM-style copy of a ``size_bytes`` tensor into another (read once,
  written once: 2 × size bytes moved), best of ``repeats`` runs, bytes/s;
- peak: an n×n matmul per dtype (2·n³ operations), best of ``repeats`` runs, ops/s.

The result is stored per machine fingerprint in ``<bench cache>/measured/<fingerprint>.json``
(:func:`store`); :func:`measured` reads it back, :mod:`harness.estimate.devices` applies it
to the device's entry, and the ``environment_info`` hook of :mod:`harness.estimate.plugin`
stores it with every run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MiB = 2**20


@dataclass(frozen=True)
class Measured:
    """A device's measured bandwidth and peaks.

    Attributes:
        device: torch device string (``cpu``, ``cuda:0``).
        bandwidth_bytes_s: copy bandwidth, bytes/s (bytes read + bytes written per second).
        peak_flops: matmul operations/s per dtype name (``float32``, ``bfloat16``, ...).
        when: ISO date and time (UTC) of the measurement.
        method: how it was measured, for the record.
    """

    device: str
    bandwidth_bytes_s: float
    peak_flops: dict[str, float] = field(default_factory=dict)
    when: str = ""
    method: str = ""


def _best(run: Callable[[], None], sync: Callable[[], None], repeats: int) -> float:
    """Fastest of ``repeats`` timed runs after one warm-up run, s."""
    run()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(
    device: str = "cpu",
    *,
    size_bytes: int = 256 * MiB,
    matmul_n: int | None = None,
    repeats: int = 5,
) -> Measured:
    """Measure copy bandwidth and matmul peaks on ``device``.

    Args:
        device: ``cpu`` or ``cuda:N``.
        size_bytes: bytes of the copied tensor (well above the last-level cache).
        matmul_n: matrix size (default 1024 on CPU, 8192 on CUDA).
        repeats: timed runs per number; the fastest counts.
    """
    import torch

    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    buffers = [torch.ones(size_bytes // 4, dtype=torch.float32, device=device)]
    buffers.append(torch.empty_like(buffers[0]))

    def copy() -> None:
        buffers[1].copy_(buffers[0])

    bandwidth = 2 * size_bytes / _best(copy, sync, repeats)
    buffers.clear()
    n = matmul_n or (8192 if cuda else 1024)
    dtypes = ["float32", "bfloat16", "float16"] if cuda else ["float32", "bfloat16"]
    peaks = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)

        def matmul(a: Any = a, b: Any = b) -> None:
            torch.mm(a, b)

        peaks[name] = 2 * n**3 / _best(matmul, sync, repeats)
    return Measured(
        device=device,
        bandwidth_bytes_s=bandwidth,
        peak_flops=peaks,
        when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        method=(
            f"copy of {size_bytes // MiB} MiB (2 × size moved) and {n}×{n} matmuls "
            f"(2·n³ ops), best of {repeats}, torch {torch.__version__}"
        ),
    )


def _path() -> Path:
    from harness.assets import cache_dir
    from harness.environment import fingerprint, machine_info

    return cache_dir() / "measured" / f"{fingerprint(machine_info())[:16]}.json"


def _load() -> dict[str, Any]:
    path = _path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def store(result: Measured) -> Path:
    """Keep ``result`` for this machine (other devices' measurements are kept); its path."""
    path = _path()
    data = _load()
    data[result.device] = asdict(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def measured(device: str) -> Measured | None:
    """This machine's stored measurement of ``device``, or None."""
    row = _load().get(device)
    if not isinstance(row, dict):
        return None
    try:
        return Measured(**row)
    except TypeError:  # written by another version
        return None


def environment_facts() -> dict[str, str]:
    """The stored measurements as run environment facts (``estimate.measured.<device>.*``)."""
    facts: dict[str, str] = {}
    for device, row in _load().items():
        if not isinstance(row, dict) or "bandwidth_bytes_s" not in row:
            continue
        prefix = f"estimate.measured.{device}"
        facts[f"{prefix}.bandwidth_bytes_s"] = f"{float(row['bandwidth_bytes_s']):.4g}"
        for dtype, peak in (row.get("peak_flops") or {}).items():
            facts[f"{prefix}.peak_flops.{dtype}"] = f"{float(peak):.4g}"
        facts[f"{prefix}.when"] = str(row.get("when", ""))
    return facts
