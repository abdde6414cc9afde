"""The ``train`` workload: causal-LM training steps on real text, the harness owning the loop.

Protocol: from ``torch.manual_seed(seed)``, the model (a fresh copy: ``mutates_weights`` makes
the worker reload it) is put in train mode; if no parameter requires a gradient (the
baseline), all do, otherwise a technique (LoRA) chose the trainable set and it is kept. The
optimizer is ``prepared.optimizer_factory(model)`` when a technique set one, else
``torch.optim.AdamW`` (states in the parameter dtype). Batches are consecutive, distinct
windows of ``batch_size × seq_len`` tokens of the text's ``prompt`` split (cycling when the
text runs out); labels are the inputs (the model shifts them).

Order: ``warmup_steps`` unmeasured steps; ``steps`` timed steps (``latency.step_s``: median
and 95% CI); one untimed step under the memory probes (grads and optimizer counted then);
one forward pass under the memory probes with its graph kept alive (activation peak); then
held-out perplexity over ``eval_tokens`` tokens of the ``eval`` split. The model receives
warmup_steps + steps + 1 optimizer updates in all.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from harness.footprint import module_bytes, tensor_bytes
from harness.markers import hookimpl
from harness.meter import clock, summarize, sync
from harness.probes import WINDOW_PEAK_BYTES
from harness.results import Measurement, MetricDef, Value
from harness.technique import Config, Prepared
from harness.workloads import Workload, WorkloadContext
from harness.workloads.generate import window


class TrainParams(Config):
    seq_len: int = Field(128, ge=2, description="tokens per training sequence")
    batch_size: int = Field(2, ge=1, description="sequences per step")
    steps: int = Field(8, ge=1, description="timed optimizer steps")
    warmup_steps: int = Field(1, ge=0, description="unmeasured steps before the timed ones")
    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    schedule: Literal["constant", "cosine"] = Field("constant", description="lr schedule")
    text: str = Field("shakespeare", description="text source (prompt split trains)")
    eval_tokens: int = Field(512, ge=2, description="held-out eval-split tokens for perplexity")
    seed: int = Field(0, description="torch.manual_seed before the model is touched")


def train_params(workload: dict[str, Any]) -> TrainParams:
    """The ``train`` parameters of a ``Context.workload`` dict (defaults filled in)."""
    return TrainParams.model_validate(workload.get("params", {}))


def token_windows(tokenizer: Any, text: str, count: int, length: int) -> Any:
    """``count`` consecutive windows of ``length`` tokens of ``text`` (cycled if it is short).

    Returns:
        a ``torch.long`` tensor of shape (count, length).
    """
    import torch

    needed = count * length
    chars = min(len(text), needed * 8)
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) >= needed or chars >= len(text):
            break
        chars = min(len(text), chars * 2)
    if len(ids) < length:
        raise ValueError(f"the text holds {len(ids)} tokens, fewer than one window of {length}")
    usable = len(ids) // length * length
    pool = [ids[i % usable] for i in range(needed)]
    return torch.tensor(pool, dtype=torch.long).view(count, length)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Learning-rate multiplier of update ``step`` (0-based) out of ``total``.

    constant: 1; cosine: ½·(1 + cos(π·step/total)) (decays from 1 towards 0, no warm-up).
    """
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def trainable(model: Any) -> list[Any]:
    """Parameters that require a gradient; all of them if none does (plain fine-tuning)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if params:
        return params
    for p in model.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def adamw_reference_bytes(params: Sequence[Any]) -> int:
    """Bytes AdamW's two moments would hold for ``params``: 2 × Σ numel × element size."""
    return 2 * sum(p.numel() * p.element_size() for p in params)


