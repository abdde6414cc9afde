"""RAPL: CPU package and DRAM energy from the Linux powercap interface.

Intel CPUs since Sandy Bridge, and AMD Zen CPUs since Linux 5.8 (the same ``intel_rapl``
driver serves both), expose Running Average Power Limit energy counters under
``/sys/class/powercap``: one zone ``intel-rapl:N`` per CPU package (``name`` =
``package-N``) with sub-zones such as ``core``, ``uncore`` and ``dram``
(``intel-rapl:N:M``). Each zone has ``energy_uj``, a counter in microjoules that wraps
around to 0 past ``max_energy_range_uj``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.probes import ENERGY_TOTAL_J, Phase, Probe
from harness.results import MetricDef, Value

POWERCAP_ROOT = Path("/sys/class/powercap")

# Zones of the MSR interface: intel-rapl:N (packages, psys) and intel-rapl:N:M (sub-zones).
# intel-rapl-mmio:N repeats a package through MMIO on some Intel laptops: not counted twice.
_ZONE_DIR = re.compile(r"^intel-rapl:\d+(:\d+)?$")


@dataclass(frozen=True)
class RaplZone:
    """One counted RAPL zone.

    Attributes:
        path: The zone's folder, e.g. ``/sys/class/powercap/intel-rapl:0``.
        name: Its ``name`` file: ``package-0``, ``dram``.
        max_energy_range_uj: The counter's range, µJ: it wraps to 0 past this value.
    """

    path: Path
    name: str
    max_energy_range_uj: int

    def read_uj(self) -> int:
        """The counter now, µJ."""
        return _read_int(self.path / "energy_uj")


def _read_text(path: Path) -> str:
    return path.read_text()


def _read_int(path: Path) -> int:
    return int(_read_text(path).strip())


def counter_delta_uj(start_uj: int, end_uj: int, max_energy_range_uj: int) -> int:
    """Energy between two readings of a wrapping counter, µJ.

    ``end - start`` when the counter did not wrap; ``end - start + max_energy_range_uj``
    when it did (end < start). The kernel's range is the counter's largest value, so a
    wrap loses at most one counter unit (about 15-61 µJ). More than one wrap in a window
    cannot be told apart: at 100 W a 32-bit counter of 61 µJ units wraps every ~44 min,
    far longer than a measured window.
    """
    delta = end_uj - start_uj
    return delta + max_energy_range_uj if delta < 0 else delta


def discover_zones(root: Path = POWERCAP_ROOT) -> list[RaplZone]:
    """The package and DRAM zones under ``root``, sorted by folder name.

    Counted: every ``package-*`` zone and every ``dram`` sub-zone (DRAM energy is not
    part of the package's). Not counted: ``core`` and ``uncore`` (inside the package's
    energy already) and ``psys`` (the whole platform, package included).

    Raises:
        OSError: a zone's ``name`` or ``max_energy_range_uj`` cannot be read.
        ValueError: ``max_energy_range_uj`` is not an integer.
    """
    zones = []
    for path in sorted(root.iterdir()):
        if not _ZONE_DIR.match(path.name):
            continue
        name = _read_text(path / "name").strip()
        if name.startswith("package") or name == "dram":
            zones.append(RaplZone(path, name, _read_int(path / "max_energy_range_uj")))
    return zones


class RaplProbe(Probe):
    """Energy of the CPU packages and their DRAM over the window, from RAPL counters.

    ``start()`` and ``stop()`` read ``energy_uj`` of every counted zone
    (``discover_zones``); the window's energy is the sum over zones of
    ``counter_delta_uj`` (wrap-around handled with ``max_energy_range_uj``), in joules.
    It measures cells on the ``cpu`` device; a GPU cell is measured by ``nvml-counter``.

    Accuracy limits: RAPL is modelled on Intel parts before Haswell and measured since
    (Hackenberg et al. 2015; Khan et al., ACM TOMPECS 2018); it covers every process on
    the package, not only the benchmark, so other load on the machine is counted too; the
    counters update about every 1 ms. Since the fix of CVE-2020-8694 (Linux 5.10 and
    stable back-ports) ``energy_uj`` is readable only by root.
    """

    name: ClassVar[str] = "rapl"
    phase: ClassVar[Phase] = "timing"
    metrics: ClassVar[tuple[MetricDef, ...]] = (ENERGY_TOTAL_J,)
    source: ClassVar[str] = "rapl"

    def __init__(self, device: str, root: Path = POWERCAP_ROOT) -> None:
        """Args:
        device: Torch device string; only ``cpu`` is measured.
        root: The powercap folder (tests pass a fake tree, see ``ReplayRapl``).
        """
        super().__init__(device)
        self.root = root
        self._zones: list[RaplZone] | None = None
        self._at_start: list[int] | None = None

    @property
    def zones(self) -> list[RaplZone]:
        """The counted zones (empty until ``unavailable()`` returned None)."""
        return list(self._zones or [])

    def unavailable(self) -> str | None:
        if self.device.split(":", 1)[0] != "cpu":
            return (
                f"rapl measures the CPU package; device {self.device!r} is measured by "
                "nvml-counter or nvml-power"
            )
        if self._zones is not None:
            return None
        if not self.root.is_dir():
            return (
                f"{self.root} does not exist: this kernel exposes no powercap energy "
                "counters (no intel_rapl driver, not an Intel/AMD CPU, or a VM or "
                "container that hides them)"
            )
        try:
            zones = discover_zones(self.root)
            for zone in zones:
                zone.read_uj()
        except PermissionError as err:
            return (
                f"cannot read RAPL counters: {err}. Since CVE-2020-8694 (Linux 5.10) "
                f"energy_uj is readable only by root: run as root or 'sudo chmod o+r "
                f"{self.root}/intel-rapl:*/energy_uj'"
            )
        except (OSError, ValueError) as err:
            return f"cannot read RAPL counters under {self.root}: {err}"
        if not zones:
            return f"no RAPL package zone under {self.root} (intel-rapl:N named package-N)"
        self._zones = zones
        return None

    def _ready(self) -> list[RaplZone]:
        reason = self.unavailable()
        if reason is not None:
            raise RuntimeError(f"rapl: {reason}")
        return self.zones

    def start(self) -> None:
        self._at_start = [zone.read_uj() for zone in self._ready()]

    def stop(self) -> list[Value]:
        zones = self._ready()
        at_start = self._at_start
        if at_start is None:
            raise RuntimeError("rapl: stop() called without start()")
        self._at_start = None
        total_uj = sum(
            counter_delta_uj(start, zone.read_uj(), zone.max_energy_range_uj)
            for zone, start in zip(zones, at_start, strict=True)
        )
        return [self._value(ENERGY_TOTAL_J.name, total_uj / 1e6, self.source)]
