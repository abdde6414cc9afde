"""Accuracy task ``passkey``: find a number hidden in a haystack of real text.

Each trial hides a random ``digits``-digit pass key at a relative depth of a haystack cut
from a text source's ``eval`` split, asks for it at the end, decodes a few tokens greedily
through the stack's own generation path (its cache and generation arguments) and checks
the first number in the answer. Prompts are built at the token level, so a trial's prompt
is exactly ``context_tokens`` long. Instruct models get the question as a user message in
their chat template (when the tokenizer has one), base models a plain completion prompt;
both end with the start of the answer ("The pass key is"), so a small model only has to
copy digits. Everything is seeded: the same parameters give the same prompts.

Metrics (fractions of trials answered correctly): ``accuracy.passkey`` over all trials,
``accuracy.passkey_first_half`` / ``_second_half`` over keys hidden before / after the
middle of the haystack (depth < 0.5 / ≥ 0.5: KV eviction that keeps recent tokens loses the
first half first), and ``accuracy.passkey_<n>`` for each context length n that is a power
of two from 256 to 131072 (other lengths count only in the aggregates). Each trial's outcome
is kept as a sample of ``accuracy.passkey``: the runner reports the trials that flipped
against the reference stack (``flips.passkey_right_to_wrong`` / ``_wrong_to_right``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from harness.errors import BenchError
from harness.evidence import flip_metrics
from harness.markers import hookimpl
from harness.results import Measurement, MetricDef, Value
from harness.technique import Config, Prepared
from harness.workloads import Workload, WorkloadContext
from harness.workloads.perplexity import text_tokens

INTRO = (
    "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the pass key.\n\n"
)
NEEDLE = "\n\nThe pass key is {key}. Remember it. {key} is the pass key.\n\n"
QUESTION = "\n\nWhat is the pass key?"
ANSWER = "The pass key is"
PLACEHOLDER = "\x00HAYSTACK\x00"

LENGTHS_WITH_METRICS: tuple[int, ...] = tuple(2**k for k in range(8, 18))
"""Context lengths (tokens) that get a per-length metric ``accuracy.passkey_<n>``."""


class PasskeyParams(Config):
    text: str = Field("shakespeare", description="text source; its 'eval' split is the haystack")
    context_tokens: list[int] = Field(
        default_factory=lambda: [512, 1024], description="prompt lengths in tokens, exact"
    )
    depths: list[float] = Field(
        default_factory=lambda: [0.125, 0.375, 0.625, 0.875],
        description="relative positions of the key in the haystack (0 = start, 1 = end)",
    )
    trials: int = Field(1, ge=1, description="haystacks per (length, depth), each a new key")
    digits: int = Field(5, ge=1, le=12, description="digits of the pass key")
    new_tokens: int = Field(8, ge=1, description="tokens decoded for the answer (greedy)")
    chat: bool | None = Field(
        None, description="use the chat template; default: when the tokenizer has one"
    )
    seed: int = Field(0, description="seeds the keys")

    @field_validator("context_tokens")
    @classmethod
    def _lengths(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 64:
            raise ValueError("give at least one context length, each ≥ 64 tokens")
        return v

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= d <= 1.0 for d in v):
            raise ValueError("give at least one depth, each between 0 and 1")
        return v


@dataclass(frozen=True)
class Trial:
    """One prompt: the key, where it is hidden and the prompt's token ids."""

    length: int
    depth: float
    key: str
    ids: tuple[int, ...]


def _frame(tokenizer: Any, chat: bool) -> tuple[list[int], list[int]]:
    """Token ids before and after the haystack (instructions, question, answer start)."""

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    if chat:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": INTRO + PLACEHOLDER + QUESTION}],
            tokenize=False,
            add_generation_prompt=True,
        )
        if rendered.count(PLACEHOLDER) != 1:
            raise BenchError(
                "passkey: the tokenizer's chat template changes the message text; set chat: "
                "false to ask with a plain prompt."
            )
        before, after = rendered.split(PLACEHOLDER)
        return enc(before), enc(after + ANSWER)
    # The special tokens the tokenizer adds to any text (a BOS for Llama; none for GPT-2).
    start = list(tokenizer(INTRO, add_special_tokens=True)["input_ids"])
    return start, enc(QUESTION + "\n" + ANSWER)


