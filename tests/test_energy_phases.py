"""Energy per phase: prefill and decode energy and J/token, idle-subtracted, with provenance;
exact with scripted windows, end to end with a replayed meter that charges per token."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest

from harness import Context, Prepared, Technique, hookimpl
from harness.probes import ENERGY_TOTAL_J, Phase, Probe, is_energy_probe
from harness.results import MetricDef, Value
from harness.suite import suite_from_data
from harness.testing import ReplayRapl, registry_with
from harness.worker import Worker
from harness.workloads.energy import PHASE_NAMES, EnergyWindow, phase_values

# ---------------------------------------------------------------- formulas (exact)


def test_phase_values_split_gross_and_net_energy_exactly() -> None:
    # Full runs: 30 J over 3 s in 2 runs, 16 J over 2 s in 1 run. Prefill (one-token)
    # runs: 6 J over 1 s in 3 runs, 4 J over 1 s in 2 runs. 8 prompt tokens and 4 decoded
    # tokens per run; idle 1 W.
    full = [EnergyWindow(30.0, 3.0, 2), EnergyWindow(16.0, 2.0, 1)]
    prefill = [EnergyWindow(6.0, 1.0, 3), EnergyWindow(4.0, 1.0, 2)]
    idle = Value("power.idle_w", 1.0, "W", n=1, source="scripted")
    got = {v.name: v for v in phase_values(full, prefill, idle, 8, 4, "scripted")}

    assert sorted(got) == sorted(PHASE_NAMES)
    assert got["energy.prefill_j"].samples == (2.0, 2.0)  # 6/3, 4/2
    assert got["energy.prefill_j_per_token"].value == 0.25  # 2 J / 8 tokens
    assert got["energy.decode_j"].samples == (13.0, 14.0)  # 30/2 − 2, 16/1 − 2
    assert got["energy.decode_j_per_token"].samples == (3.25, 3.5)
    # net prefill: (6 − 1·1)/3 / 8, (4 − 1·1)/2 / 8
    assert got["energy.net_prefill_j_per_token"].samples == pytest.approx((5 / 24, 1.5 / 8))
    # net decode: ((30 − 3)/2 − 5/3) / 4, ((16 − 2)/1 − 1.5) / 4
    expected = ((13.5 - 5 / 3) / 4, (14.0 - 1.5) / 4)
    assert got["energy.net_decode_j_per_token"].samples == pytest.approx(expected)
    assert all(v.source == "scripted; prefill from one-token runs" for v in got.values())
    assert got["energy.decode_j"].n == 2


def test_net_phase_energy_is_null_with_the_idle_reason() -> None:
    idle = Value("power.idle_w", None, "W", reason="idle power not measured: reset")
    got = {
        v.name: v
        for v in phase_values([EnergyWindow(9, 1, 1)], [EnergyWindow(1, 1, 1)], idle, 1, 2, "s")
    }
    assert got["energy.decode_j_per_token"].value == 4.0  # (9 − 1) / 2
    for name in ("energy.net_prefill_j_per_token", "energy.net_decode_j_per_token"):
        assert (got[name].value, got[name].reason) == (None, "idle power not measured: reset")


# ---------------------------------------------------------------- end to end (replayed meter)

PREFILL_J = 1.0  # per prompt token and row
DECODE_J = 10.0  # per decoded token after the first, and row


class Calls:
    """Every generate call of the cell: (start time, rows, prompt tokens, new tokens)."""

    seen: ClassVar[list[tuple[float, int, int, int]]] = []


class TokenEnergyProbe(Probe):
    """Charges each generation that starts in the window PREFILL_J per prompt token and
    DECODE_J per token after the first, for each row: the exact split to recover."""

    name: ClassVar[str] = "token-energy"
    phase: ClassVar[Phase] = "timing"
    metrics: ClassVar[tuple[MetricDef, ...]] = (ENERGY_TOTAL_J,)

    def start(self) -> None:
        self._first = len(Calls.seen)

    def stop(self) -> list[Value]:
        joules = sum(
            rows * (PREFILL_J * prompt + DECODE_J * (new - 1))
            for _, rows, prompt, new in Calls.seen[self._first :]
        )
        return [Value("energy.total_j", joules, "J", n=1, source="replayed")]


class RecordGenerations(Technique):
    """Records the shape of every ``model.generate`` call."""

    name = "record-generations"

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        model = prepared.model
        original = model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            ids = kwargs["input_ids"]
            new = int(kwargs["max_new_tokens"])
            Calls.seen.append((time.perf_counter(), int(ids.shape[0]), int(ids.shape[1]), new))
            return original(*args, **kwargs)

        model.generate = generate
        prepared.cleanup.append(lambda: delattr(model, "generate"))
        return prepared


class Plugin:
    @hookimpl
    def register_probes(self) -> list[type[Probe]]:
        return [TokenEnergyProbe]

    @hookimpl
    def register_techniques(self) -> list[type[Technique]]:
        return [RecordGenerations]


def test_generate_splits_energy_into_prefill_and_decode() -> None:
    Calls.seen.clear()
    registry = registry_with([Plugin()])
    worker = Worker("cpu", registry)
    worker.probes = [p for p in worker.probes if not is_energy_probe(p)]
    worker.probes.append(TokenEnergyProbe("cpu"))
    data = {
        "name": "phases",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": 12, "new_tokens": 5, "batch_size": 2}},
        "techniques": ["record-generations"],
        "policy": {"warmup": 0, "repeats": 3, "min_energy_window_s": 0.05},
    }
    (cell,) = suite_from_data(data, registry, devices=["cpu"]).cells
    result = worker.run(cell)
    assert result.status == "ok", result.reason
    got = {v.name: v for v in result.values}

    assert got["energy.prefill_j"].value == 2 * 12 * PREFILL_J
    assert got["energy.prefill_j_per_token"].value == PREFILL_J
    assert got["energy.decode_j"].value == 2 * 4 * DECODE_J
    assert got["energy.decode_j_per_token"].value == DECODE_J
    # The idle window ran nothing, so 0 W: net equals gross.
    assert got["power.idle_w"].value == 0.0
    assert got["energy.net_prefill_j_per_token"].value == PREFILL_J
    assert got["energy.net_decode_j_per_token"].value == DECODE_J
    assert got["energy.decode_j"].n == 3  # one pair of windows per timed repeat
    assert got["energy.decode_j"].source == "replayed; prefill from one-token runs"
    # Prefill windows ran one-token generations of the same prompts.
    assert {(rows, prompt) for _, rows, prompt, new in Calls.seen if new == 1} == {(2, 12)}


def test_without_a_meter_every_phase_metric_is_null_with_the_reason() -> None:
    worker = Worker("cpu", registry_with())
    worker.probes = [p for p in worker.probes if not is_energy_probe(p)]
    data = {
        "name": "no-meter",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": 8, "new_tokens": 2}},
        "techniques": ["baseline"],
        "policy": {"warmup": 0, "repeats": 1},
    }
    (cell,) = suite_from_data(data, worker.registry, devices=["cpu"]).cells
    got = {v.name: v for v in worker.run(cell).values}
    for name in PHASE_NAMES:
        assert got[name].value is None
        assert got[name].reason == "no energy probe is installed"


def test_rapl_replay_gives_phase_energy_with_its_source(tmp_path: Any) -> None:
    """The RAPL probe on a replayed powercap tree: counters that advance per generation."""
    from harness.probes.rapl import RaplProbe

    rapl = ReplayRapl(tmp_path, {"intel-rapl:0": "package-0"})
    energy_uj = [0]

    class Advancing(RecordGenerations):
        name = "advance-rapl"

        def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
            prepared = super().prepare(prepared, ctx)
            model = prepared.model
            recorded = model.generate

            def generate(*args: Any, **kwargs: Any) -> Any:
                out = recorded(*args, **kwargs)
                rows, prompt, new = Calls.seen[-1][1:]
                energy_uj[0] += int(1e6 * rows * (PREFILL_J * prompt + DECODE_J * (new - 1)))
                rapl.set("intel-rapl:0", energy_uj[0])
                return out

            model.generate = generate
            return prepared

    class RaplPlugin:
        @hookimpl
        def register_techniques(self) -> list[type[Technique]]:
            return [Advancing]

    Calls.seen.clear()
    registry = registry_with([RaplPlugin()])
    worker = Worker("cpu", registry)
    worker.probes = [p for p in worker.probes if not is_energy_probe(p)]
    probe = RaplProbe("cpu", rapl.root)
    assert probe.unavailable() is None
    worker.probes.append(probe)
    data = {
        "name": "rapl-phases",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": 8, "new_tokens": 3}},
        "techniques": ["advance-rapl"],
        "policy": {"warmup": 0, "repeats": 2, "min_energy_window_s": 0.0},
    }
    (cell,) = suite_from_data(data, registry, devices=["cpu"]).cells
    result = worker.run(cell)
    assert result.status == "ok", result.reason
    got = {v.name: v for v in result.values}
    assert got["energy.prefill_j_per_token"].value == pytest.approx(PREFILL_J)
    assert got["energy.decode_j_per_token"].value == pytest.approx(DECODE_J)
    assert (got["energy.decode_j"].source or "").startswith("rapl")