class Train(Workload[TrainParams]):
    """Timed optimizer steps; memory of grads, optimizer state and activations; final loss."""

    name = "train"
    Params = TrainParams
    text_splits = ("prompt", "eval")
    mutates_weights: ClassVar[bool] = True

    def tokens_needed(self) -> dict[tuple[str, str], int]:
        """One window of ``seq_len`` tokens per split; longer runs cycle the text."""
        p = self.params
        return {(p.text, "prompt"): p.seq_len, (p.text, "eval"): p.seq_len}

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        import torch

        p = self.params
        torch.manual_seed(p.seed)
        model = prepared.model
        model.train()
        params = trainable(model)
        optimizer = (
            prepared.optimizer_factory(model)
            if prepared.optimizer_factory is not None
            else torch.optim.AdamW(params, lr=p.lr)
        )
        total = p.warmup_steps + p.steps + 1
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(p.schedule, s, total)
        )
        batches = token_windows(
            ctx.tokenizer,
            ctx.text(p.text, "prompt"),
            total * p.batch_size + p.batch_size,
            p.seq_len,
        ).to(ctx.device)
        autocast = _autocast(prepared.autocast_dtype, ctx.device)
        scaler = (
            torch.amp.GradScaler(ctx.device.split(":")[0])
            if prepared.autocast_dtype == "float16"
            else None
        )
        grad_bytes: list[int] = []

        def forward(i: int) -> Any:
            ids = batches[i * p.batch_size : (i + 1) * p.batch_size]
            with autocast():
                return model(input_ids=ids, labels=ids, use_cache=False).loss

        def step(i: int, count_grads: bool = False) -> float:
            loss = forward(i)
            if scaler is not None:
                scaler.scale(loss).backward()
                if count_grads:
                    grad_bytes.append(tensor_bytes([q.grad for q in params if q.grad is not None]))
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if count_grads:
                    grad_bytes.append(tensor_bytes([q.grad for q in params if q.grad is not None]))
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            return float(loss.detach().float())

        memory = [pr for pr in ctx.probes if pr.phase == "memory" and pr.unavailable() is None]
        for i in range(p.warmup_steps):
            step(i)
        times: list[float] = []
        losses: list[float] = []
        for i in range(p.warmup_steps, p.warmup_steps + p.steps):
            sync(ctx.device)
            t0 = clock(ctx.device)
            losses.append(step(i))
            sync(ctx.device)
            times.append(clock(ctx.device) - t0)

        state_before = tensor_bytes(optimizer.state)
        with window(memory) as step_memory:
            step(total - 1, count_grads=True)
        state_bytes = tensor_bytes(optimizer.state)
        with window(memory) as forward_memory:
            loss = forward(total)  # graph kept alive until the window closes
        del loss
        ppl = _perplexity(model, ctx, p, autocast)
        model.eval()

        values = _step_values(times, p)
        values += step_memory
        weights = module_bytes(model)
        values += _peak_values(step_memory, weights + state_before)
        values += _activation_values(forward_memory)
        reference = adamw_reference_bytes(params)
        values += [
            Value("memory.grad_bytes", float(grad_bytes[-1]), "bytes", source="tensors"),
            Value("memory.optimizer_state_bytes", float(state_bytes), "bytes", source="tensors"),
            Value("memory.adamw_state_bytes", float(reference), "bytes", source="formula"),
            Value(
                "memory.optimizer_state_reduction",
                1.0 - state_bytes / reference if reference else 0.0,
                "ratio",
                source="tensors",
            ),
            Value("train.trainable_params", float(sum(q.numel() for q in params)), "params"),
            Value("train.loss_final", losses[-1], "nats", source="model"),
            Value("train.loss_first", losses[0], "nats", source="model"),
            Value("train.eval_perplexity", ppl, "ppl", source="model"),
        ]
        return Measurement(tuple(values), outputs={"losses": losses})


def _autocast(dtype: str | None, device: str) -> Callable[[], Any]:
    import torch

    if dtype is None:
        return contextlib.nullcontext
    kind = device.split(":")[0]
    return lambda: torch.autocast(kind, dtype=getattr(torch, dtype))


