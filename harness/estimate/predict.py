"""The estimate: a technique stack's effect, then roofline stages and memory on a device.

    stack_effect   techniques -> Effect       (each ``Technique.estimate``, in stack order)
    predict        arch, device, shape, effect -> Estimate
    estimate       model, device, workload, dtype, stack specs -> Estimate  (the API)

Pure arithmetic over a config: no model is loaded, no torch is imported; a 70B model at
128k context takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from harness.errors import BenchError
from harness.estimate.arch import DTYPE_BYTES, DTYPE_NAMES, Architecture, load_architecture
from harness.estimate.devices import Device, find_device
from harness.estimate.effect import Effect, Shape, base_effect, effective
from harness.estimate.memory import Memory, kv_cache, memory
from harness.estimate.result import Estimate, StageEstimate
from harness.estimate.roofline import (
    Analysed,
    Row,
    analyse,
    attended,
    layer_rows,
    model_rows,
    offload_rows,
    peak_for,
    scoring_rows,
    stage_time,
)

if TYPE_CHECKING:
    from harness.registry import Registry
    from harness.technique import Technique

StackSpec = str | Mapping[str, Any]


def stack_effect(
    techniques: Sequence[Technique], arch: Architecture, shape: Shape, base: Effect
) -> tuple[Effect, tuple[str, ...]]:
    """Apply each technique's ``estimate`` in order.

    Returns:
        The stack's effect and the names of the techniques that returned None (no
        estimate); those are skipped, and a caller must not report numbers then.
    """
    effect = base
    missing: list[str] = []
    for technique in techniques:
        out = technique.estimate(effect, arch, shape)
        if out is None:
            missing.append(technique.name)
        else:
            effect = out
    return effect, tuple(missing)


def _analysed(rows: Sequence[Row], device: Device, peak: float) -> tuple[Analysed, ...]:
    host = device.host_link_bytes_s or 0.0
    return tuple(
        analyse(r, peak, host if r.link == "host" else device.bandwidth_bytes_s)
        for r in rows
        if r.link != "host" or host
    )


def _no_host_link(rows: Sequence[Row], device: Device) -> str | None:
    if any(r.link == "host" for r in rows) and not device.host_link_bytes_s:
        return f"device {device.name} has no host link bandwidth in the table (offload)"
    return None


def _draft_rows(arch: Architecture, shape: Shape, effect: Effect, n: int) -> list[Row]:
    """One drafted token's rows × ``draft_tokens``: a draft model's or the first layers'."""
    gamma = effect.draft_tokens
    if gamma <= 0 or (effect.draft is None and effect.draft_layers is None):
        return []
    b = shape.batch_size
    if effect.draft is not None:
        plain = replace(effect, weights=None, kv=None, kv_budget_tokens=None)
        source, layers = effect.draft, None
    else:
        plain, source, layers = effect, arch, effect.draft_layers
    rows = layer_rows("decode", source, plain, batch=b, q=1, n=n, count=layers)
    rows += model_rows("decode", source, plain, batch=b, q=1, logits=1)
    return [replace(r, name=f"draft.{r.name}", count=r.count * gamma) for r in rows]


def _generate_stages(
    arch: Architecture, device: Device, shape: Shape, effect: Effect, mem: Memory
) -> tuple[StageEstimate, StageEstimate]:
    b, p = shape.batch_size, shape.prompt_tokens
    peak, why = peak_for(device, effect)
    all_weights = mem.weights_bytes + mem.offloaded_bytes
    prompt_kv = kv_cache(arch, replace(shape, new_tokens=1), effect)

    prefill = layer_rows("prefill", arch, effect, batch=b, q=p, n=p)
    prefill += model_rows("prefill", arch, effect, batch=b, q=p, logits=1)
    prefill += scoring_rows("prefill", arch, effect, batch=b, q=effect.score_rows, n=p)
    prefill += offload_rows("prefill", effect, all_weights, prompt_kv)
    if effect.draft is not None:
        draft = replace(effect, weights=None, kv=None)
        prefill += [
            replace(r, name=f"draft.{r.name}")
            for r in layer_rows("prefill", effect.draft, draft, batch=b, q=p, n=p)
            + model_rows("prefill", effect.draft, draft, batch=b, q=p, logits=1)
        ]

    q = 1 + effect.draft_tokens
    n = attended(shape, effect, shape.kv_tokens)
    decode = layer_rows("decode", arch, effect, batch=b, q=q, n=n)
    decode += model_rows("decode", arch, effect, batch=b, q=q, logits=q)
    if effect.score_decode:
        decode += scoring_rows("decode", arch, effect, batch=b, q=q, n=n)
    decode += offload_rows("decode", effect, all_weights, mem.kv_cache_bytes)
    decode += _draft_rows(arch, shape, effect, shape.kv_tokens)

    stages = []
    for stage, rows in (("prefill", prefill), ("decode", decode)):
        reason = effect.unknown_reason(stage) or (why if peak is None else None)  # type: ignore[arg-type]
        reason = reason or _no_host_link(rows, device)
        analysed = _analysed(rows, device, peak or 1.0)
        step = None if reason else stage_time(analysed)
        per_step = effect.tokens_per_step if stage == "decode" else 1.0
        if stage == "decode" and per_step is None:
            reason = reason or "tokens per decode step unknown"
        time = step / per_step if step is not None and per_step else None
        kv = n if stage == "decode" else p
        stages.append(StageEstimate(stage, analysed, kv, step, time, per_step, reason))
    return stages[0], stages[1]


