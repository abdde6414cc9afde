"""Example bench plugin: run the model with another attention kernel, and check what it writes.

Installed with ``pip install -e ./docs/plugin_example``, it adds the technique
``attn-impl`` and the accuracy task ``greedy-match`` to every suite:

    techniques:
      - baseline
      - attn-impl: {implementation: eager}
    accuracy:
      - greedy-match: {prompts: 4}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bench_attn.greedy_match import GREEDY_MATCH, GreedyMatch
from harness import (
    Config,
    Context,
    Environment,
    MetricDef,
    Prepared,
    Skip,
    Technique,
    Workload,
    hookimpl,
)

# The bench plugin API versions this plugin works with (bench refuses it otherwise).
BENCH_PLUGIN_API = ">=1.0,<2"


class AttnConfig(Config):
    implementation: Literal["eager", "sdpa", "flash_attention_2"] = Field(
        description="transformers attention implementation"
    )


class AttnImpl(Technique[AttnConfig]):
    """Switch the attention kernel; weights stay as loaded, so no reload is needed."""

    name = "attn-impl"
    kind = frozenset({"inference", "training"})
    Config = AttnConfig

    def check(self, env: Environment) -> None:
        if self.config.implementation == "flash_attention_2" and not env.has("flash_attn"):
            raise Skip("needs the flash-attn package and a CUDA GPU")

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        model = prepared.model
        before = model.config._attn_implementation
        model.set_attn_implementation(self.config.implementation)
        # The worker reuses the loaded model for the next cell: put it back afterwards.
        prepared.cleanup.append(lambda: model.set_attn_implementation(before))
        ctx.state["attn.layers"] = model.config.num_hidden_layers
        return prepared

    def metrics(self, ctx: Context) -> dict[str, float]:
        return {"attn.layers_switched": ctx.state["attn.layers"]}


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [AttnImpl]


@hookimpl
def register_workloads() -> list[type[Workload]]:
    return [GreedyMatch]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return [
        MetricDef("attn.layers_switched", "layers", False, "layers whose kernel changed"),
        GREEDY_MATCH,
    ]
