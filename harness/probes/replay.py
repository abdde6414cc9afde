"""Fakes that replay recorded readings, so energy and memory probes run in tests without
the hardware: ``ReplayNvml`` (a stand-in for the ``pynvml`` module) and ``ReplayRapl``
(a powercap folder tree in a temporary directory).

    probe = NvmlEnergyProbe("cuda:0", nvml=ReplayNvml(energy_mj=[0, 1_000, 5_500]))
    rapl = ReplayRapl(tmp_path, {"intel-rapl:0": "package-0"}); probe = RaplProbe("cpu", rapl.root)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReplayMemoryInfo:
    """What ``nvmlDeviceGetMemoryInfo`` returns, in bytes."""

    total: int
    free: int
    used: int


class ReplayNvml:
    """A stand-in for ``pynvml`` that replays recorded readings, for tests without a GPU.

    Each call to ``nvmlDeviceGetTotalEnergyConsumption`` returns the next value of
    ``energy_mj`` and each call to ``nvmlDeviceGetMemoryInfo`` the next of
    ``memory_used_bytes``; a probe's ``unavailable()`` makes one such call to check the
    reading is supported, so a recording starts with that reading. Power readings come
    from ``power_mw``: a sequence replayed in order, or a function called for each reading
    (a polling thread reads as often as time allows). Error classes are the real ones from
    ``pynvml``, so the probes' error handling is exercised as on a GPU.

    Args:
        energy_mj: Successive energy-counter readings, mJ.
        memory_used_bytes: Successive device-memory readings, bytes.
        memory_total_bytes: Device memory size reported with each reading, bytes.
        device_count: GPUs NVML reports (indices 0..count-1).
        uuids: UUIDs accepted by ``nvmlDeviceGetHandleByUUID``.
        init_error: Name of the ``pynvml`` error class ``nvmlInit`` raises, e.g.
            ``"NVMLError_LibraryNotFound"``; None to succeed.
        energy_error: Name of the error class the energy counter raises, e.g.
            ``"NVMLError_NotSupported"`` (a pre-Volta GPU); None to replay readings.
        power_mw: Successive power readings, mW, or a function returning the next one.
        power_error: Name of the error class the power reading raises; None to replay.
    """

    def __init__(
        self,
        energy_mj: Sequence[int] = (),
        memory_used_bytes: Sequence[int] = (),
        *,
        memory_total_bytes: int = 80 * 2**30,
        device_count: int = 1,
        uuids: Sequence[str] = (),
        init_error: str | None = None,
        energy_error: str | None = None,
        power_mw: Sequence[int] | Callable[[], int] = (),
        power_error: str | None = None,
    ) -> None:
        from harness.probes.nvml import load_nvml

        real = load_nvml()
        self.NVMLError: type[Exception] = real.NVMLError
        self.NVMLError_LibraryNotFound: type[Exception] = real.NVMLError_LibraryNotFound
        self.NVMLError_DriverNotLoaded: type[Exception] = real.NVMLError_DriverNotLoaded
        self.NVMLError_NotSupported: type[Exception] = real.NVMLError_NotSupported
        self._errors = real
        self._energy_mj = list(energy_mj)
        self._memory_used = list(memory_used_bytes)
        self._memory_total = memory_total_bytes
        self._device_count = device_count
        self._uuids = tuple(uuids)
        self._init_error = init_error
        self._energy_error = energy_error
        self._power_mw = power_mw if callable(power_mw) else list(power_mw)
        self._power_error = power_error
        self.opened: list[int | str] = []  # the device indices / UUIDs asked for, in order

    def _raise(self, error_class: str) -> None:
        raise getattr(self._errors, error_class)()

    def nvmlInit(self) -> None:
        if self._init_error is not None:
            self._raise(self._init_error)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if not 0 <= index < self._device_count:
            self._raise("NVMLError_InvalidArgument")
        self.opened.append(index)
        return ("replay-gpu", index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        if uuid not in self._uuids:
            self._raise("NVMLError_NotFound")
        self.opened.append(uuid)
        return ("replay-gpu", uuid)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        if self._energy_error is not None:
            self._raise(self._energy_error)
        if not self._energy_mj:
            raise IndexError("ReplayNvml: no recorded energy readings left")
        return self._energy_mj.pop(0)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> ReplayMemoryInfo:
        if not self._memory_used:
            raise IndexError("ReplayNvml: no recorded memory readings left")
        used = self._memory_used.pop(0)
        return ReplayMemoryInfo(total=self._memory_total, free=self._memory_total - used, used=used)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        if self._power_error is not None:
            self._raise(self._power_error)
        if callable(self._power_mw):
            return self._power_mw()
        if not self._power_mw:
            raise IndexError("ReplayNvml: no recorded power readings left")
        return self._power_mw.pop(0)


class ReplayRapl:
    """A fake ``/sys/class/powercap`` tree, for ``RaplProbe(device, root=replay.root)``.

    Each zone is a folder holding ``name``, ``energy_uj`` and ``max_energy_range_uj``, as
    the kernel writes them; ``set()`` moves a counter between a probe's ``start()`` and
    ``stop()``. The control-type folder ``intel-rapl`` (no counter) is created too, as on
    a real machine.

    Args:
        root: Folder to build the tree in (created if missing).
        zones: Zone folder name → zone name, e.g. ``{"intel-rapl:0": "package-0",
            "intel-rapl:0:1": "dram"}``.
        energy_uj: Initial counter of every zone, µJ.
        max_energy_range_uj: Counter range of every zone, µJ (the kernel's value for a
            32-bit counter of 61 µJ units is 262143328850).
    """

    def __init__(
        self,
        root: Path,
        zones: Mapping[str, str],
        *,
        energy_uj: int = 0,
        max_energy_range_uj: int = 262_143_328_850,
    ) -> None:
        self.root = Path(root)
        (self.root / "intel-rapl").mkdir(parents=True, exist_ok=True)
        (self.root / "intel-rapl" / "enabled").write_text("1\n")
        for zone, name in zones.items():
            folder = self.root / zone
            folder.mkdir(exist_ok=True)
            (folder / "name").write_text(f"{name}\n")
            (folder / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")
            self.set(zone, energy_uj)

    def set(self, zone: str, energy_uj: int) -> None:
        """Set the counter of ``zone`` (its folder name) to ``energy_uj`` µJ."""
        (self.root / zone / "energy_uj").write_text(f"{energy_uj}\n")
