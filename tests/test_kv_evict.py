"""``kv-evict``: each policy's choice of kept tokens, bounded bytes, identity without eviction."""

from __future__ import annotations

from typing import Any

import pytest

from harness.testing import run_technique
from plugins.kv_policies import H2OLayer, SnapKVLayer, StreamingLayer, attention_scores

# tiny-random-llama: 2 layers, 2 KV heads, head_dim 16, fp32 → 512 bytes per cached token.
PER_TOKEN = 2 * 2 * 2 * 16 * 4


def _positions(layer: Any, n: int, heads: int = 2) -> Any:
    """Fill ``layer`` with n tokens whose key channel 0 holds the token's position."""
    import torch

    keys = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1).expand(1, heads, n, 4).clone()
    layer.update(keys, keys.clone())
    return layer


def test_streaming_keeps_sinks_and_recent_window() -> None:
    layer = _positions(StreamingLayer(budget=6, sink=2), 10)
    assert layer.keys[0, 0, :, 0].tolist() == [0, 1, 6, 7, 8, 9]
    assert (layer.evicted, layer.get_seq_length()) == (4, 10)
    assert layer.get_mask_sizes(1) == (7, 4)  # kept + query, first kept slot at position 4


def test_h2o_keeps_heavy_hitters_per_kv_head_and_recent() -> None:
    import torch

    layer = _positions(H2OLayer(budget=5, recent=2), 8)
    scores = torch.zeros(1, 2, 8)
    scores[0, 0, [1, 3, 4]] = 1.0  # head 0's heavy hitters
    scores[0, 1, [0, 2, 5]] = 1.0  # head 1's
    layer._evict(scores)
    assert layer.keys[0, 0, :, 0].tolist() == [1, 3, 4, 6, 7]
    assert layer.keys[0, 1, :, 0].tolist() == [0, 2, 5, 6, 7]
    assert layer.scores.shape == (1, 2, 5)


def test_snapkv_keeps_pooled_top_positions_and_window() -> None:
    import torch

    layer = _positions(SnapKVLayer(budget=5, window=2, kernel=1), 9)
    scores = torch.zeros(1, 2, 9)
    scores[0, :, [2, 4, 5]] = torch.tensor([3.0, 2.0, 1.0])
    layer.window = 2
    layer._evict(scores)
    assert layer.keys[0, 0, :, 0].tolist() == [2, 4, 5, 7, 8]


def test_attention_scores_are_causal_and_grouped() -> None:
    import torch

    query = torch.zeros(1, 4, 2, 8)  # 4 query heads over 2 KV heads, 2 queries
    keys = torch.zeros(1, 2, 3, 8)  # equal logits: uniform over the visible keys
    scores = attention_scores(query, keys, 1.0)
    # query 0 sees keys 0..1 (½ each), query 1 sees 0..2 (⅓ each); 2 heads per group
    expected = 2 * torch.tensor([1 / 2 + 1 / 3, 1 / 2 + 1 / 3, 1 / 3])
    assert torch.allclose(scores[0, 0], expected) and torch.allclose(scores[0, 1], expected)


@pytest.mark.parametrize("policy", ["streaming", "h2o"])
def test_bytes_stay_at_the_budget_as_context_grows(policy: str) -> None:
    values = []
    for prompt in (64, 160):
        result = run_technique(
            {"kv-evict": {"policy": policy, "budget_tokens": 48}},
            workload={"prompt_tokens": prompt, "new_tokens": 8},
        )
        assert result.status == "ok", result.reason
        assert result.value("kv.evicted_tokens") == prompt + 8 - 1 - 48
        assert result.value("kv.budget_tokens") == 48
        values.append(result.value("memory.kv_cache_bytes"))
    scores = 2 * 2 * 48 * 4 if policy == "h2o" else 0  # fp32 score per kept key and head
    assert values == [48 * PER_TOKEN + scores] * 2


def test_snapkv_bounds_the_prompt_and_appends_generated_tokens() -> None:
    result = run_technique(
        {"kv-evict": {"policy": "snapkv", "budget_tokens": 48, "window": 8}},
        workload={"prompt_tokens": 160, "new_tokens": 8},
    )
    assert result.status == "ok", result.reason
    assert result.value("memory.kv_cache_bytes") == (48 + 7) * PER_TOKEN
    assert result.value("kv.evicted_tokens") == 160 - 48


