"""``baseline``: the unmodified model, the reference every technique is compared against."""

from __future__ import annotations

from harness import Applied, Context, Prepared, Technique, hookimpl
from harness.estimate import Architecture, Effect, Shape


class Baseline(Technique):
    """Runs the model as loaded, with the workload's default cache and decoding."""

    name = "baseline"
    kind = frozenset({"inference", "training"})
    default_reference = True  # a suite without 'reference:' compares with this stack

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """Changes nothing: the plain model."""
        return effect

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """Nothing to take effect: the model runs as loaded."""
        return Applied(True, "runs the model as loaded; nothing to check")


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Baseline]