def _perplexity(model: Any, ctx: WorkloadContext, p: TrainParams, autocast: Any) -> float:
    """exp(Σ NLL / Σ predicted tokens) over ⌊eval_tokens / seq_len⌋ (≥ 1) non-overlapping
    windows of ``seq_len`` tokens of the ``eval`` split; each window predicts seq_len − 1."""
    import torch

    count = max(1, p.eval_tokens // p.seq_len)
    ids = token_windows(ctx.tokenizer, ctx.text(p.text, "eval"), count, p.seq_len).to(ctx.device)
    model.eval()
    nll = 0.0
    with torch.no_grad():
        for row in ids:
            with autocast():
                loss = model(input_ids=row[None], labels=row[None], use_cache=False).loss
            nll += float(loss.float()) * (p.seq_len - 1)
    return math.exp(nll / (count * (p.seq_len - 1)))


def _step_values(times: Sequence[float], p: TrainParams) -> list[Value]:
    """``latency.step_s`` and ``throughput.train_tok_s`` = batch × seq_len / step time, per
    step, as medians with 95% CIs."""
    tok = [p.batch_size * p.seq_len / t for t in times]
    values = []
    for name, samples, unit in (
        ("latency.step_s", times, "s"),
        ("throughput.train_tok_s", tok, "tok/s"),
    ):
        s = summarize(samples)
        values.append(Value(name, s.median, unit, s.ci_low, s.ci_high, s.n, source="clock"))
    return values


def _peak_values(step_memory: Sequence[Value], resident: int) -> list[Value]:
    """Where the probes give no absolute peak (CPU), ``memory.peak_alloc_bytes`` = weights +
    optimizer state held before the step + the step's window peak (grads are allocated
    inside the window: they are None at its start)."""
    names = {v.name for v in step_memory}
    peak = next((v for v in step_memory if v.name == WINDOW_PEAK_BYTES.name), None)
    if "memory.peak_alloc_bytes" in names or peak is None or peak.value is None:
        return []
    return [
        Value(
            "memory.peak_alloc_bytes",
            resident + peak.value,
            "bytes",
            source=f"weights+optimizer+{peak.source}",
        )
    ]


def _activation_values(forward_memory: Sequence[Value]) -> list[Value]:
    """``memory.activation_peak_bytes``: the window peak of one forward pass and loss with
    the autograd graph kept alive, above what was allocated at the window start (weights,
    optimizer state, the input batch; grads are None then)."""
    peak = next((v for v in forward_memory if v.name == WINDOW_PEAK_BYTES.name), None)
    if peak is None or peak.value is None:
        reason = peak.reason if peak is not None else "no memory probe measures a window peak"
        return [Value("memory.activation_peak_bytes", None, "bytes", reason=reason)]
    return [Value("memory.activation_peak_bytes", peak.value, "bytes", source=peak.source)]


METRICS = [
    MetricDef("latency.step_s", "s", False, "time of one optimizer step (forward+backward+step)"),
    MetricDef("throughput.train_tok_s", "tok/s", True, "batch_size × seq_len / step time"),
    MetricDef("memory.grad_bytes", "bytes", False, "bytes of the gradients after backward"),
    MetricDef(
        "memory.optimizer_state_bytes",
        "bytes",
        False,
        "distinct tensor storages reachable from optimizer.state (moments, projections, step)",
    ),
    MetricDef(
        "memory.adamw_state_bytes",
        "bytes",
        False,
        "what AdamW's two moments would hold for the trainable params: 2 × their bytes",
    ),
    MetricDef(
        "memory.optimizer_state_reduction",
        "ratio",
        True,
        "1 − optimizer_state_bytes / adamw_state_bytes (fraction of AdamW's state saved)",
    ),
    MetricDef(
        "memory.activation_peak_bytes",
        "bytes",
        False,
        "allocator window peak of one forward+loss with the graph kept alive",
    ),
    MetricDef("train.trainable_params", "params", False, "parameters that receive gradients"),
    MetricDef("train.loss_first", "nats", False, "training loss of the first timed step"),
    MetricDef("train.loss_final", "nats", False, "training loss of the last timed step"),
    MetricDef(
        "train.eval_perplexity",
        "ppl",
        False,
        "exp(mean NLL) on held-out eval-split windows",
        kind="accuracy",
    ),
]


@hookimpl
def register_workloads() -> list[type[Workload]]:
    return [Train]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
