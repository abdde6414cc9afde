"""Energy accounting: per-run and per-token energy, idle baseline and net energy, window
extension (a fake energy probe registered through a test plugin), nulls on this machine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from harness import Context, Prepared, Technique, hookimpl
from harness.probes import ENERGY_TOTAL_J, Phase, Probe, is_energy_probe
from harness.results import MetricDef, Value
from harness.suite import suite_from_data
from harness.testing import registry_with
from harness.worker import Worker
from harness.workloads.energy import (
    EnergyWindow,
    energy_unavailable_reason,
    energy_values,
    idle_power,
    measure_idle_power,
    null_energy_values,
)

ENERGY_NAMES = [
    "energy.total_j",
    "energy.j_per_token",
    "energy.net_j_per_token",
    "power.avg_w",
    "power.idle_w",
]


# ---------------------------------------------------------------- fakes


class ScriptedEnergyProbe(Probe):
    """Returns the next scripted energy (J, or None for a failed window) at each stop()."""

    name: ClassVar[str] = "scripted-energy"
    phase: ClassVar[Phase] = "timing"
    metrics: ClassVar[tuple[MetricDef, ...]] = (ENERGY_TOTAL_J,)

    def __init__(self, device: str, energies: list[float | None] | None = None) -> None:
        super().__init__(device)
        self.energies = list(energies or [])
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def stop(self) -> list[Value]:
        joules = self.energies.pop(0)
        if joules is None:
            return self.null_values("counter went backwards")
        return [Value("energy.total_j", joules, "J", n=1, source="scripted")]


class FakeClock:
    """A device clock (``clock(device) -> s``) that advances only when ``sleep`` is called."""

    def __init__(self) -> None:
        self.now = 100.0
        self.synced: list[str] = []

    def __call__(self, device: str) -> float:
        self.synced.append(device)
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# ---------------------------------------------------------------- accounting (exact)


def test_energy_values_gross_net_and_power_exact() -> None:
    # Window 1: 12 J over 2 s holding 3 runs; window 2: 10 J over 2.5 s holding 2 runs;
    # window 3: 8 J over 1 s holding 1 run. 4 tokens per run, idle 1.5 W.
    windows = [EnergyWindow(12.0, 2.0, 3), EnergyWindow(10.0, 2.5, 2), EnergyWindow(8.0, 1.0, 1)]
    idle = Value("power.idle_w", 1.5, "W", n=1, source="scripted")
    values = {v.name: v for v in energy_values(windows, idle, 4, "scripted")}

    # per run: 12/3 = 4, 10/2 = 5, 8/1 = 8 → median 5
    assert values["energy.total_j"] == Value(
        "energy.total_j", 5.0, "J", 4.0, 8.0, 3, "scripted", samples=(4.0, 5.0, 8.0)
    )
    # per token: 4/4, 5/4, 8/4
    assert values["energy.j_per_token"] == Value(
        "energy.j_per_token", 1.25, "J/token", 1.0, 2.0, 3, "scripted", samples=(1.0, 1.25, 2.0)
    )
    # net per token: (12 − 1.5·2)/12 = 0.75, (10 − 1.5·2.5)/8 = 0.78125, (8 − 1.5)/4 = 1.625
    assert values["energy.net_j_per_token"] == Value(
        "energy.net_j_per_token",
        0.78125,
        "J/token",
        0.75,
        1.625,
        3,
        "scripted",
        samples=(0.75, 0.78125, 1.625),
    )
    # average power: 12/2 = 6, 10/2.5 = 4, 8/1 = 8 W
    assert values["power.avg_w"] == Value(
        "power.avg_w", 6.0, "W", 4.0, 8.0, 3, "scripted", samples=(6.0, 4.0, 8.0)
    )
    assert values["power.idle_w"] is idle
    assert sorted(values) == sorted(ENERGY_NAMES)


def test_net_energy_is_null_with_reason_when_idle_failed() -> None:
    idle = Value("power.idle_w", None, "W", reason="idle power not measured: counter reset")
    values = {v.name: v for v in energy_values([EnergyWindow(2.0, 1.0, 1)], idle, 2, "s")}
    assert values["energy.j_per_token"].value == 1.0
    net = values["energy.net_j_per_token"]
    assert (net.value, net.reason) == (None, "idle power not measured: counter reset")
    assert values["power.idle_w"] is idle


def test_null_energy_values_carry_the_reason_and_units() -> None:
    values = null_energy_values("no meter")
    assert [(v.name, v.unit, v.value, v.reason) for v in values] == [
        ("energy.total_j", "J", None, "no meter"),
        ("energy.j_per_token", "J/token", None, "no meter"),
        ("energy.net_j_per_token", "J/token", None, "no meter"),
        ("power.avg_w", "W", None, "no meter"),
        ("power.idle_w", "W", None, "no meter"),
    ]


# ---------------------------------------------------------------- idle baseline (exact)


def test_idle_power_is_window_energy_over_its_length() -> None:
    clock = FakeClock()
    probe = ScriptedEnergyProbe("cuda:0", [45.0])
    idle = measure_idle_power(probe, "cuda:0", 1.5, clock=clock, sleep=clock.sleep)
    assert idle == Value("power.idle_w", 30.0, "W", n=1, source="scripted")  # 45 J / 1.5 s
    assert probe.started == 1
    assert clock.synced == ["cuda:0"] * 3  # before start, at the window's two ends


def test_idle_power_null_when_the_probe_gives_none() -> None:
    clock = FakeClock()
    probe = ScriptedEnergyProbe("cpu", [None])
    idle = measure_idle_power(probe, "cpu", 1.0, clock=clock, sleep=clock.sleep)
    assert idle.value is None
    assert idle.reason == "idle power not measured: counter went backwards"


def test_idle_power_is_measured_once_per_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Probe] = []

    def fake_measure(probe: Probe, device: str) -> Value:
        calls.append(probe)
        return Value("power.idle_w", 7.0, "W", n=1, source="scripted")

    monkeypatch.setattr("harness.workloads.energy.measure_idle_power", fake_measure)
    first, second = ScriptedEnergyProbe("cpu"), ScriptedEnergyProbe("cpu")
    assert idle_power(first, "cpu").value == 7.0
    assert idle_power(first, "cpu").value == 7.0
    assert idle_power(second, "cpu").value == 7.0
    assert calls == [first, second]


# ---------------------------------------------------------------- this machine


def test_reason_names_every_energy_probe() -> None:
    from harness.probes import register_probes

    probes = [cls("cpu") for cls in register_probes()]
    reason = energy_unavailable_reason(probes)
    assert [part.split(":")[0] for part in reason.split("; ")] == [
        "nvml-counter",
        "nvml-power",
        "rapl",
    ]
    assert energy_unavailable_reason([]) == "no energy probe is installed"


def test_every_energy_metric_is_null_with_reason_on_this_machine() -> None:
    from harness.testing import run_technique

    probes = [cls("cpu") for cls in registry_with().probes.values()]
    if any(is_energy_probe(p) and p.unavailable() is None for p in probes):
        pytest.skip("this machine has an energy meter")
    result = run_technique()
    assert result.status == "ok", result.reason
    values = {v.name: v for v in result.result.values}
    expected = energy_unavailable_reason(probes)
    for name in ENERGY_NAMES:
        assert values[name].value is None
        assert values[name].reason == expected


# ---------------------------------------------------------------- window extension


class Meter:
    """State shared by the test plugin's technique and probe."""

    generations: ClassVar[list[float]] = []  # start time of every generate() call
    windows: ClassVar[list[tuple[int, float, float]]] = []  # (runs, start, stop) per window


