"""RAPL probe on a replayed powercap tree: zones counted, wrap-around, unavailable reasons."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.probes import rapl
from harness.probes.rapl import RaplProbe, counter_delta_uj, discover_zones
from harness.probes.replay import ReplayRapl
from harness.results import Value

RANGE = 262_143_328_850  # max_energy_range_uj of a 32-bit counter of 61.035 µJ units

TWO_SOCKETS = {
    "intel-rapl:0": "package-0",
    "intel-rapl:0:0": "core",
    "intel-rapl:0:1": "uncore",
    "intel-rapl:0:2": "dram",
    "intel-rapl:1": "package-1",
    "intel-rapl:1:0": "dram",
    "intel-rapl:2": "psys",
}


def test_counts_packages_and_dram_only(tmp_path: Path) -> None:
    ReplayRapl(tmp_path, TWO_SOCKETS)
    zones = discover_zones(tmp_path)
    assert [(z.path.name, z.name) for z in zones] == [
        ("intel-rapl:0", "package-0"),
        ("intel-rapl:0:2", "dram"),
        ("intel-rapl:1", "package-1"),
        ("intel-rapl:1:0", "dram"),
    ]
    assert {z.max_energy_range_uj for z in zones} == {RANGE}


def test_window_energy_is_the_sum_of_counted_zones(tmp_path: Path) -> None:
    fake = ReplayRapl(tmp_path, TWO_SOCKETS, energy_uj=1_000_000)
    probe = RaplProbe("cpu", root=tmp_path)
    assert probe.unavailable() is None
    probe.start()
    fake.set("intel-rapl:0", 13_500_000)  # +12.5 J
    fake.set("intel-rapl:0:2", 3_000_000)  # +2 J
    fake.set("intel-rapl:1", 11_000_000)  # +10 J
    fake.set("intel-rapl:1:0", 1_250_000)  # +0.25 J
    fake.set("intel-rapl:0:0", 999_000_000)  # core: inside package-0, not counted again
    fake.set("intel-rapl:2", 999_000_000)  # psys: the whole platform, not counted
    assert probe.stop() == [Value("energy.total_j", 24.75, "J", n=1, source="rapl")]


def test_wrap_around_is_exact(tmp_path: Path) -> None:
    fake = ReplayRapl(tmp_path, {"intel-rapl:0": "package-0"}, energy_uj=RANGE - 2_000_000)
    probe = RaplProbe("cpu", root=tmp_path)
    probe.start()
    fake.set("intel-rapl:0", 3_000_000)  # wrapped: 2 J before the wrap, 3 J after
    assert probe.stop() == [Value("energy.total_j", 5.0, "J", n=1, source="rapl")]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(10, 25, 15), (0, 0, 0), (RANGE - 5, 7, 12), (RANGE, 0, 0), (1, 0, RANGE - 1)],
)
def test_counter_delta(start: int, end: int, expected: int) -> None:
    assert counter_delta_uj(start, end, RANGE) == expected


def test_amd_package_without_dram(tmp_path: Path) -> None:
    # AMD Zen (Linux >= 5.8): the same intel-rapl control type, package and core zones.
    fake = ReplayRapl(tmp_path, {"intel-rapl:0": "package-0", "intel-rapl:0:0": "core"})
    probe = RaplProbe("cpu", root=tmp_path)
    probe.start()
    fake.set("intel-rapl:0", 4_000_000)
    assert probe.stop() == [Value("energy.total_j", 4.0, "J", n=1, source="rapl")]
    assert [z.name for z in probe.zones] == ["package-0"]


def test_mmio_duplicate_is_not_counted(tmp_path: Path) -> None:
    fake = ReplayRapl(tmp_path, {"intel-rapl:0": "package-0", "intel-rapl-mmio:0": "package-0"})
    probe = RaplProbe("cpu", root=tmp_path)
    probe.start()
    fake.set("intel-rapl:0", 1_000_000)
    fake.set("intel-rapl-mmio:0", 1_000_000)
    assert probe.stop() == [Value("energy.total_j", 1.0, "J", n=1, source="rapl")]


def test_unavailable_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = RaplProbe("cpu", root=tmp_path / "absent").unavailable()
    assert missing is not None and missing.startswith(f"{tmp_path / 'absent'} does not exist")

    (tmp_path / "empty").mkdir()
    assert RaplProbe("cpu", root=tmp_path / "empty").unavailable() == (
        f"no RAPL package zone under {tmp_path / 'empty'} (intel-rapl:N named package-N)"
    )

    ReplayRapl(tmp_path / "gpu", {"intel-rapl:0": "package-0"})
    assert RaplProbe("cuda:0", root=tmp_path / "gpu").unavailable() == (
        "rapl measures the CPU package; device 'cuda:0' is measured by nvml-counter or nvml-power"
    )

    ReplayRapl(tmp_path / "locked", {"intel-rapl:0": "package-0"})
    real_read = rapl._read_text

    def root_only(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(rapl, "_read_text", root_only)
    reason = RaplProbe("cpu", root=tmp_path / "locked").unavailable()
    assert reason is not None
    assert reason.startswith("cannot read RAPL counters: [Errno 13] Permission denied")
    assert "readable only by root" in reason
    with pytest.raises(RuntimeError, match="rapl: cannot read RAPL counters"):
        RaplProbe("cpu", root=tmp_path / "locked").start()


def test_garbage_counter_is_unavailable_not_an_exception(tmp_path: Path) -> None:
    fake = ReplayRapl(tmp_path, {"intel-rapl:0": "package-0"})
    (fake.root / "intel-rapl:0" / "max_energy_range_uj").write_text("n/a\n")
    reason = RaplProbe("cpu", root=tmp_path).unavailable()
    assert reason is not None and reason.startswith(f"cannot read RAPL counters under {tmp_path}")


def test_stop_without_start(tmp_path: Path) -> None:
    ReplayRapl(tmp_path, {"intel-rapl:0": "package-0"})
    with pytest.raises(RuntimeError, match="stop\\(\\) called without start\\(\\)"):
        RaplProbe("cpu", root=tmp_path).stop()


def _counted_zones_here(root: Path) -> list[Path]:
    """The zones RAPL should count on this machine, found without the probe's code."""
    zones = []
    for path in sorted(root.glob("intel-rapl:*")):
        if not re.fullmatch(r"intel-rapl:\d+(:\d+)?", path.name):
            continue  # intel-rapl-mmio:N repeats a package
        name = (path / "name").read_text().strip()
        if name.startswith("package") or name == "dram":
            zones.append(path)
    return zones


