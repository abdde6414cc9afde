"""``passkey``: exact prompt construction, parsing and scoring, on the built-in tokenizer."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from harness.errors import BenchError
from harness.models import BuiltinSource
from harness.technique import Prepared
from harness.testing import workload_context
from harness.textsources import ShakespeareSource
from harness.workloads.passkey import (
    Passkey,
    PasskeyParams,
    Trial,
    build_trials,
    first_number,
    passkey_values,
    use_chat,
)


@pytest.fixture(scope="module")
def tiny() -> Any:
    return BuiltinSource().load("tiny-random-llama")  # SmolLM2's tokenizer and chat template


def _haystack() -> str:
    return ShakespeareSource().load("shakespeare", "eval")


@pytest.mark.parametrize("chat", [True, False])
def test_prompts_have_exact_lengths_and_hide_the_key_at_its_depth(tiny: Any, chat: bool) -> None:
    params = PasskeyParams(context_tokens=[200, 300], depths=[0.0, 0.5, 1.0], trials=2, chat=chat)
    trials = build_trials(tiny.tokenizer, _haystack(), params)
    assert len(trials) == 2 * 3 * 2
    for trial in trials:
        assert len(trial.ids) == trial.length
        assert len(trial.key) == 5 and trial.key[0] != "0"
        text = tiny.tokenizer.decode(trial.ids)
        assert text.count(trial.key) == 2  # "The pass key is K. Remember it. K is the pass key."
        assert text.endswith("The pass key is")
        assert ("<|im_start|>assistant" in text) is chat
    # Depth 0 puts the needle right after the instructions, depth 1 right before the question
    # (trial 0 draws its haystack from the start of the eval split: Hamlet).
    by_depth = {t.depth: t for t in trials[::2] if t.length == 300}
    text0 = tiny.tokenizer.decode(by_depth[0.0].ids)
    text1 = tiny.tokenizer.decode(by_depth[1.0].ids)
    assert text0.index(by_depth[0.0].key) < text0.index("HAMLET")
    assert text1.index(by_depth[1.0].key) > text1.index("HAMLET")
    assert text1.rindex("What is the pass key?") - text1.index(by_depth[1.0].key) < 100


def test_trials_are_seeded(tiny: Any) -> None:
    params = PasskeyParams(context_tokens=[200], depths=[0.25, 0.75])
    keys = [t.key for t in build_trials(tiny.tokenizer, _haystack(), params)]
    assert keys == [t.key for t in build_trials(tiny.tokenizer, _haystack(), params)]
    other = PasskeyParams(context_tokens=[200], depths=[0.25, 0.75], seed=1)
    assert keys != [t.key for t in build_trials(tiny.tokenizer, _haystack(), other)]


def test_auto_chat_follows_the_tokenizer(tiny: Any) -> None:
    assert use_chat(tiny.tokenizer, None) is True
    assert use_chat(tiny.tokenizer, False) is False

    class Plain:
        chat_template = None

    assert use_chat(Plain(), None) is False
    with pytest.raises(BenchError, match="no chat template"):
        use_chat(Plain(), True)


def test_too_short_context_and_bad_params_are_errors(tiny: Any) -> None:
    with pytest.raises(BenchError, match="tokens of haystack"):
        build_trials(tiny.tokenizer, _haystack(), PasskeyParams(context_tokens=[80]))
    with pytest.raises(ValueError):
        PasskeyParams(depths=[1.5])
    with pytest.raises(ValueError):
        PasskeyParams(context_tokens=[])


def test_first_number() -> None:
    assert first_number(" 60494. Remember") == "60494"
    assert first_number("The key: 12 345") == "12"
    assert first_number("no digits") is None


def test_values_group_by_half_and_by_power_of_two_length() -> None:
    def trial(length: int, depth: float) -> Trial:
        return Trial(length, depth, "12345", ())

    results = [
        (trial(512, 0.25), True),
        (trial(512, 0.75), False),
        (trial(1000, 0.25), True),
        (trial(1000, 0.5), True),
    ]
    values = {v.name: v for v in passkey_values(results)}
    assert values["accuracy.passkey"].value == 0.75
    assert values["accuracy.passkey_first_half"].value == 1.0
    assert values["accuracy.passkey_second_half"].value == 0.5  # depth 0.5 is second half
    assert values["accuracy.passkey_512"].value == 0.5
    assert "accuracy.passkey_1000" not in values  # not a registered length
    assert values["accuracy.passkey"].n == 4
    # Each trial's outcome, in order: what flips against the reference are counted from.
    assert values["accuracy.passkey"].samples == (1.0, 0.0, 1.0, 1.0)
    assert values["accuracy.passkey_first_half"].samples == ()


class _Oracle:
    """A 'model' whose generate reads the key from the prompt: the task must score it right."""

    def __init__(self, tokenizer: Any, wrong_after: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.calls = 0
        self.wrong_after = wrong_after

    def generate(self, input_ids: Any, **kwargs: Any) -> Any:
        self.calls += 1
        found = re.search(r"pass key is (\d+)", self.tokenizer.decode(input_ids[0]))
        assert found is not None, "the fake model was given no passkey"
        key = found.group(1)
        if self.wrong_after is not None and self.calls > self.wrong_after:
            key = "99999"
        answer = self.tokenizer(f" {key}. Remember", add_special_tokens=False)["input_ids"]
        return torch.cat([input_ids, torch.tensor([answer])], dim=1)


def test_task_scores_answers_through_generate(tiny: Any) -> None:
    params = PasskeyParams(context_tokens=[200, 256], depths=[0.25, 0.75])
    perfect = Passkey(params).run(
        Prepared(_Oracle(tiny.tokenizer)), workload_context(tiny.tokenizer)
    )
    assert {v.name: v.value for v in perfect.values} == {
        "accuracy.passkey": 1.0,
        "accuracy.passkey_first_half": 1.0,
        "accuracy.passkey_second_half": 1.0,
        "accuracy.passkey_256": 1.0,
    }
    assert len(perfect.outputs["answers"]) == 4
    # Trials run length by length, depth by depth: the last two (length 256) are wrong.
    half = Passkey(params).run(
        Prepared(_Oracle(tiny.tokenizer, 2)), workload_context(tiny.tokenizer)
    )
    assert {v.name: v.value for v in half.values}["accuracy.passkey"] == 0.5
    assert {v.name: v.value for v in half.values}["accuracy.passkey_256"] == 0.0


def test_random_model_finds_no_key(tiny: Any) -> None:
    params = PasskeyParams(context_tokens=[128], depths=[0.5], new_tokens=4)
    values = Passkey(params).run(Prepared(tiny.model), workload_context(tiny.tokenizer)).values
    assert {v.name: v.value for v in values}["accuracy.passkey"] == 0.0
