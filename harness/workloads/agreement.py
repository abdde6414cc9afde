"""Accuracy task ``agreement``: next-token agreement with the unmodified model.

On the first ``tokens`` tokens of a text source's ``eval`` split (non-overlapping windows
of ``window`` tokens, teacher-forced, no cache) both the stack's model and the reference
model (the model as loaded) give a next-token
distribution at every position. Over the N positions:

- ``accuracy.top1_agreement`` = (1/N) Σ 1[argmax p_ref = argmax p_stack]
- ``accuracy.kl_div`` = (1/N) Σ KL(p_ref ‖ p_stack) = (1/N) Σ Σ_v p_ref(v) (log p_ref(v) −
  log p_stack(v)), in nats (the direction llama.cpp's KL-divergence statistic uses).

Per-sample evidence: ``accuracy.top1_agreement`` keeps one sample per position (1 agree,
0 not) and ``accuracy.kl_div`` one per window (that window's mean KL), so where in the
text a stack departs from the unmodified model is stored, not only the average.

The reference log-probabilities are this task's ``reference`` outputs: the harness computes
them once per worker, model and parameters on the unmodified model and hands them over as
``WorkloadContext.reference`` (on the CPU, so they never count in a later cell's device
memory). The worker gives a model the stack has not touched: the loaded pristine model when
the stack runs on a fresh copy, an independent copy when the stack runs on the pristine
object itself (it may carry the stack's hooks).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness.markers import hookimpl
from harness.results import Measurement, MetricDef, Value
from harness.technique import Config, Prepared
from harness.workloads import Workload, WorkloadContext
from harness.workloads.perplexity import check_length, text_tokens, window_log_probs


class AgreementParams(Config):
    text: str = Field("shakespeare", description="text source; its 'eval' split is the input")
    tokens: int = Field(512, ge=1, description="positions compared: the first N eval tokens")
    window: int = Field(512, ge=1, description="tokens per forward pass (non-overlapping)")


def windows(ids: list[int], window: int) -> list[list[int]]:
    """``ids`` cut into consecutive pieces of at most ``window`` tokens."""
    return [ids[i : i + window] for i in range(0, len(ids), window)]


def log_probs(model: Any, ids: list[int], window: int, device: str) -> list[Any]:
    """Next-token log-probabilities (float32, CPU) at every position, window by window."""
    import torch

    with torch.inference_mode():
        return [
            window_log_probs(model, piece, device, keep=len(piece)).cpu()
            for piece in windows(ids, window)
        ]


def compare(reference: Any, candidate: Any) -> tuple[list[bool], float]:
    """(top-1 agreement per position, Σ KL(p_ref ‖ p_cand) in nats) over one window.

    Both arguments are log-probabilities of shape (positions, vocabulary).
    """
    import torch

    agree: list[bool] = (reference.argmax(-1) == candidate.argmax(-1)).tolist()
    # kl_div(input=log q, target=log p, log_target=True) sums p (log p − log q).
    kl = torch.nn.functional.kl_div(candidate, reference, reduction="sum", log_target=True)
    return agree, float(kl.double())


class Agreement(Workload[AgreementParams]):
    """Top-1 agreement and KL divergence against the unmodified model."""

    name = "agreement"
    kind = "accuracy"
    Params = AgreementParams
    text_splits = ("eval",)
    uses_reference = True

    def tokens_needed(self) -> dict[tuple[str, str], int]:
        return {(self.params.text, "eval"): self.params.tokens}

    def reference(self, model: Any, ctx: WorkloadContext) -> list[Any]:
        """The unmodified model's log-probabilities, window by window (float32, CPU)."""
        return log_probs(model, self._ids(ctx), self.params.window, ctx.device)

    def _ids(self, ctx: WorkloadContext) -> list[int]:
        p = self.params
        return text_tokens(ctx.tokenizer, ctx.text(p.text, "eval"), p.tokens, f"text {p.text!r}")

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        import torch

        p = self.params
        if ctx.reference is None:
            reason = "no reference outputs in this context"
            return Measurement(
                (
                    Value("accuracy.top1_agreement", None, "fraction", reason=reason),
                    Value("accuracy.kl_div", None, "nats", reason=reason),
                )
            )
        check_length(prepared.model, p.window, "agreement window")
        ids = self._ids(ctx)
        reference = ctx.reference
        agree: list[float] = []
        kl: list[tuple[float, int]] = []  # (Σ KL, positions) per window
        with torch.inference_mode():
            for ref, piece in zip(reference, windows(ids, p.window), strict=True):
                cand = window_log_probs(prepared.model, piece, ctx.device, keep=len(piece))
                a, k = compare(ref, cand.cpu())
                agree.extend(1.0 if ok else 0.0 for ok in a)
                kl.append((k, len(piece)))
        n = len(ids)
        source = f"{p.text}:eval"
        total_kl = sum(k for k, _ in kl)
        return Measurement(
            (
                Value(
                    "accuracy.top1_agreement",
                    sum(agree) / n,
                    "fraction",
                    n=n,
                    source=source,
                    samples=tuple(agree),
                ),
                Value(
                    "accuracy.kl_div",
                    total_kl / n,
                    "nats",
                    n=n,
                    source=source,
                    samples=tuple(k / m for k, m in kl),
                ),
            )
        )


METRICS = [
    MetricDef(
        "accuracy.top1_agreement",
        "fraction",
        True,
        "share of positions where the stack's top next token equals the unmodified model's",
    ),
    MetricDef(
        "accuracy.kl_div",
        "nats",
        False,
        "mean KL(p_reference ‖ p_stack) of next-token distributions per position",
    ),
]


@hookimpl
def register_workloads() -> list[type[Workload]]:
    return [Agreement]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