@pytest.mark.parametrize("policy", ["streaming", "h2o", "snapkv"])
def test_a_budget_above_the_context_changes_nothing(policy: str) -> None:
    """No eviction → the same greedy tokens as the plain cache (positions and masks)."""
    import torch

    from harness.environment import Environment
    from harness.models import BuiltinSource
    from harness.technique import Context, Prepared
    from plugins.kv_evict import KVEvict, KVEvictConfig

    loaded = BuiltinSource().load("tiny-random-llama")
    ids = torch.randint(5, 200, (1, 40), generator=torch.Generator().manual_seed(0))
    kw = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        base = loaded.model.generate(ids, **kw)
        ctx = Context(
            "cpu", "tiny", loaded.tokenizer, {"name": "generate"}, Environment.detect("cpu")
        )
        tech = KVEvict(KVEvictConfig(policy=policy, budget_tokens=64))
        prepared = tech.prepare(Prepared(model=loaded.model), ctx)
        assert prepared.builds_cache
        try:
            out = loaded.model.generate(ids, **prepared.cache_kwargs(), **kw)
        finally:
            for undo in prepared.cleanup:
                undo()
    assert out.tolist() == base.tolist()
    assert loaded.model.config._attn_implementation in ("sdpa", "eager")


# kv-quant stacked with kv-evict: the evicting layers store their kept tokens as codes.
STACK_WORKLOAD = {"prompt_tokens": 40, "new_tokens": 6}
HQQ_4BIT = {"kv-quant": {"backend": "hqq", "bits": 4, "residual_length": 4, "group_size": 16}}
STREAMING_24 = {"kv-evict": {"policy": "streaming", "budget_tokens": 24}}


@pytest.mark.parametrize("order", ["quant-first", "evict-first"])
def test_quantized_eviction_bytes_are_codes_scales_and_residual(order: str) -> None:
    stack = [HQQ_4BIT, STREAMING_24] if order == "quant-first" else [STREAMING_24, HQQ_4BIT]
    result = run_technique(stack, workload=STACK_WORKLOAD)
    assert result.status == "ok", result.reason
    # 24 kept tokens after prefill (all coded); 5 decode steps each evict one token and add
    # one to the residual: 1, 2, 3, flush at 4 → 0, 1. So 23 coded tokens and 1 residual.
    values = 2 * 23 * 16  # KV heads × tokens × head_dim
    codes, scale_zero = values // 2, values // 16 * 2 * 4  # 4-bit; fp32 scale + zero per 16
    residual = 2 * 1 * 16 * 4
    assert result.value("memory.kv_cache_bytes") == 2 * 2 * (codes + scale_zero + residual)
    assert result.value("kv.evicted_tokens") == 40 + 6 - 1 - 24
    evict_only = run_technique(STREAMING_24, workload=STACK_WORKLOAD)
    assert evict_only.value("memory.kv_cache_bytes") == 24 * PER_TOKEN


def test_snapkv_with_fp8_codes_every_kept_token() -> None:
    stack = [{"kv-evict": {"policy": "snapkv", "budget_tokens": 24, "window": 8}}]
    result = run_technique(
        [*stack, {"kv-quant": {"backend": "fp8", "bits": 8}}], workload=STACK_WORKLOAD
    )
    assert result.status == "ok", result.reason
    # 24 prompt tokens kept + 5 generated, one fp8 byte per value, one fp32 scale per tensor
    assert result.value("memory.kv_cache_bytes") == 2 * 2 * (2 * 29 * 16 + 4)


