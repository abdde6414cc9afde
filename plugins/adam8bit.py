"""``adam-8bit``: bitsandbytes' ``AdamW8bit`` (Dettmers et al. 2022, block-wise 8-bit states).

Both moments are stored as uint8 codes with one fp32 absmax per block of 256 values and a
256-entry fp32 code table (``qmap``): about 2·(1 + 4/256) bytes per parameter instead of
AdamW's 8 (fp32), i.e. ≈ 0.254× — before the tensors that bitsandbytes keeps in 32 bit
(those with fewer than ``min_8bit_size`` = 4096 elements: norms, biases).
Runs on CPU as well (bitsandbytes ≥ 0.45 has CPU kernels for the 8-bit optimizers).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness import Applied, Config, Technique, hookimpl
from harness.environment import package_versions
from harness.estimate import Architecture, Effect, Shape
from harness.workloads.train import trainable
from plugins.optim import OptimizerTechnique


class Adam8bitConfig(Config):
    min_8bit_size: int = Field(4096, ge=1, description="tensors smaller than this stay fp32")


class Adam8bit(OptimizerTechnique[Adam8bitConfig]):
    """AdamW with 8-bit block-wise quantized moments."""

    name = "adam-8bit"
    Config = Adam8bitConfig
    module = "bitsandbytes"

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """Per trainable tensor of n ≥ ``min_8bit_size`` elements two uint8 moments with an
        fp32 absmax per 256 values, 2·(n + 4·⌈n/256⌉) bytes, plus the two 256-entry fp32
        code tables all tensors share (2048 bytes); smaller tensors keep fp32 moments, 8·n.
        ``step`` is a Python int."""
        sizes = [lin.numel for lin in arch.linears()]
        if arch.tie_word_embeddings:
            sizes.pop()  # the head is the embedding
        sizes += [arch.embedding_params]
        sizes += [arch.hidden_size] * (2 * arch.num_layers + 1)  # norms
        small = self.config.min_8bit_size
        state = sum(2.0 * (n + 4 * -(-n // 256)) if n >= small else 8.0 * n for n in sizes)
        state += 2048.0 if any(n >= small for n in sizes) else 0.0
        return effect.note("adam-8bit: block-wise 8-bit moments", optimizer_state_bytes=state)

    def check_state(self, optimizer: Any) -> Applied:
        """Every parameter of at least ``min_8bit_size`` elements holds uint8 moments
        (``optim.state_8bit_share``: share of the stepped elements stored in 8 bits)."""
        import torch

        large = small = eight = 0
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state.get(p)
                if not state:
                    continue
                uint8 = any(
                    isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in state.values()
                )
                eight += p.numel() if uint8 else 0
                if p.numel() >= self.config.min_8bit_size:
                    large += 1
                    small += 0 if uint8 else 1
        stepped = sum(p.numel() for p in optimizer.state)
        share = eight / stepped if stepped else 0.0
        found = (
            f"{large - small} of {large} parameters of ≥ {self.config.min_8bit_size} elements "
            f"hold uint8 moments ({share:.1%} of the stepped elements)"
        )
        return Applied(large > 0 and small == 0, found, {"optim.state_8bit_share": share})

    def optimizer(self, model: Any, lr: float) -> Any:
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(trainable(model), lr=lr, min_8bit_size=self.config.min_8bit_size)


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Adam8bit]


@hookimpl
def environment_info() -> dict[str, str]:
    """Versions of the 8-bit optimizer's library, stored with every run."""
    return package_versions("bitsandbytes")