JOULES_PER_RUN = 3.0


class CountingEnergyProbe(Probe):
    """3 J for every generation that starts inside the window, 0 J when idle: exact."""

    name: ClassVar[str] = "counting-energy"
    phase: ClassVar[Phase] = "timing"
    metrics: ClassVar[tuple[MetricDef, ...]] = (ENERGY_TOTAL_J,)

    def start(self) -> None:
        self._at_start = (len(Meter.generations), time.perf_counter())

    def stop(self) -> list[Value]:
        count, began = self._at_start
        runs = len(Meter.generations) - count
        Meter.windows.append((runs, began, time.perf_counter()))
        return [Value("energy.total_j", JOULES_PER_RUN * runs, "J", n=1, source="counting")]


class CountGenerations(Technique):
    """Records the start of every ``model.generate`` call (the test's view of the runs)."""

    name = "count-generations"

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        model = prepared.model
        original = model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            Meter.generations.append(time.perf_counter())
            return original(*args, **kwargs)

        model.generate = generate
        prepared.cleanup.append(lambda: delattr(model, "generate"))
        return prepared


class MeterPlugin:
    @hookimpl
    def register_probes(self) -> list[type[Probe]]:
        return [CountingEnergyProbe]

    @hookimpl
    def register_techniques(self) -> list[type[Technique]]:
        return [CountGenerations]


