"""RAPL probe on a replayed powercap tree: zones counted, wrap-around, unavailable reasons."""

from __future__ import annotations

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


def test_this_machine() -> None:
    probe = RaplProbe("cpu")
    reason = probe.unavailable()
    if reason is None:
        probe.start()
        (value,) = probe.stop()
        assert value.value is not None and value.value >= 0
    else:
        assert reason  # e.g. "/sys/class/powercap does not exist: ..."
