"""Accuracy tasks ``perplexity`` (teacher-forced) and ``decode-perplexity`` (through the cache).

Both score the first tokens of a text source's held-out ``eval`` split, tokenized without
special tokens and cut to an exact count. Definitions and when to use which:
docs/accuracy.md.

- ``perplexity``: sliding windows over the text (Hugging Face's "perplexity of fixed-length
  models" recipe); each window is one forward pass without a cache, and only the tokens
  that the previous window did not score are scored, so every token is scored once, with at
  least ``window − stride`` tokens of context (except in the first window).
- ``decode-perplexity``: the first ``context_tokens`` are prefilled, then the next
  ``decode_tokens`` are fed one step at a time through ``model.generate`` with the stack's
  own cache (``prepared.cache_kwargs()``), each step forced to the text's next token. A KV
  eviction or quantization technique acts only after prefill, so only this task sees it.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence
from typing import Any

from pydantic import Field, model_validator

from harness.errors import BenchError
from harness.markers import hookimpl
from harness.results import Measurement, MetricDef, Value
from harness.technique import Config, Prepared
from harness.workloads import Workload, WorkloadContext

LN2 = math.log(2.0)


# --------------------------------------------------------------------------- shared helpers


@functools.lru_cache(maxsize=8)
def _token_prefix(tokenizer: Any, text: str, needed: int) -> tuple[int, ...]:
    chars = min(len(text), max(needed * 8, 1024))
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) >= needed + 16 or chars >= len(text):
            return tuple(ids)
        chars = min(len(text), chars * 2)


def text_tokens(tokenizer: Any, text: str, n: int, ref: str = "the text") -> list[int]:
    """The first ``n`` token ids of ``text`` (no special tokens added).

    A few more tokens than ``n`` are tokenized and dropped, so the last kept token is never
    a fragment of a word cut by the character limit.

    Raises:
        BenchError: the text holds fewer than ``n`` tokens.
    """
    ids = _token_prefix(tokenizer, text, n)
    if len(ids) < n:
        raise BenchError(
            f"{ref} holds {len(ids)} tokens, fewer than the {n} asked for: lower the task's "
            "token count or use a longer text."
        )
    return list(ids[:n])


def scored_bytes(tokenizer: Any, ids: Sequence[int]) -> int:
    """UTF-8 bytes of the text the scored tokens ``ids`` decode to (no clean-up of spaces)."""
    text = tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)
    return len(text.encode("utf-8"))


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def window_log_probs(model: Any, ids: Sequence[int], device: str, keep: int) -> Any:
    """Log-probabilities (float32, on ``device``) of the next token at the last ``keep`` positions.

    One forward pass over ``ids`` without a cache; ``logits_to_keep`` spares the language
    head the positions that are not needed when the model supports it.
    """
    import torch

    x = torch.tensor([list(ids)], dtype=torch.long, device=device)
    kwargs: dict[str, Any] = {"use_cache": False}
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    logits = model(input_ids=x, **kwargs).logits[0, -keep:]
    return torch.log_softmax(logits.float(), dim=-1)


def sliding_nll(model: Any, ids: Sequence[int], window: int, stride: int, device: str) -> Any:
    """Negative log-likelihood (nats) of tokens ``ids[1:]``, each scored once, teacher-forced.

    Windows start at 0, ``stride``, 2·``stride``, ... and end at ``min(start + window, N)``;
    the last window ends at N. A window scores the tokens after the previous window's end
    (the first window: all but its first token), each predicted from the tokens before it in
    the same window. With ``stride < window`` every token but the first is scored exactly
    once, and a token scored by window k > 0 has at least ``window − stride`` tokens of
    context.

    Returns:
        A float64 CPU tensor of N − 1 values: NLL of ``ids[i]`` at index ``i − 1``.
    """
    import torch

    n = len(ids)
    out: list[Any] = []
    prev_end = 0
    with torch.inference_mode():
        for begin in range(0, n, stride):
            end = min(begin + window, n)
            first = max(prev_end - begin, 1)  # index in the window of the first scored token
            targets = torch.tensor(ids[begin + first : end], device=device)
            logp = window_log_probs(model, ids[begin:end], device, keep=end - begin - first + 1)
            nll = -logp[:-1].gather(1, targets[:, None])[:, 0]
            out.append(nll.double().cpu())
            prev_end = end
            if end == n:
                break
    nll = torch.cat(out)
    if nll.numel() != n - 1:
        raise ValueError(f"scored {nll.numel()} of {n - 1} tokens: stride must be < window")
    return nll


def nll_values(
    nll: Any, n_bytes: int, source: str, ppl_name: str, bpb_name: str | None
) -> list[Value]:
    """Perplexity = exp(mean NLL); bits per byte = Σ NLL / ln 2 / bytes of the scored text."""
    total = float(nll.sum())
    n = int(nll.numel())
    values = [Value(ppl_name, math.exp(total / n), "ppl", n=n, source=source)]
    if bpb_name is not None:
        values.append(Value(bpb_name, total / LN2 / n_bytes, "bits/byte", n=n, source=source))
    return values


def check_length(model: Any, tokens: int, what: str) -> None:
    """Raise ``BenchError`` when ``tokens`` exceeds the model's position limit (if it has one)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and tokens > limit:
        raise BenchError(
            f"{what} is {tokens} tokens, longer than the model's {limit} positions: "
            "lower it in the suite's accuracy section."
        )


# --------------------------------------------------------------------------- perplexity


