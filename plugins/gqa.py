"""``gqa``: convert a model's attention to ``kv_heads`` key/value heads (GQA, MQA or MHA).

Fewer heads than the model has: the key and value projections of the heads in each group
are mean-pooled into one head (Ainslie et al. 2023, §2.2, "Uptraining": the conversion
before uptraining; ``kv_heads: 1`` is MQA, Shazeer 2019). More heads: each head is
replicated, which is lossless: it gives the multi-head baseline of a GQA checkpoint.

Query head ``i`` of ``H`` attends with key/value head ``⌊i·N/H⌋`` for ``N`` KV heads, so a
new head pools (or copies) exactly the old heads its query heads used. The KV cache holds
``N`` heads per layer: its bytes scale by ``N / N_before`` (REFERENCE eq. 2).

Works for Llama/Mistral/Qwen-style attention: a module with ``k_proj`` and ``v_proj``
linear layers and a ``num_key_value_groups`` attribute, and a config with
``num_attention_heads`` (and ``num_key_value_heads``). Without uptraining, pooling loses
quality; the benchmark measures how much.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from harness import Applied, BenchError, Config, Context, MetricDef, Prepared, Technique, hookimpl
from harness.estimate import Architecture, Effect, Shape


class GQAConfig(Config):
    kv_heads: int = Field(ge=1, description="key/value heads after conversion (1 = MQA)")


def heads(model_config: Mapping[str, Any]) -> tuple[int, int, int | None]:
    """(query heads, key/value heads, head dim or None) from a model's config.json dict.

    Raises:
        BenchError: the config names no ``num_attention_heads``.
    """
    text = model_config.get("text_config")
    cfg = text if isinstance(text, Mapping) and "num_attention_heads" in text else model_config
    n_heads = cfg.get("num_attention_heads")
    if not isinstance(n_heads, int):
        arch = ", ".join(model_config.get("architectures") or [str(model_config.get("model_type"))])
        raise BenchError(
            f"gqa: model {arch} has no num_attention_heads in its config; gqa converts "
            "Llama/Mistral/Qwen-style attention. Remove gqa for this model."
        )
    kv = cfg.get("num_key_value_heads") or n_heads
    return n_heads, int(kv), cfg.get("head_dim")


class GQA(Technique[GQAConfig]):
    """Mean-pool (or replicate) key/value heads to ``kv_heads`` heads."""

    name = "gqa"
    kind = frozenset({"inference"})
    Config = GQAConfig
    mutates_weights = True

    @classmethod
    def validate_model(cls, config: Mapping[str, Any], model_config: Mapping[str, Any]) -> None:
        """Check ``kv_heads`` against the model's heads (``bench check`` and ``prepare``).

        Raises:
            BenchError: the heads do not divide, with the values that would.
        """
        n_heads, kv, _ = heads(model_config)
        want = int(config["kv_heads"])
        options = [d for d in range(1, n_heads + 1) if n_heads % d == 0]
        fits = [d for d in options if d % kv == 0 or kv % d == 0]
        if want not in fits:
            raise BenchError(
                f"gqa: kv_heads {want} does not fit a model with {n_heads} query heads and "
                f"{kv} key/value heads: it must divide {n_heads} and divide or be a multiple "
                f"of {kv}. Use kv_heads in {fits}."
            )

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        model = prepared.model
        config = model.config
        self.validate_model(self.config.model_dump(), config.to_dict())
        attention = _attention_modules(model)
        n_heads, kv, head_dim = heads(config.to_dict())
        want: int = self.config.kv_heads
        ctx.state["before"], ctx.state["after"] = kv, want
        if want == kv:
            return prepared
        text = getattr(config, "text_config", None)
        target = text if text is not None and hasattr(text, "num_key_value_heads") else config
        for module in attention:
            dim = head_dim or module.k_proj.out_features // kv
            module.k_proj = convert_heads(module.k_proj, kv, want, dim)
            module.v_proj = convert_heads(module.v_proj, kv, want, dim)
            module.num_key_value_groups = n_heads // want
            if hasattr(module, "num_key_value_heads"):
                module.num_key_value_heads = want
        target.num_key_value_heads = want
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """``kv_heads`` key/value heads: the k/v projections and the KV cache scale by
        kv_heads / kv_heads before (REFERENCE eq. 2)."""
        before = effect.kv_heads or arch.num_kv_heads
        want = self.config.kv_heads
        try:
            self.validate_model(
                self.config.model_dump(),
                {"num_attention_heads": arch.num_heads, "num_key_value_heads": before},
            )
        except BenchError as exc:
            return effect.cannot("memory", str(exc))
        return effect.note(f"gqa: {before} -> {want} key/value heads", kv_heads=want)

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """The config and every attention module's key/value projections have ``kv_heads``
        heads (the KV cache is built from them)."""
        model = prepared.model
        want = self.config.kv_heads
        n_heads, kv, head_dim = heads(model.config.to_dict())
        attention = _attention_modules(model)
        shapes = set()
        for module in attention:
            dim = head_dim or module.k_proj.out_features // kv
            shapes.add((module.k_proj.out_features // dim, module.v_proj.out_features // dim))
            shapes.add((n_heads // module.num_key_value_groups,) * 2)
        found = (
            f"config {kv} key/value heads; {len(attention)} attention modules project to "
            f"{', '.join(sorted({str(k) for k, _ in shapes}))} key heads "
            f"(asked for {want}, from {ctx.state['before']})"
        )
        ok = kv == want and shapes == {(want, want)}
        return Applied(ok, found, {"gqa.kv_heads_after": float(kv)})

    def metrics(self, ctx: Context) -> dict[str, float]:
        return {
            "gqa.kv_heads_before": float(ctx.state["before"]),
            "gqa.kv_heads_after": float(ctx.state["after"]),
        }


def _attention_modules(model: Any) -> list[Any]:
    """Every module with ``k_proj``/``v_proj`` layers and ``num_key_value_groups``.

    Raises:
        BenchError: there is none, or their projections are not plain float linear layers
            (already quantized: pooling codes would be meaningless).
    """
    import torch

    found = [
        m
        for m in model.modules()
        if hasattr(m, "k_proj") and hasattr(m, "v_proj") and hasattr(m, "num_key_value_groups")
    ]
    if not found:
        raise BenchError(
            f"gqa: {type(model).__name__} has no Llama/Mistral/Qwen-style attention (modules "
            "with k_proj, v_proj and num_key_value_groups). Remove gqa for this model."
        )
    for m in found:
        for proj in (m.k_proj, m.v_proj):
            weight = getattr(proj, "weight", None)
            plain = type(proj) is torch.nn.Linear and type(weight) is torch.nn.Parameter
            if not plain or not weight.is_floating_point():  # type: ignore[union-attr]
                raise BenchError(
                    f"gqa: the key/value projections are {type(proj).__name__} with "
                    f"{type(weight).__name__} weights, not float torch.nn.Linear: put "
                    "gqa before weight-quant (or any technique replacing linear layers) in the "
                    "stack."
                )
    return found


def convert_heads(linear: Any, before: int, after: int, head_dim: int) -> Any:
    """A new linear layer with ``after`` heads of ``head_dim`` outputs each.

    ``after < before``: head ``g`` is the mean of old heads ``g·s … g·s + s − 1``,
    ``s = before / after`` (weights and bias). ``after > before``: old head ``j`` is copied
    to heads ``j·r … j·r + r − 1``, ``r = after / before``.
    """
    import torch

    w = linear.weight.detach().reshape(before, head_dim, -1)
    b = linear.bias.detach().reshape(before, head_dim) if linear.bias is not None else None

    def regroup(t: Any) -> Any:
        if after < before:
            pooled = t.float().reshape(after, before // after, *t.shape[1:]).mean(dim=1)
            return pooled.to(t.dtype)
        return t.repeat_interleave(after // before, dim=0)

    new = torch.nn.Linear(
        linear.in_features,
        after * head_dim,
        bias=b is not None,
        device="meta",
        dtype=linear.weight.dtype,
    )
    grad = linear.weight.requires_grad
    new.weight = torch.nn.Parameter(
        regroup(w).reshape(after * head_dim, -1).contiguous(), requires_grad=grad
    )
    if b is not None:
        new.bias = torch.nn.Parameter(regroup(b).reshape(-1).contiguous(), requires_grad=grad)
    return new


METRICS = [
    MetricDef("gqa.kv_heads_before", "heads", False, "key/value heads of the loaded model"),
    MetricDef("gqa.kv_heads_after", "heads", False, "key/value heads after the conversion"),
]


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [GQA]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
