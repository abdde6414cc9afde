"""Accuracy task ``greedy-match``: does the stack still write what the unmodified model writes?

For a few prompts cut from a text's eval split, the stack and the unmodified model each
continue the prompt greedily; the score is the share of generated tokens that are equal,
position by position (1.0: the stack changed nothing a greedy reader could see).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness import (
    BenchError,
    Config,
    Measurement,
    MetricDef,
    Prepared,
    Value,
    Workload,
    WorkloadContext,
)

GREEDY_MATCH = MetricDef(
    "greedy.token_match",
    "fraction",
    True,
    "share of greedily generated tokens equal to the unmodified model's, position by position",
    kind="accuracy",  # the dashboard draws it on the accuracy axis, whatever its name
)


class GreedyMatchParams(Config):
    text: str = Field("shakespeare", description="text source; prompts come from its eval split")
    prompts: int = Field(4, ge=1, description="prompts compared")
    prompt_tokens: int = Field(32, ge=1, description="tokens per prompt")
    new_tokens: int = Field(16, ge=1, description="tokens generated per prompt")


class GreedyMatch(Workload[GreedyMatchParams]):
    """Share of greedy tokens equal to the unmodified model's (``greedy.token_match``)."""

    name = "greedy-match"
    kind = "accuracy"  # listed under a suite's accuracy:, run after the measure workload
    Params = GreedyMatchParams
    text_splits = ("eval",)  # the harness loads params.text's eval split into ctx.texts
    uses_reference = True  # reference() runs once on the unmodified model

    def reference(self, model: Any, ctx: WorkloadContext) -> list[list[int]]:
        return [self._continue(Prepared(model), prompt, ctx) for prompt in self._prompts(ctx)]

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        shares = []
        for prompt, expected in zip(self._prompts(ctx), ctx.reference, strict=True):
            got = self._continue(prepared, prompt, ctx)
            shares.append(sum(a == b for a, b in zip(got, expected, strict=True)) / len(expected))
        value = Value(
            GREEDY_MATCH.name,
            sum(shares) / len(shares),
            GREEDY_MATCH.unit,
            n=len(shares),
            source="greedy",
            samples=tuple(shares),
        )
        return Measurement((value,))

    def _prompts(self, ctx: WorkloadContext) -> list[list[int]]:
        p = self.params
        need = p.prompts * p.prompt_tokens
        text = ctx.text(p.text, "eval")
        ids = ctx.tokenizer(text[: 16 * need]).input_ids  # a prefix: tokens are < 16 chars
        if len(ids) < need:
            ids = ctx.tokenizer(text).input_ids
        if len(ids) < need:
            raise BenchError(
                f"greedy-match: text {p.text!r} has {len(ids)} eval tokens, fewer than "
                f"prompts × prompt_tokens = {need}; lower either."
            )
        n = p.prompt_tokens
        return [ids[i * n : (i + 1) * n] for i in range(p.prompts)]

    def _continue(self, prepared: Prepared, prompt: list[int], ctx: WorkloadContext) -> list[int]:
        import torch

        ids = torch.tensor([prompt], device=ctx.device)
        # The stack's cache and generation settings, greedy, exactly new_tokens tokens.
        args = prepared.generate_args(ids, self.params.new_tokens, ctx.tokenizer)
        with torch.inference_mode():
            out = prepared.model.generate(**args, min_new_tokens=self.params.new_tokens)
        sequences = getattr(out, "sequences", out)
        return [int(t) for t in sequences[0, len(prompt) :]]