def _train_stage(
    arch: Architecture, device: Device, shape: Shape, effect: Effect, mem: Memory
) -> StageEstimate:
    """One training step: forward (rows), backward ≈ 2 × forward, a recomputed forward with
    activation checkpointing, and the optimizer's pass over weights, gradients and state
    (read and write weights and state, read gradients) at memory bandwidth."""
    b, s = shape.batch_size, shape.prompt_tokens
    peak, why = peak_for(device, effect, training=True)
    compute = replace(effect, dtype=effect.autocast_dtype or effect.dtype)
    rows = layer_rows("train", arch, compute, batch=b, q=s, n=s)
    rows += model_rows("train", arch, compute, batch=b, q=s, logits=s)
    analysed = _analysed(rows, device, peak or 1.0)
    reason = effect.unknown_reason("train") or (why if peak is None else None)
    if reason:
        return StageEstimate("train", analysed, s, None, None, reason=reason)
    forward = stage_time(analysed)
    passes = 4.0 if effect.activation_checkpointing else 3.0
    update = 2 * mem.weights_bytes + mem.gradient_bytes + 2 * mem.optimizer_state_bytes
    step = passes * forward + update / device.bandwidth_bytes_s
    return StageEstimate("train", analysed, s, forward, step)


def predict(
    arch: Architecture,
    device: Device,
    shape: Shape,
    effect: Effect,
    *,
    stack: Sequence[str] = (),
    capacity_bytes: float | None = None,
) -> Estimate:
    """Roofline stages and memory of ``shape`` on ``device`` for a stack's ``effect``."""
    run = effective(arch, effect)
    unknown = {q: why for q, why in effect.unknown}
    mem = None if "memory" in unknown else memory(run, shape, effect)
    base = Estimate(
        arch=run,
        device=device,
        shape=shape,
        dtype=effect.dtype,
        stack=tuple(stack),
        notes=effect.notes,
        unknown=unknown,
        memory=mem,
        capacity_bytes=capacity_bytes
        if capacity_bytes is not None
        else device.memory_bytes or None,
    )
    if mem is None:
        return base
    if shape.kind == "train":
        return replace(base, train=_train_stage(run, device, shape, effect, mem))
    prefill, decode = _generate_stages(run, device, shape, effect, mem)
    return replace(base, prefill=prefill, decode=decode)


def estimate(
    model: str | Architecture,
    device: str | Device = "cpu",
    shape: Shape | None = None,
    *,
    dtype: str | None = None,
    stack: Sequence[StackSpec] = (),
    registry: Registry | None = None,
    capacity_bytes: float | None = None,
    attention: Literal["fused", "unfused"] = "fused",
) -> Estimate:
    """Predict a stack on a device, offline, from the model's config.

    Args:
        model: a model id or path (``load_architecture``), or an ``Architecture``.
        device: a device table name (``a6000``, ``h100-sxm``, ``cpu``) or a ``Device``.
        shape: the workload (default: a 128-token prompt, one new token, batch 1).
        dtype: ``float32``/``bfloat16``/``float16`` (also ``fp32``, ``bf16``, ``fp16``);
            None: the checkpoint's dtype.
        stack: techniques as in a suite (``"baseline"``, ``{"weight-quant": {"bits": 4}}``).
        registry: installed plugins (default: load them).
        capacity_bytes: memory available (default: the device table's).
        attention: ``fused`` (SDPA, FlashAttention) or ``unfused`` (seed 003's Table 1).

    Raises:
        BenchError: an unknown model, device, dtype, technique or technique parameter.
    """
    arch = model if isinstance(model, Architecture) else load_architecture(model)
    entry = device if isinstance(device, Device) else find_device(device)
    shape = shape or Shape()
    compute = DTYPE_NAMES.get(dtype, "") if dtype else arch.dtype
    if compute not in DTYPE_BYTES:
        raise BenchError(
            f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16 (fp32, bf16, fp16)"
        )
    techniques = build_techniques(stack, registry)
    base = base_effect(compute, entry.kind, attention)
    effect, missing = stack_effect(techniques, arch, shape, base)
    labels = tuple(t.describe(t.config.model_dump()) for t in techniques)
    if missing:
        return Estimate(arch, entry, shape, compute, labels, no_estimate=missing)
    return predict(arch, entry, shape, effect, stack=labels, capacity_bytes=capacity_bytes)


@cache
def _installed() -> Registry:
    """The installed plugins, loaded once per process."""
    from harness.plugins import get_plugin_manager
    from harness.registry import Registry

    return Registry(get_plugin_manager())


def build_techniques(
    stack: Sequence[StackSpec], registry: Registry | None = None
) -> list[Technique]:
    """Technique instances of suite-style stack entries, their configs validated.

    Raises:
        BenchError: an unknown technique or an invalid parameter, naming the fix.
    """
    from pydantic import ValidationError

    if not stack:
        return []
    registry = registry or _installed()
    out = []
    for entry in stack:
        if isinstance(entry, str):
            name, params = entry, {}
        elif isinstance(entry, Mapping) and len(entry) == 1:
            ((name, raw),) = entry.items()
            params = dict(raw or {})
        else:
            raise BenchError(
                f"a technique is a name or one name with its parameters, e.g. "
                f"{{weight-quant: {{bits: 4}}}}; got {entry!r}"
            )
        cls = registry.techniques.get(name)
        if cls is None:
            raise BenchError(
                f"unknown technique {name!r}. Installed: {', '.join(sorted(registry.techniques))}. "
                "Run 'bench plugins'."
            )
        try:
            config = cls.Config.model_validate(params)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "parameters"
            raise BenchError(
                f"technique {name!r}: {field}: {err['msg']}. Parameters: "
                f"{', '.join(cls.Config.model_fields) or 'none'}."
            ) from exc
        out.append(cls(config))
    return out