@pytest.fixture
def meter() -> Iterator[type[Meter]]:
    Meter.generations.clear()
    Meter.windows.clear()
    yield Meter


def _run(policy: dict[str, Any], *, with_meter: bool) -> dict[str, Value]:
    registry = registry_with([MeterPlugin()])
    worker = Worker("cpu", registry)
    # Only the fake meter measures energy, whatever this machine has.
    worker.probes = [
        p
        for p in worker.probes
        if not is_energy_probe(p) or (with_meter and isinstance(p, CountingEnergyProbe))
    ]
    data = {
        "name": "energy-window",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": 8, "new_tokens": 2, "batch_size": 2}},
        "techniques": ["count-generations"],
        "policy": {"warmup": 1, **policy},
    }
    (cell,) = suite_from_data(data, registry, devices=["cpu"]).cells
    result = worker.run(cell)
    assert result.status == "ok", result.reason
    return {v.name: v for v in result.values}


def test_short_windows_are_extended_and_energy_is_per_run(meter: type[Meter]) -> None:
    min_window = 0.6
    values = _run({"repeats": 3, "min_energy_window_s": min_window}, with_meter=True)

    idle, *measured = meter.windows
    assert idle[0] == 0  # the idle window ran nothing
    assert len(measured) == 6  # 3 timed windows, then 3 prefill windows (energy per phase)
    timed, prefill = measured[:3], measured[3:]
    g = meter.generations[1:]  # after the warm-up
    for runs, began, ended in timed:
        assert ended - began >= min_window
        window_runs, g = g[:runs], g[runs:]
        # Minimal: the last run started less than min_window after the first one ...
        assert window_runs[-1] - window_runs[0] < min_window
        # ... and a window of one run is one whose run alone lasted min_window.
        assert runs >= 2 or g[0] - window_runs[0] >= min_window
    for runs, began, ended in prefill:  # one-token runs, extended the same way
        assert ended - began >= min_window
        g = g[runs:]
    assert len(g) == 1  # then the untimed memory run
    # A 2-token generation of the tiny model takes milliseconds: windows were extended.
    assert max(runs for runs, _, _ in timed) >= 2

    # Energy is per run and per token, exactly: 3 J per run, 2 × 2 tokens per run.
    assert values["energy.total_j"].value == JOULES_PER_RUN
    assert values["energy.total_j"].source == "counting"
    assert values["energy.j_per_token"].value == JOULES_PER_RUN / 4
    assert values["power.idle_w"].value == 0.0
    assert values["energy.net_j_per_token"].value == JOULES_PER_RUN / 4
    avg = values["power.avg_w"]
    assert avg.value is not None and avg.value > 0 and avg.n == 3
    # Latency comes from the first run of each window, not the whole window.
    e2e = values["latency.e2e_s"]
    assert e2e.value is not None and e2e.n == 3
    if all(runs >= 2 for runs, _, _ in timed):  # then every first run ended early
        assert e2e.ci_high is not None and e2e.ci_high < min_window  # max of 3 runs


def test_without_an_energy_probe_each_window_holds_one_run(meter: type[Meter]) -> None:
    values = _run({"repeats": 3, "min_energy_window_s": 5.0}, with_meter=False)
    assert meter.windows == []
    assert len(meter.generations) == 1 + 3 + 1  # warm-up, repeats, memory run
    assert values["energy.total_j"].value is None
    assert values["energy.total_j"].reason