def check_rapl_at(root: Path, busy: Callable[[], object]) -> str:
    """Check the probe against the powercap tree at ``root``; return what was checked.

    Without RAPL the reason must name the missing piece; with readable counters the probe
    must read positive energy over a window in which ``busy`` runs.
    """
    probe = RaplProbe("cpu", root=root)
    reason = probe.unavailable()
    if not root.is_dir():
        assert reason is not None
        assert reason.startswith(f"{root} does not exist: this kernel exposes no powercap")
        return "no powercap"
    zones = _counted_zones_here(root)
    if not zones:
        assert reason == f"no RAPL package zone under {root} (intel-rapl:N named package-N)"
        return "no package zone"
    try:
        for zone in zones:
            (zone / "energy_uj").read_text()
    except PermissionError:
        assert reason is not None and "readable only by root" in reason
        return "root only"
    assert reason is None
    assert [zone.path for zone in probe.zones] == zones
    probe.start()
    busy()
    (value,) = probe.stop()
    assert (value.name, value.unit, value.source) == ("energy.total_j", "J", "rapl")
    assert value.value is not None and value.value > 0
    return "read"


def test_this_machine() -> None:
    # Busy by work done, not by time: a few hundred ms of one core.
    checked = check_rapl_at(rapl.POWERCAP_ROOT, lambda: sum(i * i for i in range(3_000_000)))
    assert checked in ("no powercap", "no package zone", "root only", "read")


def test_the_machine_check_fails_when_the_probe_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above holds on replayed trees of each kind, and catches a wrong probe."""
    assert check_rapl_at(tmp_path / "absent", lambda: None) == "no powercap"
    ReplayRapl(tmp_path / "psys", {"intel-rapl:0": "psys"})
    assert check_rapl_at(tmp_path / "psys", lambda: None) == "no package zone"
    fake = ReplayRapl(tmp_path / "two", TWO_SOCKETS)
    assert check_rapl_at(tmp_path / "two", lambda: fake.set("intel-rapl:1", 2_000_000)) == "read"
    with pytest.raises(AssertionError):  # a counter that did not move: no energy read
        check_rapl_at(tmp_path / "two", lambda: None)
    monkeypatch.setattr(rapl, "discover_zones", lambda root: [])
    with pytest.raises(AssertionError):  # the probe misses zones that exist
        check_rapl_at(tmp_path / "two", lambda: None)
