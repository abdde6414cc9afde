"""``galore``: gradient low-rank projection (Zhao et al. 2024) with galore-torch's optimizers.

The 2-D weights of the target linear layers (attention and MLP by default) form a param
group with ``rank``, ``update_proj_gap``, ``scale`` and ``proj_type="std"``; every other
parameter (embeddings, norms) is optimized by the same optimizer at full rank.

State layout (galore-torch 1.0, ``GaLoreProjector`` with ``proj_type="std"``), for an m×n
gradient G (torch ``Linear`` weights are out×in): if m ≥ n the projection is the right
factor P = Vh[:r, :] (r×n) and the moments G·Pᵀ are m×r; if m < n it is the left factor
P = U[:, :r] (m×r) and the moments PᵀG are r×n. Logically that is 2·r·max(m, n) +
r·min(m, n) fp32 elements: the paper's m·r + 2·n·r written for m ≤ n. But P is a *slice
view* of the full SVD factor of ``svd(G, full_matrices=False)`` (U is m×min(m, n), Vh is
min(m, n)×n), so the storage it keeps alive is min(m, n)² elements, not r·min(m, n).
``memory.optimizer_state_bytes`` counts storages (what is really held), so per projected
matrix it is 4·(2·r·max(m, n) + min(m, n)²) bytes; galore's ``step`` is a Python int (no
tensor). Parameters outside the targets hold AdamW's 2 × their bytes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from harness import Applied, Config, Environment, Skip, Technique, hookimpl
from harness.environment import package_versions
from harness.estimate import Architecture, Effect, Shape
from plugins.optim import (
    OptimizerTechnique,
    adamw_rest_bytes,
    low_rank_check,
    projected_groups,
    projected_linears,
)


class GaLoreConfig(Config):
    rank: int = Field(16, ge=1, description="projection rank r")
    update_proj_gap: int = Field(200, ge=1, description="steps between projection SVDs")
    scale: float = Field(0.25, gt=0, description="scale of the projected-back update")
    targets: list[str] = Field(
        ["self_attn", "mlp"], description="module-name substrings whose Linear weights project"
    )
    optimizer: Literal["adamw", "adafactor", "adamw8bit"] = Field("adamw", description="base")


class GaLore(OptimizerTechnique[GaLoreConfig]):
    """Low-rank projected optimizer states for the attention and MLP weights."""

    name = "galore"
    Config = GaLoreConfig
    module = "galore_torch"

    def check(self, env: Environment) -> None:
        super().check(env)
        if self.config.optimizer == "adamw8bit" and env.device_kind != "cuda":
            raise Skip("galore's 8-bit AdamW needs bitsandbytes' CUDA kernels; run on a GPU")

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """Per projected m×n matrix 4·(2·r·max(m, n) + min(m, n)²) bytes (module docstring);
        AdamW's 8 bytes per other parameter. The adafactor and 8-bit bases: not modelled."""
        c = self.config
        if c.optimizer != "adamw":
            return effect.cannot("memory", f"galore: the {c.optimizer} base is not modelled")
        low = projected_linears(arch, c.targets)
        state = sum(
            4.0
            * (
                2 * c.rank * max(lin.in_features, lin.out_features)
                + min(lin.in_features, lin.out_features) ** 2
            )
            for lin in low
        )
        return effect.note(
            f"galore: rank {c.rank} moments for {len(low)} matrices",
            optimizer_state_bytes=state + adamw_rest_bytes(arch, low),
        )

    def check_state(self, optimizer: Any) -> Applied:
        """The target weights hold rank-``rank`` projected moments (``low_rank_check``)."""
        return low_rank_check(optimizer, self.config.rank)

    def optimizer(self, model: Any, lr: float) -> Any:
        import galore_torch

        c = self.config
        groups = projected_groups(model, c)
        if c.optimizer == "adafactor":
            return galore_torch.GaLoreAdafactor(
                groups, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False
            )
        if c.optimizer == "adamw8bit":
            return galore_torch.GaLoreAdamW8bit(groups, lr=lr)
        return galore_torch.GaLoreAdamW(groups, lr=lr, no_deprecation_warning=True)


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [GaLore]


@hookimpl
def environment_info() -> dict[str, str]:
    """Versions of the GaLore optimizer's library, stored with every run."""
    return package_versions("galore-torch")