def use_chat(tokenizer: Any, chat: bool | None) -> bool:
    """Whether prompts go through the chat template (``chat``, default: the tokenizer has one)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise BenchError(
            "passkey: chat is true but the tokenizer has no chat template: set chat: false."
        )
    return has_template if chat is None else chat


def build_trials(tokenizer: Any, haystack_text: str, p: PasskeyParams) -> list[Trial]:
    """Every (length, depth, trial) prompt, seeded by ``p.seed``.

    Trial t at every length and depth draws its haystack from the same stretch of text
    (tokens ``t × max_length`` onwards), so depths and lengths differ only in where the key
    is and how much text surrounds it.
    """
    before, after = _frame(tokenizer, use_chat(tokenizer, p.chat))
    longest = max(p.context_tokens)
    pool = text_tokens(tokenizer, haystack_text, longest * p.trials, "passkey haystack text")
    rng = random.Random(p.seed)
    trials = []
    for length in p.context_tokens:
        for depth in p.depths:
            for t in range(p.trials):
                key = str(rng.randrange(10 ** (p.digits - 1), 10**p.digits))
                needle = list(
                    tokenizer(NEEDLE.format(key=key), add_special_tokens=False)["input_ids"]
                )
                fill = length - len(before) - len(after) - len(needle)
                if fill < 16:
                    raise BenchError(
                        f"passkey: context_tokens {length} leaves {fill} tokens of haystack "
                        "after the instructions: use lengths of at least 128 tokens."
                    )
                hay = pool[t * longest : t * longest + fill]
                cut = round(depth * fill)
                ids = before + hay[:cut] + needle + hay[cut:] + after
                trials.append(Trial(length, depth, key, tuple(ids)))
    return trials


def first_number(text: str) -> str | None:
    """The first run of digits in ``text`` (thousands separators are not digits)."""
    match = re.search(r"\d+", text)
    return match.group(0) if match else None


class Passkey(Workload[PasskeyParams]):
    """Passkey retrieval accuracy at several context lengths and depths."""

    name = "passkey"
    kind = "accuracy"
    Params = PasskeyParams
    text_splits = ("eval",)

    def tokens_needed(self) -> dict[tuple[str, str], int]:
        """Each trial's haystack: the longest context, ``trials`` times (``build_trials``)."""
        p = self.params
        return {(p.text, "eval"): max(p.context_tokens) * p.trials}

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        import torch

        p = self.params
        trials = build_trials(ctx.tokenizer, ctx.text(p.text, "eval"), p)
        results: list[tuple[Trial, bool]] = []
        answers: list[str] = []
        for trial in trials:
            x = torch.tensor([trial.ids], dtype=torch.long, device=ctx.device)
            kwargs = prepared.generate_args(x, p.new_tokens, ctx.tokenizer)
            with torch.inference_mode():
                out = prepared.model.generate(**kwargs)
            sequences = getattr(out, "sequences", out)  # a tensor, or a GenerateOutput
            answer = ctx.tokenizer.decode(sequences[0, x.shape[1] :], skip_special_tokens=True)
            answers.append(answer)
            results.append((trial, first_number(answer) == trial.key))
        return Measurement(tuple(passkey_values(results)), outputs={"answers": answers})


def passkey_values(results: list[tuple[Trial, bool]]) -> list[Value]:
    """Fractions correct: overall, by half of the haystack, and per power-of-two length.

    ``accuracy.passkey`` keeps each trial's outcome as its samples (1 right, 0 wrong, in
    ``build_trials`` order: length, then depth, then trial), so the runner can count the
    trials that flipped against the reference stack (``harness.evidence``).
    """

    def fraction(name: str, group: list[bool], *, samples: bool = False) -> Value:
        if not group:
            return Value(name, None, "fraction", reason="no trial in this group")
        outcomes = tuple(1.0 if ok else 0.0 for ok in group) if samples else ()
        return Value(
            name,
            sum(group) / len(group),
            "fraction",
            n=len(group),
            source="greedy",
            samples=outcomes,
        )

    values = [
        fraction("accuracy.passkey", [ok for _, ok in results], samples=True),
        fraction("accuracy.passkey_first_half", [ok for t, ok in results if t.depth < 0.5]),
        fraction("accuracy.passkey_second_half", [ok for t, ok in results if t.depth >= 0.5]),
    ]
    for length in sorted({t.length for t, _ in results}):
        if length in LENGTHS_WITH_METRICS:
            group = [ok for t, ok in results if t.length == length]
            values.append(fraction(f"accuracy.passkey_{length}", group))
    return values


PASSKEY = MetricDef(
    "accuracy.passkey", "fraction", True, "passkey retrieval: share of trials correct"
)

METRICS = [
    PASSKEY,
    *flip_metrics(PASSKEY),
    MetricDef(
        "accuracy.passkey_first_half",
        "fraction",
        True,
        "passkey retrieval, keys hidden in the first half of the haystack (depth < 0.5)",
    ),
    MetricDef(
        "accuracy.passkey_second_half",
        "fraction",
        True,
        "passkey retrieval, keys hidden in the second half of the haystack (depth ≥ 0.5)",
    ),
    *(
        MetricDef(
            f"accuracy.passkey_{n}", "fraction", True, f"passkey retrieval at {n} context tokens"
        )
        for n in LENGTHS_WITH_METRICS
    ),
]


@hookimpl
def register_workloads() -> list[type[Workload]]:
    return [Passkey]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
