"""Test-only technique ``damage``: load with BENCH_PLUGINS=bench_damage (tests/plugins on the path).

Zeroes the output-projection input columns of a fraction of the attention heads in every
layer: those heads' outputs never reach the residual stream, as if the heads were pruned.
A model this damaged must score worse on every accuracy metric, which is what the tests
of the accuracy tasks check (a metric that cannot fail is not a metric).
"""

from __future__ import annotations

from pydantic import Field

from harness import Config, Context, Prepared, Technique, hookimpl


class DamageConfig(Config):
    fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of heads zeroed per layer")


class Damage(Technique):
    """Zero ``int(fraction × heads)`` heads per layer (the first ones) via ``o_proj``."""

    name = "damage"
    Config = DamageConfig
    mutates_weights = True

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        import torch

        config = prepared.model.config
        heads = int(config.num_attention_heads * self.config.fraction)
        head_dim = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        with torch.no_grad():
            for layer in prepared.model.model.layers:
                layer.self_attn.o_proj.weight[:, : heads * head_dim] = 0
        ctx.state["zeroed_heads"] = heads * len(prepared.model.model.layers)
        return prepared


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Damage]