@pytest.mark.parametrize("backend", ["quanto", "hqq"])
def test_quantized_eviction_without_eviction_matches_kv_quant(backend: str) -> None:
    """A budget above the context: the same codes, tokens and bytes as QuantizedCache."""
    import torch

    from harness.environment import Environment
    from harness.footprint import tensor_bytes
    from harness.models import BuiltinSource
    from harness.technique import Context, Prepared, Technique
    from plugins.kv_evict import KVEvict, KVEvictConfig
    from plugins.kv_quant import KVQuant, KVQuantConfig

    loaded = BuiltinSource().load("tiny-random-llama")
    ids = torch.randint(5, 200, (1, 40), generator=torch.Generator().manual_seed(0))
    kw = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    ctx = Context("cpu", "tiny", loaded.tokenizer, {"name": "generate"}, Environment.detect("cpu"))
    quant = KVQuant(KVQuantConfig(backend=backend, bits=4, residual_length=4, group_size=16))
    evict = KVEvict(KVEvictConfig(policy="h2o", budget_tokens=64))
    outputs, sizes = [], []
    stacks: list[list[Technique[Any]]] = [[quant], [quant, evict]]
    for stack in stacks:
        prepared = Prepared(model=loaded.model)
        for tech in stack:
            prepared = tech.prepare(prepared, ctx)
        cache = prepared.cache_kwargs()["cache"]
        try:
            with torch.inference_mode():
                outputs.append(loaded.model.generate(ids, cache=cache, **kw).tolist())
        finally:
            for undo in prepared.cleanup:
                undo()
        scores = sum(tensor_bytes(getattr(layer, "scores", None)) for layer in cache.layers)
        sizes.append(tensor_bytes(cache) - scores)
    assert outputs[0] == outputs[1]
    assert sizes[0] == sizes[1]


class _Storage:
    def cache(self) -> Any:
        return "whole"

    def codecs(self) -> list[Any]:
        return ["codec"]


def test_builders_that_cannot_store_codes_skip_with_a_storage() -> None:
    from harness.errors import Skip
    from harness.technique import Prepared

    prepared = Prepared(model=None)
    prepared.set_cache_storage(_Storage(), "kv-quant")
    with pytest.raises(Skip, match="offload cannot store its KV cache through kv-quant"):
        prepared.set_cache(lambda codecs: None, "offload")
    prepared = Prepared(model=None)
    prepared.set_cache(lambda codecs: None, "offload")
    with pytest.raises(Skip, match="offload cannot store its KV cache through kv-quant"):
        prepared.set_cache_storage(_Storage(), "kv-quant")


def test_any_builder_that_stores_codes_gets_the_storages_codecs() -> None:
    """The composition is a protocol: a third-party builder stacks like kv-evict does."""
    from harness.errors import Skip
    from harness.technique import Prepared

    def build(codecs: Any) -> Any:
        return ("built", codecs)

    builder_first = Prepared(model=None)
    builder_first.set_cache(build, "my-kv", stores_codes=True)
    builder_first.set_cache_storage(_Storage(), "kv-quant")
    storage_first = Prepared(model=None)
    storage_first.set_cache_storage(_Storage(), "kv-quant")
    storage_first.set_cache(build, "my-kv", stores_codes=True)
    for prepared in (builder_first, storage_first):
        assert prepared.cache_kwargs() == {"cache": ("built", ["codec"])}
    alone = Prepared(model=None)
    alone.set_cache_storage(_Storage(), "kv-quant")
    assert alone.cache_kwargs() == {"cache": "whole"}
    with pytest.raises(Skip, match="my-kv and kv-quant both store the KV cache"):
        alone.set_cache_storage(_Storage(), "my-kv")
    assert Prepared(model=None).cache_kwargs() == {}


def test_crop_of_a_quantized_layer_drops_the_newest_tokens() -> None:
    """Assisted generation crops rejected drafts: codes and residual stay consistent."""
    import torch
    from transformers.cache_utils import HQQQuantizedLayer

    from plugins.kv_quant import QuantizedCodec

    codec = QuantizedCodec(HQQQuantizedLayer(nbits=8, q_group_size=16, residual_length=4))
    layer = StreamingLayer(budget=64, sink=4, codec=codec)
    tokens = torch.randn(1, 2, 12, 16, generator=torch.Generator().manual_seed(0))
    layer.update(tokens[:, :, :10], tokens[:, :, :10].clone())  # prompt: all 10 coded
    layer.update(tokens[:, :, 10:12], tokens[:, :, 10:12].clone())  # 2 in the residual
    assert (layer.coded, layer.kept(), layer.get_seq_length()) == (10, 12, 12)
    layer.crop(-3)  # drops both residual tokens and one coded token
    assert (layer.kept(), layer.get_seq_length()) == (9, 9)
    keys, _ = layer.update(tokens[:, :, 9:10], tokens[:, :, 9:10].clone())
    assert layer.kept() == 10
    assert torch.allclose(keys, tokens[:, :, :10], atol=0.05)  # 8-bit codes of the same tokens
