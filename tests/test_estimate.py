"""The analytic model (harness/estimate): per-layer rows against formulas derived by hand,
seed 003's Table 1, memory against the bytes the tensors hold, the device table, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.errors import BenchError, ModelError
from harness.estimate import (
    Architecture,
    Estimate,
    Shape,
    estimate,
    find_device,
    load_architecture,
    load_devices,
)
from harness.estimate.devices import match_gpu
from harness.estimate.result import StageEstimate

DATA = Path(__file__).parent / "data"
LLAMA2 = DATA / "llama-2-7b" / "config.json"
LLAMA3_70B = DATA / "llama-3.1-70b" / "config.json"
TINY = Architecture.from_config(
    {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 1000,
        "tie_word_embeddings": True,
        "dtype": "float32",
    },
    name="tiny",
)


def rows(stage: StageEstimate | None) -> dict[str, tuple[float, float, float, float, float, float]]:
    """name -> (ops, load_weight, load_act, store_act, load_kv, store_kv) per occurrence."""
    assert stage is not None
    return {
        r.row.name: (
            r.row.ops,
            r.row.load_weight,
            r.row.load_act,
            r.row.store_act,
            r.row.load_kv,
            r.row.store_kv,
        )
        for r in stage.rows
    }


# ------------------------------------------------------------------ per-layer formulas


def test_rows_of_a_small_architecture_match_hand_derived_formulas() -> None:
    # b = 2 sequences, p = 8 prompt tokens, 4 new: decode attends over 8 + 4 − 1 = 11 entries.
    e = estimate(TINY, "a100-80gb", Shape(prompt_tokens=8, new_tokens=4, batch_size=2))
    pre, dec = rows(e.prefill), rows(e.decode)
    a = 4  # float32
    # q_proj 64×64: 2·b·q·in·out ops; weights in·out·a; loads b·q·in·a; stores b·q·out·a
    assert pre["q_proj"] == (2 * 2 * 8 * 64 * 64, 64 * 64 * a, 2 * 8 * 64 * a, 2 * 8 * 64 * a, 0, 0)
    # k_proj 64×32 (2 KV heads × 16): the output goes into the KV cache
    assert pre["k_proj"] == (2 * 2 * 8 * 64 * 32, 64 * 32 * a, 2 * 8 * 64 * a, 0, 0, 2 * 8 * 32 * a)
    assert dec["down_proj"] == (2 * 2 * 1 * 128 * 64, 128 * 64 * a, 2 * 128 * a, 2 * 64 * a, 0, 0)
    # fused attention at decode: 4·b·q·n·d·h + 5·b·h·q·n ops; Q in, O out, K and V once
    assert dec["attention"] == (
        4 * 2 * 1 * 11 * 16 * 4 + 5 * 2 * 4 * 1 * 11,
        0,
        2 * 1 * 4 * 16 * a,
        2 * 1 * 4 * 16 * a,
        2 * 2 * 11 * 2 * 16 * a,
        0,
    )
    # SiLU(gate)·up over I = 128: 2·b·q·I ops, loads two I-wide tensors, stores one
    assert pre["mlp_act"] == (2 * 2 * 8 * 128, 0, 2 * 2 * 8 * 128 * a, 2 * 8 * 128 * a, 0, 0)
    assert pre["attn_norm"] == (7 * 2 * 8 * 64, 0, 2 * 8 * 64 * a, 2 * 8 * 64 * a, 0, 0)
    # generate computes the last position's logits at prefill only
    assert pre["lm_head"][0] == 2 * 2 * 1 * 64 * 1000
    counts = {r.row.name: r.row.count for r in e.prefill.rows} if e.prefill else {}
    assert counts["q_proj"] == 2 and counts["lm_head"] == 1


def test_unfused_attention_rows() -> None:
    e = estimate(TINY, "a100-80gb", Shape(prompt_tokens=8, batch_size=2), attention="unfused")
    pre = rows(e.prefill)
    a = 4
    scores = 2 * 4 * 8 * 8 * a  # b·h·q·n·a
    assert pre["qk_matmul"] == (
        2 * 2 * 8 * 8 * 16 * 4,
        0,
        2 * 8 * 4 * 16 * a,
        scores,
        2 * 8 * 2 * 16 * a,
        0,
    )
    assert pre["softmax"] == (5 * 2 * 4 * 8 * 8, 0, scores, scores, 0, 0)
    assert pre["sv_matmul"][2:5] == (scores, 2 * 8 * 4 * 16 * a, 2 * 8 * 2 * 16 * a)
    assert "attention" not in pre


def test_time_is_the_larger_of_compute_and_memory_time() -> None:
    e = estimate(TINY, "a100-80gb", Shape(prompt_tokens=512, new_tokens=2, batch_size=8))
    device = find_device("a100-80gb")
    peak, bandwidth = device.peak("float32"), device.bandwidth_bytes_s
    assert peak
    assert e.prefill is not None
    for r in e.prefill.rows:
        expected = max(r.row.ops / peak, r.row.memory_access / bandwidth)
        assert r.time_s == pytest.approx(expected)
        assert r.bound == ("memory" if r.intensity < peak / bandwidth else "compute")
    assert e.prefill.step_s == pytest.approx(sum(r.total_time_s for r in e.prefill.rows))


# ------------------------------------------------------------------ seed 003, Table 1

# Seed 003 (Yuan et al. 2024) Table 1: Llama-2-7b on an A6000, sequence 2048, batch 1, fp16.
# The table's figures were not available here; these are its rows derived by hand from the
# architecture (H 4096, I 11008, 32 heads of 128, s 2048, a = 2 bytes) with LLM-Viewer's
# formulas: (OPs, memory access bytes) for prefill, then for one decode step at KV 2048.
H, I, S, A = 4096, 11008, 2048, 2  # noqa: E741 (the paper's names)
TABLE_1 = {
    "q_proj": (2 * S * H * H, H * H * A + 2 * S * H * A, 2 * H * H, H * H * A + 2 * H * A),
    "k_proj": (2 * S * H * H, H * H * A + 2 * S * H * A, 2 * H * H, H * H * A + 2 * H * A),
    "v_proj": (2 * S * H * H, H * H * A + 2 * S * H * A, 2 * H * H, H * H * A + 2 * H * A),
    "o_proj": (2 * S * H * H, H * H * A + 2 * S * H * A, 2 * H * H, H * H * A + 2 * H * A),
    "gate_proj": (2 * S * H * I, H * I * A + S * (H + I) * A, 2 * H * I, H * I * A + (H + I) * A),
    "up_proj": (2 * S * H * I, H * I * A + S * (H + I) * A, 2 * H * I, H * I * A + (H + I) * A),
    "down_proj": (2 * S * H * I, H * I * A + S * (H + I) * A, 2 * H * I, H * I * A + (H + I) * A),
    # scores 32·S·S·A stored, Q and K loaded (S·H·A each); decode: q, K (S·H·A), scores
    "qk_matmul": (
        2 * S * S * H,
        32 * S * S * A + 2 * S * H * A,
        2 * S * H,
        H * A + S * H * A + 32 * S * A,
    ),
    "sv_matmul": (
        2 * S * S * H,
        32 * S * S * A + 2 * S * H * A,
        2 * S * H,
        32 * S * A + S * H * A + H * A,
    ),
    "softmax": (5 * 32 * S * S, 2 * 32 * S * S * A, 5 * 32 * S, 2 * 32 * S * A),
    "attn_norm": (7 * S * H, 2 * S * H * A, 7 * H, 2 * H * A),
    "attn_add": (S * H, 2 * S * H * A, H, 2 * H * A),
}
# As the table prints them (LLM-Viewer's rounding): prefill OPs, memory, intensity, bound.
TABLE_1_PRINTED = {
    "q_proj": ("68.7G", "67.1MB", 1024, "compute"),
    "gate_proj": ("185G", "152MB", 1215, "compute"),
    "qk_matmul": ("34.4G", "302MB", 114, "memory"),
    "softmax": ("671M", "537MB", 1.25, "memory"),
    "attn_norm": ("58.7M", "33.6MB", 1.75, "memory"),
    "attn_add": ("8.39M", "33.6MB", 0.25, "memory"),
}


def _table_1() -> Estimate:
    return estimate(
        str(LLAMA2),
        "a6000",
        Shape(prompt_tokens=2048, new_tokens=1, batch_size=1),
        dtype="fp16",
        attention="unfused",
    )


def test_seed_003_table_1_layer_by_layer() -> None:
    from harness.estimate.render import si

    e = _table_1()
    pre = {r.row.name: r for r in e.prefill.rows} if e.prefill else {}
    dec = {r.row.name: r for r in e.decode.rows} if e.decode else {}
    for name, (p_ops, p_bytes, d_ops, d_bytes) in TABLE_1.items():
        assert pre[name].row.ops == p_ops, name
        assert pre[name].row.memory_access == p_bytes, name
        assert dec[name].row.ops == d_ops, name
        assert dec[name].row.memory_access == d_bytes, name
        assert dec[name].bound == "memory", name  # decode at batch 1 is memory-bound
    for name, (ops, moved, intensity, bound) in TABLE_1_PRINTED.items():
        r = pre[name]
        assert (si(r.row.ops), si(r.row.memory_access, "B")) == (ops, moved), name
        assert r.intensity == pytest.approx(intensity, abs=0.5), name
        assert r.bound == bound, name
    # the roofline of the A6000 in LLM-Viewer: 768 GB/s, 309.7 / 2 TFLOP/s fp16
    assert e.device.bandwidth_bytes_s == 768e9
    assert e.device.peak("float16") == pytest.approx(154.8e12)


def test_table_1_from_the_cli_in_json() -> None:
    from harness.cli import cli

    out = CliRunner().invoke(
        cli,
        [
            "estimate",
            "--model",
            str(LLAMA2),
            "--device",
            "a6000",
            "--prompt-tokens",
            "2048",
            "--batch-size",
            "1",
            "--dtype",
            "fp16",
            "--attention",
            "unfused",
            "--format",
            "json",
        ],
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    for key in ("time_s",):
        assert doc["prefill"][key] > 0 and doc["decode"][key] > 0
    assert doc["memory"]["weights_bytes"] == pytest.approx(6_738_415_616 * 2 + 128 * 2)
    assert doc["memory"]["kv_cache_bytes"] == 2048 * 32 * 2 * 4096 * 2
    assert doc["memory"]["peak_bytes"] > doc["memory"]["weights_bytes"]
    layers = {(r["stage"], r["name"]): r for r in doc["layers"]}
    q = layers[("prefill", "q_proj")]
    assert (q["ops"], q["memory_access"], q["bound"]) == (
        TABLE_1["q_proj"][0],
        TABLE_1["q_proj"][1],
        "compute",
    )
    assert q["arithmetic_intensity"] == pytest.approx(1024, rel=1e-3)


# ------------------------------------------------------------------ memory


def test_llama2_parameters_and_kv_cache_follow_the_survey_equations() -> None:
    arch = load_architecture(str(LLAMA2))
    assert arch.n_params == 6_738_415_616  # Llama-2-7b's parameter count
    e = estimate(arch, "a6000", Shape(prompt_tokens=4096, new_tokens=1, batch_size=4), dtype="fp16")
    assert e.memory is not None
    # eq. 2: b × n × l × 2 × h × c × bytes
    assert e.memory.kv_cache_bytes == 4 * 4096 * 32 * 2 * 32 * 128 * 2
    assert e.memory.weights_bytes == arch.n_params * 2 + 128 * 2


def test_techniques_change_bytes_as_their_formulas_say() -> None:
    shape = Shape(prompt_tokens=1024, new_tokens=1, batch_size=1)
    plain = estimate(str(LLAMA2), "a6000", shape, dtype="fp16")
    gqa = estimate(str(LLAMA2), "a6000", shape, dtype="fp16", stack=[{"gqa": {"kv_heads": 8}}])
    kv2 = estimate(
        str(LLAMA2),
        "a6000",
        shape,
        dtype="fp16",
        stack=[{"kv-quant": {"bits": 2, "residual_length": 32}}],
    )
    w4 = estimate(
        str(LLAMA2),
        "a6000",
        shape,
        dtype="fp16",
        stack=[{"weight-quant": {"bits": 4, "backend": "hqq"}}],
    )
    assert plain.memory and gqa.memory and kv2.memory and w4.memory
    assert gqa.memory.kv_cache_bytes == plain.memory.kv_cache_bytes / 4
    # 2-bit codes plus a 2×fp16 scale and zero per 64 values: 2/16 + 4/(64·2) of fp16
    assert kv2.memory.kv_cache_bytes == pytest.approx(
        plain.memory.kv_cache_bytes * (2 / 16 + 4 / 128)
    )
    # 4-bit codes plus 2 fp16 metadata values per group of 64: 4.5 bits per linear weight
    linear = sum(lin.numel for lin in load_architecture(str(LLAMA2)).linears())
    skipped = 32000 * 4096  # lm_head is left in fp16
    assert w4.memory.quant_meta_bytes == pytest.approx((linear - skipped) / 64 * 4)
    assert plain.decode and w4.decode
    assert w4.decode.time_s is not None and plain.decode.time_s is not None
    assert w4.decode.time_s < plain.decode.time_s / 2  # batch-1 decode is memory-bound


def test_weights_and_kv_bytes_equal_the_tensors_of_a_loaded_model() -> None:
    from harness.footprint import module_bytes
    from harness.models import BuiltinSource

    model = BuiltinSource().load("tiny-random-llama").model
    e = estimate("tiny-random-llama", "cpu", Shape(prompt_tokens=16, new_tokens=4, batch_size=3))
    assert e.memory is not None
    assert e.memory.weights_bytes == module_bytes(model)
    # 3 × (16 + 4 − 1) tokens × 2 layers × K and V × 2 heads × 16 channels × 4 bytes
    assert e.memory.kv_cache_bytes == 3 * 19 * 2 * 2 * 2 * 16 * 4


def test_training_memory_holds_gradients_and_adamw_state() -> None:
    e = estimate(TINY, "a100-80gb", Shape("train", prompt_tokens=32, batch_size=2))
    assert e.memory is not None and e.train is not None
    params = TINY.n_params
    assert e.memory.gradient_bytes == params * 4
    tensors = TINY.num_layers * 9 + 2
    assert e.memory.optimizer_state_bytes == 2 * params * 4 + 4 * tensors
    ckpt = estimate(
        TINY,
        "a100-80gb",
        Shape("train", prompt_tokens=32, batch_size=2),
        stack=["activation-checkpointing"],
    )
    assert ckpt.memory is not None
    assert ckpt.memory.activations_bytes < e.memory.activations_bytes
    assert e.train.time_s is not None and e.train.time_s > 0


# ------------------------------------------------------------------ no estimate


def test_a_technique_without_an_estimate_gets_none_not_a_wrong_number() -> None:
    import bench_testplugins

    from harness.testing import registry_with

    registry = registry_with([bench_testplugins])
    e = estimate(TINY, "cpu", Shape(), stack=["baseline", "skippy"], registry=registry)
    assert e.no_estimate == ("skippy",)
    assert e.memory is None and e.prefill is None and e.decode is None
    assert e.as_dict()["no_estimate"] == ["skippy"]


def test_speculative_decode_time_needs_an_acceptance_rate() -> None:
    stack = [{"speculative": {"method": "prompt-lookup", "num_draft_tokens": 4}}]
    unknown = estimate(TINY, "a100-80gb", Shape(prompt_tokens=64, new_tokens=8), stack=stack)
    assert unknown.decode is not None and unknown.decode.time_s is None
    assert "acceptance rate" in (unknown.decode.reason or "")
    assert unknown.memory is not None  # memory does not depend on it
    known = estimate(
        TINY,
        "a100-80gb",
        Shape(prompt_tokens=64, new_tokens=8, acceptance_rate=0.5),
        stack=stack,
    )
    assert known.decode is not None and known.decode.step_s is not None
    # (1 − α^(γ+1)) / (1 − α) = (1 − 0.5⁵) / 0.5
    assert known.decode.tokens_per_step == pytest.approx((1 - 0.5**5) / 0.5)
    assert known.decode.tokens_per_step is not None
    assert known.decode.time_s == pytest.approx(known.decode.step_s / known.decode.tokens_per_step)


# ------------------------------------------------------------------ devices and errors


def test_the_device_table_has_the_required_entries() -> None:
    devices = load_devices()
    for name in ("a6000", "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "l4"):
        d = devices[name]
        assert d.kind == "cuda" and d.memory_bytes > 0 and d.bandwidth_bytes_s > 0
        assert d.peak("float16") and d.peak("bfloat16") and d.peak("float32")
    assert {"l40s", "rtx4090", "cpu"} <= set(devices)
    assert devices["h100-sxm"].bandwidth_bytes_s == 3.35e12
    assert devices["a100-80gb"].peak("bfloat16") == 312e12


@pytest.mark.parametrize(
    ("gpu", "entry"),
    [
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("NVIDIA RTX A6000", "a6000"),
    ],
)
def test_gpu_names_find_their_entry(gpu: str, entry: str) -> None:
    found = match_gpu(gpu)
    assert found is not None and found.name == entry


def test_extra_devices_come_from_bench_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "devices.toml"
    extra.write_text(
        '[mi300x]\nkind = "cuda"\nmemory_gib = 192\nbandwidth_gb_s = 5300\n'
        'fp16_tflops = 1307\nmatch = ["MI300X"]\n'
    )
    monkeypatch.setenv("BENCH_DEVICES", str(extra))
    assert find_device("mi300x").bandwidth_bytes_s == 5.3e12
    extra.write_text('[bad]\nkind = "tpu"\nbandwidth_gb_s = 1\n')
    with pytest.raises(BenchError, match="kind must be"):
        load_devices()


def test_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"unknown device 'a7000'\. Known: a6000"):
        find_device("a7000")
    with pytest.raises(ModelError, match=r"Pass --model path/to/config\.json"):
        load_architecture(str(tmp_path / "nothing"))
    moe = tmp_path / "moe.json"
    moe.write_text(json.dumps({"hidden_size": 8, "num_local_experts": 8}))
    with pytest.raises(ModelError, match="mixture-of-experts"):
        load_architecture(str(moe))
    with pytest.raises(BenchError, match="unknown technique 'int4'"):
        estimate(TINY, "cpu", Shape(), stack=["int4"])
    with pytest.raises(BenchError, match="technique 'weight-quant': bits"):
        estimate(TINY, "cpu", Shape(), stack=[{"weight-quant": {"bits": 5}}])


def test_a_70b_model_at_128k_context_is_estimated_from_its_config() -> None:
    e = estimate(
        str(LLAMA3_70B),
        "h200",
        Shape(prompt_tokens=131072, new_tokens=1, batch_size=1),
        stack=[{"weight-quant": {"bits": 4, "backend": "hqq"}}, {"kv-quant": {"bits": 2}}],
    )
    assert e.memory is not None and e.prefill and e.decode
    assert 70e9 < e.arch.n_params < 71e9
    assert e.prefill.bound == "compute" and e.decode.bound == "memory"
    plain = estimate(str(LLAMA3_70B), "h200", Shape(prompt_tokens=131072, new_tokens=1))
    assert plain.memory is not None
    assert plain.memory.kv_cache_bytes == 131072 * 80 * 2 * 8 * 128 * 2  # GQA: 8 KV heads
    assert plain.fits is False and e.memory.peak_bytes < plain.memory.peak_bytes
