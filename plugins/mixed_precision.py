"""``mixed-precision``: fp32 master weights, forward and loss under ``torch.autocast``.

bf16 runs anywhere torch has bf16 autocast (CPU included); fp16 needs a loss scaler
(``torch.amp.GradScaler``) and fast fp16 kernels, so it is CUDA-only here. The technique
only sets ``Prepared.autocast_dtype``; the training loop applies it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from harness import Applied, Config, Context, Environment, Prepared, Skip, Technique, hookimpl
from harness.estimate import Architecture, Effect, Shape
from plugins.precision import DTYPES


class MixedPrecisionConfig(Config):
    dtype: Literal["bf16", "fp16"] = Field("bf16", description="autocast dtype")


class MixedPrecision(Technique[MixedPrecisionConfig]):
    """Autocast forward and loss to bf16/fp16, keeping fp32 weights and optimizer."""

    name = "mixed-precision"
    kind = frozenset({"training"})
    Config = MixedPrecisionConfig

    def check(self, env: Environment) -> None:
        if self.config.dtype == "fp16" and env.device_kind != "cuda":
            raise Skip("fp16 mixed precision needs a GradScaler and fp16 kernels: CUDA only")

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        prepared.autocast_dtype = DTYPES[self.config.dtype]
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """Forward and saved activations in the autocast dtype; weights stay fp32."""
        dtype = DTYPES[self.config.dtype]
        return effect.note(f"mixed-precision: autocast to {dtype}", autocast_dtype=dtype)

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """The stack still asks the training loop for this autocast dtype, and the master
        weights stayed fp32 (the loop's autocast does the rest)."""
        want = DTYPES[self.config.dtype]
        weights = {str(p.dtype).removeprefix("torch.") for p in prepared.model.parameters()}
        found = f"autocast {prepared.autocast_dtype}, master weights {sorted(weights)}"
        return Applied(prepared.autocast_dtype == want and weights == {"float32"}, found)


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [MixedPrecision]
