"""``apollo`` and ``apollo-mini``: SGD-like memory, AdamW-level performance (Zhu et al. 2025).

apollo-torch's ``APOLLOAdamW`` keeps AdamW moments of a *random* projection of rank r of
each target gradient (``proj="random"``, regenerated every ``update_proj_gap`` steps from a
seed, so the projection matrix is kept as a tensor in the projector) and uses their ratio
only to scale the full-rank gradient: channel-wise (``apollo``, rank 256 in the paper) or
tensor-wise with rank 1 (``apollo-mini``, scale 128). Non-target parameters (embeddings,
norms) get plain AdamW within the same optimizer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from harness import Applied, Config, Technique, hookimpl
from harness.environment import package_versions
from harness.estimate import Architecture, Effect, Shape
from plugins.optim import (
    OptimizerTechnique,
    adamw_rest_bytes,
    low_rank_check,
    projected_groups,
    projected_linears,
)


class ApolloConfig(Config):
    rank: int = Field(256, ge=1, description="projection rank r")
    scale: float = Field(1.0, gt=0, description="gradient scaling factor α")
    update_proj_gap: int = Field(200, ge=1, description="steps between new projections")
    targets: list[str] = Field(["self_attn", "mlp"], description="module-name substrings")


class ApolloMiniConfig(ApolloConfig):
    rank: int = Field(1, ge=1, description="projection rank r (1: APOLLO-Mini)")
    scale: float = Field(128.0, gt=0, description="gradient scaling factor α")


class Apollo(OptimizerTechnique[ApolloConfig]):
    """Channel-wise gradient scaling estimated in a rank-r random projection."""

    name = "apollo"
    Config = ApolloConfig
    module = "apollo_torch"
    scale_type: ClassVar[str] = "channel"

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """Per projected m×n matrix (apollo-torch's ``GradientProjector``, ``std``): the
        random r×min(m, n) projection, the moments of the r×max(m, n) projected gradient
        and a scalar norm, 4·(2·r·max(m, n) + r·min(m, n) + 1) bytes; AdamW's 8 bytes per
        other parameter."""
        c = self.config
        low = projected_linears(arch, c.targets)
        state = sum(
            4.0
            * (
                2 * c.rank * max(lin.in_features, lin.out_features)
                + c.rank * min(lin.in_features, lin.out_features)
                + 1
            )
            for lin in low
        )
        return effect.note(
            f"{self.name}: rank {c.rank} projected moments for {len(low)} matrices",
            optimizer_state_bytes=state + adamw_rest_bytes(arch, low),
        )

    def check_state(self, optimizer: Any) -> Applied:
        """The target weights hold rank-``rank`` moments of the random projection."""
        return low_rank_check(optimizer, self.config.rank)

    def optimizer(self, model: Any, lr: float) -> Any:
        import apollo_torch

        groups = projected_groups(model, self.config, proj="random", scale_type=self.scale_type)
        return apollo_torch.APOLLOAdamW(groups, lr=lr)


class ApolloMini(Apollo):
    """Rank-1 projection, one scaling factor per tensor."""

    name = "apollo-mini"
    Config = ApolloMiniConfig
    scale_type = "tensor"


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Apollo, ApolloMini]


@hookimpl
def environment_info() -> dict[str, str]:
    """Versions of the APOLLO optimizer's library, stored with every run."""
    return package_versions("apollo-torch")