class PerplexityParams(Config):
    text: str = Field("shakespeare", description="text source; its 'eval' split is scored")
    tokens: int = Field(
        2048, ge=2, description="the first N tokens of the eval split (N − 1 are scored)"
    )
    window: int = Field(512, ge=2, description="tokens per forward pass (context limit)")
    stride: int = Field(
        256,
        ge=1,
        description="tokens each window advances (< window); every scored token after the "
        "first window sees at least window − stride tokens of context",
    )

    @model_validator(mode="after")
    def _stride_fits(self) -> PerplexityParams:
        if self.stride >= self.window:
            raise ValueError(
                "stride must be smaller than window: a window's first token is scored only "
                "as the last token of the window before (use stride = window − 1 for "
                "windows that barely overlap)"
            )
        return self


class Perplexity(Workload[PerplexityParams]):
    """Teacher-forced perplexity and bits per byte over held-out text (sliding window)."""

    name = "perplexity"
    kind = "accuracy"
    Params = PerplexityParams
    text_splits = ("eval",)

    def tokens_needed(self) -> dict[tuple[str, str], int]:
        return {(self.params.text, "eval"): self.params.tokens}

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        p = self.params
        check_length(prepared.model, p.window, "perplexity window")
        ids = text_tokens(ctx.tokenizer, ctx.text(p.text, "eval"), p.tokens, f"text {p.text!r}")
        nll = sliding_nll(prepared.model, ids, p.window, p.stride, ctx.device)
        n_bytes = scored_bytes(ctx.tokenizer, ids[1:])
        source = f"{p.text}:eval"
        values = nll_values(nll, n_bytes, source, "accuracy.perplexity", "accuracy.bits_per_byte")
        return Measurement(tuple(values))


# --------------------------------------------------------------------------- decode-perplexity


class DecodePerplexityParams(Config):
    text: str = Field("shakespeare", description="text source; its 'eval' split is scored")
    context_tokens: int = Field(256, ge=1, description="tokens prefilled before decoding")
    decode_tokens: int = Field(64, ge=1, description="tokens decoded one step at a time, scored")


class _TeacherForcing:
    """A logits processor that makes greedy decoding emit the text's next token.

    ``generate`` records the raw logits (``output_logits``); this only forces the choice.
    """

    def __init__(self, targets: Any, prompt_len: int) -> None:
        self.targets = targets
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        step = input_ids.shape[1] - self.prompt_len
        forced = scores.new_full(scores.shape, float("-inf"))
        forced[:, self.targets[step]] = 0.0
        return forced


def decode_nll(prepared: Prepared, ids: Sequence[int], context: int, ctx: WorkloadContext) -> Any:
    """NLL (nats) of ``ids[context:]``, decoded step by step after prefilling ``ids[:context]``.

    Runs ``model.generate`` with the stack's cache (``prepared.generate_args``, else the
    model's default dynamic cache), greedy, forced to the text's tokens; each token's NLL
    comes from the raw logits of the step that predicts it. ``prepared.generate_kwargs`` are
    not used: a draft model or prompt lookup would only change how fast the same tokens come.

    Returns:
        A float64 CPU tensor of ``len(ids) − context`` values.
    """
    import torch
    from transformers import LogitsProcessorList

    decode = len(ids) - context
    x = torch.tensor([list(ids[:context])], dtype=torch.long, device=ctx.device)
    targets = torch.tensor(ids[context:], dtype=torch.long, device=ctx.device)
    args = prepared.generate_args(x, decode, ctx.tokenizer, speculate=False)
    with torch.inference_mode():
        out = prepared.model.generate(
            **args,
            logits_processor=LogitsProcessorList([_TeacherForcing(targets, context)]),
            output_logits=True,
            return_dict_in_generate=True,
        )
    if len(out.logits) != decode:
        raise BenchError(
            f"decode-perplexity: generation stopped after {len(out.logits)} of {decode} steps "
            "(the text holds an end-of-sequence token): use another text."
        )
    nll = []
    for step, logits in enumerate(out.logits):
        logp = torch.log_softmax(logits[0].float(), dim=-1)
        nll.append(-logp[targets[step]].double().cpu())
    return torch.stack(nll)


class DecodePerplexity(Workload[DecodePerplexityParams]):
    """Perplexity of tokens decoded one at a time through the technique's own cache."""

    name = "decode-perplexity"
    kind = "accuracy"
    Params = DecodePerplexityParams
    text_splits = ("eval",)

    def tokens_needed(self) -> dict[tuple[str, str], int]:
        p = self.params
        return {(p.text, "eval"): p.context_tokens + p.decode_tokens}

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        p = self.params
        total = p.context_tokens + p.decode_tokens
        check_length(prepared.model, total, "decode-perplexity context + decode tokens")
        ids = text_tokens(ctx.tokenizer, ctx.text(p.text, "eval"), total, f"text {p.text!r}")
        nll = decode_nll(prepared, ids, p.context_tokens, ctx)
        source = f"{p.text}:eval:decode"
        return Measurement(tuple(nll_values(nll, 0, source, "accuracy.decode_perplexity", None)))


METRICS = [
    MetricDef(
        "accuracy.perplexity",
        "ppl",
        False,
        "exp(mean NLL) of held-out tokens, teacher-forced, sliding window (docs/accuracy.md)",
    ),
    MetricDef(
        "accuracy.bits_per_byte",
        "bits/byte",
        False,
        "total NLL in bits / UTF-8 bytes of the scored text; comparable across tokenizers",
    ),
    MetricDef(
        "accuracy.decode_perplexity",
        "ppl",
        False,
        "exp(mean NLL) of tokens decoded step by step through the stack's KV cache",
    ),
]


@hookimpl
def register_workloads() -> list[type[Workload]]:
    return [Perplexity, DecodePerplexity]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
