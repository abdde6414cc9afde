"""``speculative``: greedy output identity, pass counting, skips."""

from __future__ import annotations

from typing import Any

import pytest

from harness.environment import Environment
from harness.models import BuiltinSource
from harness.technique import Context, Prepared
from harness.testing import run_technique
from harness.workloads.generate import prompt_ids
from plugins.speculative import PassCounter, Speculative, SpeculativeConfig

SHAKESPEARE_PROMPT = 48
NEW = 16


def _generate(model_id: str, config: dict[str, Any], prompt: int = SHAKESPEARE_PROMPT) -> Any:
    """Greedy tokens of the baseline and of the technique, and the technique's metrics."""
    import torch

    from harness.textsources import ShakespeareSource

    loaded = BuiltinSource().load(model_id)
    text = ShakespeareSource().load("shakespeare", "prompt")
    ids = prompt_ids(loaded.tokenizer, text, 1, prompt)
    kwargs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "max_new_tokens": NEW,
        "min_new_tokens": NEW,
        "do_sample": False,
        "pad_token_id": loaded.tokenizer.eos_token_id,
        "return_dict_in_generate": True,
    }
    with torch.inference_mode():
        base = loaded.model.generate(**kwargs).sequences
    ctx = Context(
        device="cpu",
        model_id=model_id,
        tokenizer=loaded.tokenizer,
        workload={"name": "generate", "params": {"batch_size": 1}},
        env=Environment.detect("cpu"),
    )
    tech = Speculative(SpeculativeConfig.model_validate(config))
    prepared = tech.prepare(Prepared(model=loaded.model), ctx)
    try:
        with torch.inference_mode():
            out = loaded.model.generate(**kwargs, **prepared.generate_kwargs).sequences
    finally:
        for undo in prepared.cleanup:
            undo()
    assert "generate" not in vars(loaded.model)  # the wrapper is gone
    return base.tolist(), out.tolist(), tech.metrics(ctx)


@pytest.mark.parametrize(
    "config",
    [
        {"method": "prompt-lookup", "num_draft_tokens": 4},
        {"method": "draft", "draft_model": "tiny-random-llama", "num_draft_tokens": 3},
        {"method": "layer-skip", "exit_layer": 1, "num_draft_tokens": 3},
    ],
)
def test_greedy_output_equals_baseline_on_tiny_model(config: dict[str, Any]) -> None:
    base, out, metrics = _generate("tiny-random-llama", config)
    assert out == base
    assert 0.0 <= metrics["spec.acceptance_rate"] <= 1.0
    assert metrics["spec.tokens_per_target_pass"] >= 1.0


def test_identical_drafter_accepts_every_draft() -> None:
    # The target drafts for itself: every drafted token is accepted, so each pass emits
    # num_draft_tokens + 1 = 4 tokens: 16 tokens in 4 passes, 3 drafts per pass.
    config = {"method": "draft", "draft_model": "tiny-random-llama", "num_draft_tokens": 3}
    _, _, metrics = _generate("tiny-random-llama", config)
    assert metrics == {
        "spec.acceptance_rate": 1.0,
        "spec.tokens_per_target_pass": 4.0,
        "spec.drafted_per_pass": 3.0,
        "spec.draft_weights_bytes": metrics["spec.draft_weights_bytes"],
    }
    assert metrics["spec.draft_weights_bytes"] > 0


def test_pass_counter_formulas() -> None:
    c = PassCounter()
    c.begin(prompt_len=10)
    c.target_pass(14)  # prefill of 10 + 4 drafts
    c.target_pass(5)  # last accepted token + 4 drafts
    c.target_pass(1)  # no draft (prompt lookup found no match)
    c.end(emitted=7)
    c.target_pass(99)  # outside generate (an accuracy task): not counted
    assert c.metrics() == {
        "spec.tokens_per_target_pass": 7 / 3,
        "spec.drafted_per_pass": 8 / 3,
        "spec.acceptance_rate": (7 - 3) / 8,
    }


def test_config_needs_draft_model_for_draft_only() -> None:
    with pytest.raises(ValueError, match="draft_model"):
        SpeculativeConfig.model_validate({"method": "draft"})
    with pytest.raises(ValueError, match="draft_model"):
        SpeculativeConfig.model_validate({"method": "layer-skip", "draft_model": "x"})


def test_batch_above_one_is_skipped_with_the_reason() -> None:
    result = run_technique(
        {"speculative": {"method": "prompt-lookup"}},
        workload={"prompt_tokens": 16, "new_tokens": 4, "batch_size": 2},
    )
    assert result.status == "skipped"
    assert "batch size 1" in (result.reason or "")


def test_cell_stores_acceptance_rate() -> None:
    result = run_technique(
        {"speculative": {"method": "layer-skip", "exit_layer": 1, "num_draft_tokens": 2}},
        workload={"prompt_tokens": 16, "new_tokens": 6},
    )
    assert result.status == "ok", result.reason
    assert result.value("spec.acceptance_rate") is not None
    assert (result.value("spec.tokens_per_target_pass") or 0.0) >= 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        {"method": "prompt-lookup", "num_draft_tokens": 10},
        {"method": "layer-skip", "exit_layer": 8, "num_draft_tokens": 4},
        {"method": "draft", "draft_model": "smollm2-135m", "num_draft_tokens": 5},
    ],
)
def test_greedy_output_equals_baseline_on_smollm2(config: dict[str, Any]) -> None:
    base, out, metrics = _generate("smollm2-135m", config, prompt=128)
    assert out == base
    if config["method"] == "draft":  # the model drafting for itself
        assert metrics["spec.acceptance_rate"] == 1.0
