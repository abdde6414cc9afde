"""plugins/gqa.py: head pooling and replication, model checks, KV-cache bytes, `bench check`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from harness import BenchError, testing
from harness.testing import registry_with
from harness.worker import Worker
from plugins.gqa import GQA, GQAConfig, convert_heads

# tiny-random-llama: 4 query heads, 2 key/value heads of 16 channels, 2 layers.
TINY = {"num_attention_heads": 4, "num_key_value_heads": 2, "architectures": ["LlamaForCausalLM"]}


@pytest.fixture(scope="module")
def worker() -> Worker:
    return Worker("cpu", registry_with())


def test_pooling_averages_the_heads_of_each_group() -> None:
    lin = torch.nn.Linear(3, 4 * 2, bias=True)  # 4 heads of 2 channels
    with torch.no_grad():
        lin.weight.copy_(torch.arange(24, dtype=torch.float32).reshape(8, 3))
        lin.bias.copy_(torch.arange(8, dtype=torch.float32))
    pooled = convert_heads(lin, before=4, after=2, head_dim=2)
    w = lin.weight.reshape(4, 2, 3)
    assert torch.equal(pooled.weight, torch.cat([(w[0] + w[1]) / 2, (w[2] + w[3]) / 2]))
    assert torch.equal(pooled.bias, torch.tensor([1.0, 2.0, 5.0, 6.0]))
    mqa = convert_heads(lin, before=4, after=1, head_dim=2)
    assert torch.equal(mqa.weight, w.mean(dim=0))


def test_replication_copies_each_head_in_place() -> None:
    lin = torch.nn.Linear(3, 2 * 2, bias=False)
    copied = convert_heads(lin, before=2, after=4, head_dim=2)
    w = lin.weight.detach().reshape(2, 2, 3)
    assert torch.equal(copied.weight.reshape(4, 2, 3), torch.stack([w[0], w[0], w[1], w[1]]))
    assert copied.bias is None


@pytest.mark.parametrize(("kv", "ok"), [(1, True), (2, True), (4, True), (3, False), (8, False)])
def test_validate_model_names_the_heads_that_fit(kv: int, ok: bool) -> None:
    if ok:
        GQA.validate_model({"kv_heads": kv}, TINY)
    else:
        with pytest.raises(BenchError, match=r"Use kv_heads in \[1, 2, 4\]"):
            GQA.validate_model({"kv_heads": kv}, TINY)


def test_mixing_pooling_and_replication_is_refused() -> None:
    # 6 query heads, 2 KV heads: 3 divides 6 but would pool and copy at once.
    with pytest.raises(BenchError, match=r"Use kv_heads in \[1, 2, 6\]"):
        GQA.validate_model({"kv_heads": 3}, {"num_attention_heads": 6, "num_key_value_heads": 2})


def test_models_without_attention_heads_are_refused() -> None:
    with pytest.raises(BenchError, match="no num_attention_heads"):
        GQA.validate_model({"kv_heads": 1}, {"architectures": ["MambaForCausalLM"]})


def test_config_needs_at_least_one_head() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        GQAConfig(kv_heads=0)


def test_modules_without_k_and_v_projections_are_refused() -> None:
    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("C", (), {"to_dict": lambda self: TINY})()
            self.mlp = torch.nn.Linear(4, 4)

    from harness.technique import Prepared

    ctx: Any = type("Ctx", (), {"state": {}})()
    with pytest.raises(BenchError, match="no Llama/Mistral/Qwen-style attention"):
        GQA(GQAConfig(kv_heads=1)).prepare(Prepared(Toy()), ctx)


def test_kv_cache_bytes_scale_with_the_heads(worker: Worker) -> None:
    base = testing.run_technique("baseline", worker=worker)
    mqa = testing.run_technique({"gqa": {"kv_heads": 1}}, worker=worker)
    mha = testing.run_technique({"gqa": {"kv_heads": 4}}, worker=worker)
    assert (base.status, mqa.status, mha.status) == ("ok", "ok", "ok")
    kv = base.value("memory.kv_cache_bytes")
    # b × n × l × 2 × h × c × 4 bytes, n = 16 + 4 − 1 (REFERENCE eq. 2)
    assert kv == 1 * 19 * 2 * 2 * 2 * 16 * 4
    assert mqa.value("memory.kv_cache_bytes") == kv / 2
    assert mha.value("memory.kv_cache_bytes") == kv * 2
    assert (mqa.value("gqa.kv_heads_before"), mqa.value("gqa.kv_heads_after")) == (2, 1)
    assert mha.value("gqa.kv_heads_after") == 4
    # k/v projections grow from 2 to 4 heads: 2 layers × 2 projections × 2 heads × 16 × 64 × 4.
    grown = 2 * 2 * 2 * 16 * 64 * 4
    assert mha.value("memory.weights_bytes") == base.value("memory.weights_bytes") + grown  # type: ignore[operator]


def test_replicated_heads_give_identical_logits() -> None:
    from transformers import AutoModelForCausalLM

    from harness.assets import provision
    from harness.technique import Prepared

    folder = str(provision("tiny-random-llama"))
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ctx: Any = type("Ctx", (), {"state": {}})()
    GQA(GQAConfig(kv_heads=4)).prepare(Prepared(model), ctx)
    assert model.config.num_key_value_heads == 4
    assert all(layer.self_attn.num_key_value_groups == 1 for layer in model.model.layers)
    ids = torch.tensor([[1, 7, 300, 42, 9, 18]])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, base(ids).logits, rtol=1e-5, atol=1e-5)
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
        ref = base.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(out, ref)


def test_bench_check_catches_heads_that_do_not_divide(tmp_path: Path) -> None:
    from harness.assets import provision
    from harness.cli import cli

    provision("tiny-random-llama")  # check reads config.json from the built-in cache
    suite = tmp_path / "gqa.yaml"
    suite.write_text(
        "name: gqa\nmodels: [tiny-random-llama]\nworkload: {generate: {prompt_tokens: 8}}\n"
        "techniques:\n  - gqa: {kv_heads: [1, 3]}\n"
    )
    result = CliRunner().invoke(cli, ["check", str(suite)])
    assert result.exit_code != 0
    assert isinstance(result.exception, BenchError)
    assert "model tiny-random-llama: gqa: kv_heads 3 does not fit" in str(result.exception)
    assert "Use kv_heads in [1, 2, 4]" in str(result.exception)
    suite.write_text(suite.read_text().replace("[1, 3]", "[1, 4]"))
    ok = CliRunner().invoke(cli, ["check", str(suite)])
    assert ok.exit_code == 0, ok.output
    assert "ok, 2 cells" in ok.output


@pytest.mark.slow
def test_smollm2_kv_bytes_tokens_and_perplexity() -> None:
    """9 query heads / 3 KV heads: MQA keeps ⅓ of the KV cache, MHA 3× with identical output."""
    from harness.workloads.perplexity import sliding_nll, text_tokens

    w = Worker("cpu", registry_with())
    workload = {"prompt_tokens": 64, "new_tokens": 8}
    stacks: dict[str, testing.StackSpec] = {
        "base": "baseline",
        "mqa": {"gqa": {"kv_heads": 1}},
        "mha": {"gqa": {"kv_heads": 9}},
    }
    runs = {
        name: testing.run_technique(stack, model="smollm2-135m", workload=workload, worker=w)
        for name, stack in stacks.items()
    }
    assert all(r.status == "ok" for r in runs.values()), {k: r.reason for k, r in runs.items()}
    kv = runs["base"].value("memory.kv_cache_bytes")
    assert kv == 1 * 71 * 30 * 2 * 3 * 64 * 4
    assert runs["mqa"].value("memory.kv_cache_bytes") * 3 == kv  # type: ignore[operator]
    assert runs["mha"].value("memory.kv_cache_bytes") == 3 * kv

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.assets import provision, shakespeare_text
    from harness.technique import Prepared

    folder = str(provision("smollm2-135m"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    mha = AutoModelForCausalLM.from_pretrained(folder).eval()
    ctx: Any = type("Ctx", (), {"state": {}})()
    GQA(GQAConfig(kv_heads=9)).prepare(Prepared(mha), ctx)
    prompt = torch.tensor([text_tokens(tokenizer, shakespeare_text("prompt"), 64)])
    with torch.inference_mode():
        same = mha.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False)
        ref = base.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert torch.equal(same, ref)
    ids = text_tokens(tokenizer, shakespeare_text("eval"), 512)
    ppl = [float(torch.exp(sliding_nll(m, ids, 512, 256, "cpu").mean())) for m in (base, mha)]
    assert abs(ppl[1] / ppl[0] - 1) < 1e-4, ppl


@pytest.mark.parametrize("backend", ["torchao", "hqq", "bitsandbytes"])
def test_quantized_projections_are_refused(worker: Worker, backend: str) -> None:
    r = testing.run_technique(
        [{"weight-quant": {"bits": 8, "backend": backend}}, {"gqa": {"kv_heads": 1}}],
        worker=worker,
    )
    assert r.status == "error"
    assert r.reason is not None and "put gqa before weight-quant" in r.reason
