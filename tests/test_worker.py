"""The worker's own numbers on the real default model: exact byte counts (issue 2 DoD)."""

from __future__ import annotations

import pytest

from harness.testing import run_technique

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline():
    return run_technique(
        "baseline",
        model="smollm2-135m",
        workload={"prompt_tokens": 40, "new_tokens": 5, "batch_size": 3},
    )


def test_kv_cache_bytes_equal_the_formula(baseline) -> None:
    assert baseline.status == "ok", baseline.reason
    # b × n × l × 2 × h × c × bytes: 3 prompts, 40 + 5 − 1 cached tokens, 30 layers,
    # K and V, 3 KV heads, 64 channels, fp32.
    assert baseline.value("memory.kv_cache_bytes") == 3 * 44 * 30 * 2 * 3 * 64 * 4


def test_weights_bytes_equal_parameters_plus_buffers(baseline) -> None:
    from harness.models import BuiltinSource

    model = BuiltinSource().load("smollm2-135m").model
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert params == 134_515_008 * 4  # tied embedding counted once
    assert baseline.value("memory.weights_bytes") == params + buffers


def test_latency_metrics_are_consistent(baseline) -> None:
    ttft = baseline.value("latency.ttft_s")
    e2e = baseline.value("latency.e2e_s")
    assert 0 < ttft < e2e
    values = {v.name: v for v in baseline.result.values}
    assert values["latency.tpot_s"].unit == "s"
    # CPU: peak = weights + the profiler's window peak, which holds at least the KV cache.
    window = baseline.value("memory.window_peak_bytes")
    assert window >= baseline.value("memory.kv_cache_bytes")
    assert (
        baseline.value("memory.peak_alloc_bytes") == baseline.value("memory.weights_bytes") + window
    )
    assert values["energy.j_per_token"].value is None
    assert values["energy.j_per_token"].reason


def test_bf16_halves_weights_and_kv() -> None:
    bf16 = run_technique(
        {"precision": {"dtype": "bf16"}},
        model="smollm2-135m",
        workload={"prompt_tokens": 40, "new_tokens": 5, "batch_size": 3},
    )
    assert bf16.value("memory.kv_cache_bytes") == 3 * 44 * 30 * 2 * 3 * 64 * 2
