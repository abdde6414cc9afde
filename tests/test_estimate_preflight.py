"""The prediction beside every measurement, pre-flight before the model loads, the roofline
fractions of harness/derive.py and the memory cap of harness/memlimit.py."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from harness import derive
from harness.estimate import cellstep
from harness.estimate.cellstep import PREFLIGHT_MARGIN, predict_cell
from harness.results import CellResult, Value
from harness.suite import suite_from_data
from harness.testing import TestResult as Result
from harness.testing import registry_with
from harness.worker import Worker

WORKLOAD = {"prompt_tokens": 16, "new_tokens": 4, "batch_size": 2}


def _cell(policy: dict[str, Any] | None = None, stack: Any = "baseline") -> Any:
    data = {
        "name": "t",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": WORKLOAD},
        "techniques": [stack],
        "policy": {"warmup": 0, "repeats": 1, **(policy or {})},
    }
    (cell,) = suite_from_data(data, registry_with(), devices=["cpu"]).cells
    return cell


@pytest.fixture(scope="module")
def worker() -> Worker:
    return Worker("cpu", registry_with())


@pytest.fixture(scope="module")
def measured(worker: Worker) -> Result:
    result = Result(worker.run(_cell()))
    assert result.status == "ok", result.reason
    return result


def _floor() -> float:
    prediction = predict_cell(_cell(), [], worker_env())
    assert prediction.estimate is not None and prediction.estimate.memory is not None
    return prediction.estimate.memory.floor_bytes


def worker_env() -> Any:
    from harness.environment import Environment

    return Environment("cpu", False)


def test_the_prediction_is_stored_beside_the_measurement(measured: Result) -> None:
    assert measured.value("estimate.weights_bytes") == measured.value("memory.weights_bytes")
    assert measured.value("estimate.kv_cache_bytes") == measured.value("memory.kv_cache_bytes")
    peak, predicted = (
        measured.value("memory.peak_alloc_bytes"),
        measured.value("estimate.peak_bytes"),
    )
    assert peak and predicted and abs(predicted / peak - 1) < 0.15
    tpot, decode = measured.value("latency.tpot_s"), measured.value("estimate.decode_s")
    assert tpot and decode
    assert measured.value("roofline.decode_fraction") == pytest.approx(decode / tpot)
    ops = measured.value("estimate.decode_ops")
    assert ops and measured.value("roofline.decode_flops") == pytest.approx(ops / tpot)
    assert measured.value("estimate.roof_bytes_s") and measured.value("estimate.roof_flops")


def test_a_cell_just_under_the_limit_still_runs(
    worker: Worker, measured: Result, monkeypatch: pytest.MonkeyPatch
) -> None:
    peak = measured.value("memory.peak_alloc_bytes")
    assert peak
    # the device has exactly the cell's measured peak: it fits, so pre-flight must let it run,
    # and so it must with a little less than what must be resident (within the margin)
    for room in (peak, _floor() / (1 + PREFLIGHT_MARGIN) * 1.001):
        monkeypatch.setattr(cellstep, "capacity", lambda *_a, room=room: room)
        result = worker.run(_cell())
        assert result.status == "ok", (room, result.reason)


def test_a_cell_that_cannot_fit_is_skipped_before_its_model_loads(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = _floor() / 1.5
    monkeypatch.setattr(cellstep, "capacity", lambda *_a: room)
    loads: list[Any] = []
    monkeypatch.setattr(worker, "load", lambda *a, **k: loads.append(a))
    result = worker.run(_cell())
    assert result.status == "skipped"
    assert re.match(r"predicted OOM: needs [\d.]+ GiB, device has [\d.]+ GiB", result.reason or "")
    assert "--no-preflight" in (result.reason or "")
    assert loads == []  # decided before the model loads
    monkeypatch.undo()
    monkeypatch.setattr(cellstep, "capacity", lambda *_a: room)
    assert worker.run(_cell({"preflight": False})).status == "ok"  # --no-preflight


def test_pre_flight_message_names_the_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cellstep, "capacity", lambda *_a: 1e6)
    prediction = predict_cell(_cell(), [], worker_env())
    with pytest.raises(Exception, match=r"\(weights 0\.012\d* \+ KV cache [\d.e-]+ GiB; predicted"):
        prediction.preflight()


def test_a_stack_without_an_estimate_stores_null_predictions_with_the_reason(
    worker: Worker,
) -> None:
    import bench_testplugins

    w = Worker("cpu", registry_with([bench_testplugins]))
    data = {
        "name": "t",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": WORKLOAD},
        "techniques": ["listy"],
        "policy": {"warmup": 0, "repeats": 1},
    }
    (cell,) = suite_from_data(data, w.registry, devices=["cpu"]).cells
    result = Result(w.run(cell))
    assert result.status == "ok", result.reason
    values = {v.name: v for v in result.result.values}
    assert values["estimate.peak_bytes"].value is None
    assert "listy implements no Technique.estimate" in (values["estimate.peak_bytes"].reason or "")
    assert "roofline.decode_fraction" not in values


def test_roofline_values_formulas() -> None:
    def v(name: str, value: float | None, reason: str | None = None) -> Value:
        return Value(name, value, "s", reason=reason)

    values = {
        "estimate.prefill_s": v("estimate.prefill_s", 0.002),
        "latency.ttft_s": v("latency.ttft_s", 0.008),
        "estimate.prefill_ops": v("estimate.prefill_ops", 4e9),
        "estimate.decode_s": v("estimate.decode_s", None, "acceptance rate unknown"),
        "estimate.decode_ops": v("estimate.decode_ops", 1e9),
        "latency.tpot_s": v("latency.tpot_s", 0.01),
    }
    out = derive.roofline_values(values)
    assert out["roofline.prefill_fraction"].value == pytest.approx(0.25)
    assert out["roofline.prefill_flops"].value == pytest.approx(5e11)
    assert out["roofline.decode_fraction"].value is None
    assert out["roofline.decode_fraction"].reason == "acceptance rate unknown"
    assert "roofline.decode_flops" not in out  # no prediction: no achieved number either
    assert derive.roofline_values({}) == {}


def test_roofline_values_carry_the_reciprocal_of_the_timings_interval() -> None:
    values = {
        "estimate.prefill_s": Value("estimate.prefill_s", 0.002, "s"),
        "estimate.prefill_ops": Value("estimate.prefill_ops", 4e9, "FLOP"),
        "latency.ttft_s": Value("latency.ttft_s", 0.008, "s", ci_low=0.005, ci_high=0.01, n=7),
    }
    out = derive.roofline_values(values)
    fraction, flops = out["roofline.prefill_fraction"], out["roofline.prefill_flops"]
    assert (fraction.ci_low, fraction.ci_high, fraction.n) == (0.2, 0.4, 7)  # 0.002 / [0.01, 0.005]
    assert (flops.ci_low, flops.ci_high) == (4e11, 8e11)


def test_the_memory_cap_turns_an_allocation_into_an_out_of_memory_error() -> None:
    script = textwrap.dedent(
        """
        import torch
        from harness import memlimit
        base = memlimit.data_bytes()
        memlimit.apply("cpu", 64 * 2**20, base)
        try:
            torch.empty(128 * 2**20, dtype=torch.uint8).fill_(1)
            print("allocated")
        except RuntimeError as exc:
            print("refused" if "can't allocate memory" in str(exc) else exc)
        memlimit.apply("cpu", None, base)
        torch.empty(128 * 2**20, dtype=torch.uint8).fill_(1)
        print("lifted")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.stdout.split() == ["refused", "lifted"], out.stderr


def test_a_failed_cpu_allocation_is_recorded_as_host_oom(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.worker as module

    def refuse(*_a: Any) -> Any:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 157286400 bytes. Error code 12"
        )

    monkeypatch.setattr(module, "measure", refuse)
    result: CellResult = worker.run(_cell())
    assert result.status == "oom_host"
    reason = result.reason or ""
    assert reason.startswith("host out of memory (RuntimeError: [enforce fail at alloc_cpu.cpp")
    assert "DefaultCPUAllocator: can't allocate memory: you tried to allocate 157286400" in reason
