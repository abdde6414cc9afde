"""The device table: spec memory bandwidth, peak FLOP/s per dtype and capacity, as data.

Entries are read from ``devices.toml`` shipped beside this module (and, when set, from the
TOML file ``$BENCH_DEVICES``, whose entries are added or replace shipped ones). The local
CPU has no data sheet: its entry holds placeholders until ``bench doctor --bandwidth``
measures this machine; the measurement is stored in the bench cache
(:mod:`harness.estimate.probe`) and replaces the placeholders from then on, and it is
stored with every run's environment (``estimate.measured.*``).

:func:`device_for` maps a cell's torch device (``cpu``, ``cuda:0``) to its entry, matching
the GPU's name against each entry's ``match`` patterns.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from harness.errors import BenchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

GiB = 2**30
TABLE = Path(__file__).with_name("devices.toml")
ENV_VAR = "BENCH_DEVICES"
#: dtype names of the estimate -> peak keys of the table.
_PEAK_KEYS = {
    "float32": "fp32_tflops",
    "tf32": "tf32_tflops",
    "float16": "fp16_tflops",
    "bfloat16": "bf16_tflops",
    "fp8": "fp8_tflops",
    "int8": "int8_tops",
}
_FIELDS = frozenset(
    {"title", "kind", "memory_gib", "bandwidth_gb_s", "host_link_gb_s", "match", "source"}
    | set(_PEAK_KEYS.values())
)


@dataclass(frozen=True)
class Device:
    """One device of the table.

    Attributes:
        name: the key (``a6000``, ``h100-sxm``, ``cpu``).
        title: product name.
        kind: ``cuda`` or ``cpu``.
        memory_bytes: capacity, bytes (0 for the local CPU: read from the machine).
        bandwidth_bytes_s: memory bandwidth, bytes/s.
        peak_flops: dense peak operations/s per dtype (``float32``, ``float16``,
            ``bfloat16``, ``tf32``, ``fp8``, ``int8``).
        host_link_bytes_s: host link (PCIe) bandwidth, bytes/s, for offloading.
        match: regular expressions over the GPU name that identify the device.
        source: where the numbers come from.
    """

    name: str
    title: str
    kind: Literal["cuda", "cpu"]
    memory_bytes: float
    bandwidth_bytes_s: float
    peak_flops: Mapping[str, float] = field(default_factory=dict)
    host_link_bytes_s: float | None = None
    match: tuple[str, ...] = ()
    source: str = ""

    def peak(self, dtype: str) -> float | None:
        """Peak operations/s for compute in ``dtype``; None when the table has none."""
        return self.peak_flops.get(dtype)

    def turning_point(self, dtype: str) -> float | None:
        """Arithmetic intensity where the roofline bends: peak / bandwidth, ops/byte."""
        peak = self.peak(dtype)
        return peak / self.bandwidth_bytes_s if peak else None

    def as_dict(self) -> dict[str, Any]:
        """The fields, for JSON output."""
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "memory_bytes": self.memory_bytes,
            "bandwidth_bytes_s": self.bandwidth_bytes_s,
            "peak_flops": dict(self.peak_flops),
            "host_link_bytes_s": self.host_link_bytes_s,
            "source": self.source,
        }


def _device(name: str, row: Mapping[str, Any], where: str) -> Device:
    unknown = sorted(set(row) - _FIELDS)
    if unknown or row.get("kind") not in ("cuda", "cpu"):
        problem = f"unknown keys {unknown}" if unknown else "kind must be 'cuda' or 'cpu'"
        raise BenchError(
            f"{where}: device {name!r}: {problem}. Keys: {', '.join(sorted(_FIELDS))} "
            "(see harness/estimate/devices.toml)."
        )
    try:
        peaks = {dtype: float(row[key]) * 1e12 for dtype, key in _PEAK_KEYS.items() if key in row}
        link = row.get("host_link_gb_s")
        return Device(
            name=name,
            title=str(row.get("title", name)),
            kind=row["kind"],
            memory_bytes=float(row.get("memory_gib", 0)) * GiB,
            bandwidth_bytes_s=float(row["bandwidth_gb_s"]) * 1e9,
            peak_flops=peaks,
            host_link_bytes_s=float(link) * 1e9 if link else None,
            match=tuple(str(m) for m in row.get("match", ())),
            source=str(row.get("source", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(
            f"{where}: device {name!r}: {exc!r}; bandwidth_gb_s is required and numbers must "
            "be numbers (see harness/estimate/devices.toml)."
        ) from exc


def _read(path: Path) -> dict[str, Device]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"{path}: cannot read the device table ({exc}). Fix the file.") from exc
    return {name: _device(name, row, str(path)) for name, row in data.items()}


@cache
def _shipped() -> dict[str, Device]:
    return _read(TABLE)


def load_devices() -> dict[str, Device]:
    """Every device by name: the shipped table, then ``$BENCH_DEVICES``'s entries.

    The local CPU entry carries this machine's measured bandwidth and peaks when
    ``bench doctor --bandwidth`` has measured them (:func:`harness.estimate.probe.measured`).
    """
    devices = dict(_shipped())
    extra = os.environ.get(ENV_VAR)
    if extra:
        devices.update(_read(Path(extra).expanduser()))
    if "cpu" in devices:
        devices["cpu"] = with_measurement(devices["cpu"], "cpu")
    return devices


def with_measurement(device: Device, torch_device: str) -> Device:
    """``device`` with the bandwidth and peaks measured on this machine, if stored."""
    from harness.estimate.probe import measured

    found = measured(torch_device)
    if found is None:
        return device
    peaks = {**device.peak_flops, **found.peak_flops}
    return replace(
        device,
        bandwidth_bytes_s=found.bandwidth_bytes_s,
        peak_flops=peaks,
        source=f"measured on this machine by 'bench doctor --bandwidth' ({found.when})",
    )


def find_device(name: str) -> Device:
    """The entry called ``name`` (case-insensitive; ``local`` is ``cpu``).

    Raises:
        BenchError: no such entry; the message lists the table.
    """
    devices = load_devices()
    key = "cpu" if name.lower() == "local" else name.lower()
    if key in devices:
        return devices[key]
    raise BenchError(
        f"unknown device {name!r}. Known: {', '.join(devices)}. Add it to "
        f"${ENV_VAR} (a TOML file shaped like harness/estimate/devices.toml)."
    )


def match_gpu(gpu_name: str) -> Device | None:
    """The CUDA entry whose ``match`` patterns find ``gpu_name`` (the longest pattern wins)."""
    best: tuple[int, Device] | None = None
    for device in load_devices().values():
        for pattern in device.match:
            found = device.kind == "cuda" and re.search(pattern, gpu_name)
            if found and (best is None or len(pattern) > best[0]):
                best = (len(pattern), device)
    return best[1] if best else None


def device_for(torch_device: str, gpu_name: str | None = None) -> tuple[Device | None, str]:
    """The table entry of a cell's device, or None with the reason.

    Args:
        torch_device: ``cpu`` or ``cuda:N``.
        gpu_name: ``torch.cuda.get_device_name`` of that GPU (``Environment.gpu_name``).
    """
    if not torch_device.startswith("cuda"):
        return find_device("cpu"), ""
    if not gpu_name:
        return None, f"no GPU name for {torch_device}"
    found = match_gpu(gpu_name)
    if found is None:
        return None, (
            f"GPU {gpu_name!r} is not in the device table (harness/estimate/devices.toml); "
            f"add it there or in ${ENV_VAR}"
        )
    return with_measurement(found, torch_device), ""
