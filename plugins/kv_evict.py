"""``kv-evict``: bound the KV cache to a token budget by evicting entries while generating.

Policies (``plugins.kv_policies``), all as transformers cache layers:

* ``streaming`` (StreamingLLM): keep ``sink_tokens`` initial tokens and the most recent
  ``budget − sink_tokens``; no scores needed.
* ``h2o`` (Heavy-Hitter Oracle): keep ``recent_tokens`` newest tokens plus the
  ``budget − recent_tokens`` older keys with the largest attention accumulated since the
  prompt, chosen per KV head (scores summed over the query heads of each group).
* ``snapkv``: once, after prefill, keep per KV head the prompt positions the last
  ``window`` prompt queries attend to most (average-pooled over ``kernel`` neighbours)
  plus the window; generated tokens are appended (the budget bounds the prompt part).

Budget: ``budget_tokens`` (absolute) or ``budget_ratio`` × the workload's
``prompt_tokens`` or ``context_tokens`` (rounded down); it must exceed the tokens a
policy always keeps (``sink_tokens``, ``recent_tokens``, ``window``).

Scores need the post-RoPE queries: the model's attention implementation is wrapped
(``kv-evict|sdpa`` / ``kv-evict|eager``: the original kernel computes the output, then the
cache layer scores and evicts). Positions are not re-rotated (see ``kv_policies``).
Metrics: ``kv.budget_tokens`` and ``kv.evicted_tokens`` (per sequence and layer, layer 0,
of the cell's last generation = tokens seen − tokens kept).

kv-evict is the stack's KV cache *builder* and stores codes (``harness.kvcache``): stacked
with a KV storage such as ``kv-quant`` (either order), the kept tokens are held as the
storage's codes plus a full-precision residual (see ``kv_policies``).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from harness import Applied, Config, Context, MetricDef, Prepared, Skip, Technique, hookimpl
from harness.estimate import Architecture, Effect, Shape
from harness.kvcache import KVCodec

if TYPE_CHECKING:  # kv_policies imports transformers: loaded in prepare, not with the plugin
    from plugins.kv_policies import EvictingCache

#: Query rows ``kv_policies`` scores at a time (bounds the score matrix of a long prefill).
QUERY_CHUNK = 512

_WRAPPED = ("sdpa", "eager")


class KVEvictConfig(Config):
    policy: Literal["streaming", "h2o", "snapkv"] = Field(description="what to keep")
    budget_tokens: int | None = Field(None, ge=2, description="tokens kept per head")
    budget_ratio: float | None = Field(
        None, gt=0, le=1, description="tokens kept as a fraction of prompt_tokens"
    )
    sink_tokens: int = Field(4, ge=0, description="initial tokens always kept (streaming)")
    recent_tokens: int | None = Field(
        None, ge=1, description="newest tokens always kept (h2o; default half the budget)"
    )
    window: int = Field(32, ge=1, description="observation window at the prompt's end (snapkv)")
    kernel: int = Field(7, ge=1, description="pooling width over scores, odd (snapkv)")

    @model_validator(mode="after")
    def _one_budget(self) -> KVEvictConfig:
        if (self.budget_tokens is None) == (self.budget_ratio is None):
            raise ValueError("give exactly one of budget_tokens and budget_ratio")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, not {self.kernel}")
        return self


class KVEvict(Technique[KVEvictConfig]):
    """Evict KV-cache entries to a fixed budget (StreamingLLM, H2O, SnapKV)."""

    name = "kv-evict"
    kind = frozenset({"inference"})
    Config = KVEvictConfig

    @property
    def reads_workload(self) -> bool:
        """A ``budget_ratio`` is a share of the workload's prompt: a model per variant."""
        return self.config.budget_ratio is not None

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        c = self.config
        budget = self.budget(ctx)
        reserved = {"streaming": c.sink_tokens, "h2o": c.recent_tokens or budget // 2}
        reserved["snapkv"] = c.window
        if budget <= reserved[c.policy]:
            raise Skip(f"budget {budget} must exceed the {reserved[c.policy]} reserved tokens")
        model = prepared.model
        text = model.config.get_text_config(decoder=True)
        kinds = set(getattr(text, "layer_types", None) or [])
        if kinds - {"full_attention"}:
            raise Skip(f"kv-evict supports full-attention layers only; the model has {kinds}")
        base = model.config._attn_implementation
        if base not in _WRAPPED:
            raise Skip(f"kv-evict wraps sdpa or eager attention, not {base}")
        attention = [
            m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "scaling")
        ]
        ctx.state["budget"] = budget

        from plugins.kv_policies import EvictingCache, H2OLayer, SnapKVLayer, StreamingLayer

        def build(stored: Sequence[KVCodec] | None) -> EvictingCache:
            layers: list[Any]
            codecs: Sequence[KVCodec | None] = stored or [None] * text.num_hidden_layers
            if c.policy == "streaming":
                layers = [StreamingLayer(budget, c.sink_tokens, q) for q in codecs]
            elif c.policy == "h2o":
                layers = [H2OLayer(budget, reserved["h2o"], q) for q in codecs]
            else:
                layers = [SnapKVLayer(budget, c.window, c.kernel, q) for q in codecs]
            cache = EvictingCache(layers)
            ref = weakref.ref(cache)
            for module in attention:
                module._kv_evict_cache = ref  # a weak reference: the model does not own it
            ctx.state["tally"] = layers[0].tally = {"evicted": 0}  # the last generation's
            return cache

        prepared.set_cache(build, self.name, stores_codes=True)
        _register()
        model.set_attn_implementation(f"kv-evict|{base}")

        def undo() -> None:
            model.set_attn_implementation(base)
            for module in attention:
                vars(module).pop("_kv_evict_cache", None)

        prepared.cleanup.append(undo)
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """At most the budget's tokens per head after each step (SnapKV: the budget bounds
        the prompt, generated tokens are appended); H2O scores every query at prefill and
        each decode step and keeps an fp32 score per kept key; SnapKV scores the window."""
        c = self.config
        budget = c.budget_tokens or int((c.budget_ratio or 0.0) * workload.prompt_tokens)
        reserved = {"streaming": c.sink_tokens, "h2o": c.recent_tokens or budget // 2}
        reserved["snapkv"] = c.window
        if budget <= reserved[c.policy]:
            return effect.cannot(
                "memory",
                f"kv-evict: budget {budget} is not above the "
                f"{reserved[c.policy]} reserved tokens: the cell is skipped",
            )
        text = f"kv-evict: {c.policy}, {budget} tokens kept per head"
        if c.policy == "streaming":
            return effect.note(text, kv_budget_tokens=budget)
        if c.policy == "h2o":
            return effect.note(
                text,
                kv_budget_tokens=budget,
                score_rows=workload.prompt_tokens,
                score_chunk=QUERY_CHUNK,
                score_decode=True,
                kv_state_bytes_per_token=4.0,
            )
        return effect.note(
            text + " (prompt part)",
            kv_budget_tokens=budget,
            kv_budget_prompt_only=True,
            score_rows=min(c.window, workload.prompt_tokens),
        )

    def budget(self, ctx: Context) -> int:
        """``budget_tokens``, or ⌊``budget_ratio`` × prompt_tokens⌋."""
        c = self.config
        if c.budget_tokens is not None:
            return c.budget_tokens
        params = ctx.workload.get("params", {})
        prompt = params.get("prompt_tokens", params.get("context_tokens"))
        if not isinstance(prompt, int):
            raise Skip(
                "budget_ratio needs one prompt_tokens (or context_tokens) per cell; "
                "use budget_tokens"
            )
        return int((c.budget_ratio or 0.0) * prompt)

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """At the end of the cell's last generation, layer 0 held at most the budget (SnapKV:
        the budget plus the tokens generated after prefill) and had evicted something.

        Evidence: ``kv.final_cache_tokens`` (kept per head, layer 0) and ``kv.seen_tokens``.
        """
        tally = ctx.state.get("tally")
        budget = ctx.state["budget"]
        if not tally or "kept" not in tally:
            return Applied(False, "no generation went through the evicting cache")
        kept, seen, evicted = tally["kept"], tally["seen"], tally["evicted"]
        # SnapKV bounds the prompt only: generated tokens are appended after prefill.
        bound = budget + (seen - tally["prompt"] if self.config.policy == "snapkv" else 0)
        evidence = {"kv.final_cache_tokens": float(kept), "kv.seen_tokens": float(seen)}
        found = f"layer 0 kept {kept} of {seen} tokens seen (budget {budget}, {evicted} evicted)"
        if kept > bound:
            return Applied(False, f"{found}: above the bound {bound}", evidence)
        if evicted == 0:
            return Applied(
                False,
                f"{found}: the cell's tokens never exceeded the budget, nothing evicted",
                evidence,
            )
        return Applied(True, found, evidence)

    def metrics(self, ctx: Context) -> dict[str, float]:
        out = {"kv.budget_tokens": float(ctx.state["budget"])} if "budget" in ctx.state else {}
        if "tally" in ctx.state:
            out["kv.evicted_tokens"] = float(ctx.state["tally"]["evicted"])
        return out


def _wrap(base: str) -> Any:
    def attention(module: Any, query: Any, key: Any, value: Any, mask: Any, **kwargs: Any) -> Any:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        if base == "eager":
            from transformers.models.llama.modeling_llama import eager_attention_forward

            fn = eager_attention_forward
        else:
            fn = ALL_ATTENTION_FUNCTIONS[base]
        out = fn(module, query, key, value, mask, **kwargs)
        ref = getattr(module, "_kv_evict_cache", None)
        cache = ref() if ref is not None else None
        if cache is not None:
            cache.observe(module.layer_idx, query, key, kwargs.get("scaling") or module.scaling)
        return out

    return attention


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    for base in _WRAPPED:
        AttentionInterface.register(f"kv-evict|{base}", _wrap(base))
        AttentionMaskInterface.register(f"kv-evict|{base}", ALL_MASK_ATTENTION_FUNCTIONS[base])


METRICS = [
    MetricDef("kv.budget_tokens", "tokens", False, "KV entries kept per head and layer"),
    MetricDef(
        "kv.final_cache_tokens",
        "tokens",
        False,
        "KV entries held per head in layer 0 at the end of the cell's last generation "
        "(verify: at most the budget)",
    ),
    MetricDef(
        "kv.seen_tokens",
        "tokens",
        False,
        "tokens that went through layer 0's cache in the cell's last generation",
    ),
    MetricDef(
        "kv.evicted_tokens",
        "tokens",
        False,
        "KV entries evicted per head in layer 0 over the last generation: seen − kept",
    ),
]


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [KVEvict]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
