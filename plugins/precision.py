"""``precision``: run the whole model in fp32, bf16 or fp16.

Weights and activations are cast with ``model.to(dtype)``; the KV cache follows the
activation dtype, so bf16/fp16 halve both weight and KV-cache bytes against fp32.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from harness import Applied, Config, Context, Environment, Prepared, Skip, Technique, hookimpl
from harness.estimate import Architecture, Effect, Shape

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # config -> torch dtype


class PrecisionConfig(Config):
    dtype: Literal["fp32", "bf16", "fp16"] = Field(description="compute dtype")


class Precision(Technique[PrecisionConfig]):
    """Cast weights and activations to one floating-point dtype."""

    name = "precision"
    kind = frozenset({"inference"})
    Config = PrecisionConfig
    mutates_weights = True

    def check(self, env: Environment) -> None:
        if self.config.dtype == "fp16" and env.device_kind == "cpu":
            # Measured here (torch 2.13, 2 cores): fp16 matmuls on CPU have no fast kernels
            # and run an order of magnitude slower than fp32, which says nothing about fp16.
            raise Skip("fp16 on CPU has no fast kernels; run it on a GPU")

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        import torch

        dtype = getattr(torch, DTYPES[self.config.dtype])
        prepared.model.to(dtype)
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """Weights, activations and KV cache in the chosen dtype."""
        dtype = DTYPES[self.config.dtype]
        return effect.note(f"precision: everything in {dtype}", dtype=dtype)

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """Every floating-point parameter and buffer is in the configured dtype."""
        tensors = [*prepared.model.parameters(), *prepared.model.buffers()]
        floating = [t for t in tensors if t.is_floating_point()]
        want = DTYPES[self.config.dtype]
        other = sorted({str(t.dtype).removeprefix("torch.") for t in floating} - {want})
        found = (
            f"{len(floating)} floating-point tensors, dtypes other than {want}: {other or 'none'}"
        )
        return Applied(bool(floating) and not other, found)


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Precision]
