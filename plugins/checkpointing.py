"""``activation-checkpointing``: recompute each decoder layer's activations in backward.

``model.activation_checkpointing_enable(use_reentrant=False)`` (transformers releases before
that name: ``gradient_checkpointing_enable``, deprecated since): only the inputs of every
decoder layer are kept in forward; the layer runs again during backward. Activation memory
drops from all layers' intermediates to one layer's plus the layer inputs, at the cost of
about one extra forward per step.
"""

from __future__ import annotations

from harness import Applied, Context, Prepared, Skip, Technique, hookimpl
from harness.estimate import Architecture, Effect, Shape


class ActivationCheckpointing(Technique):
    """Trade compute for activation memory."""

    name = "activation-checkpointing"
    kind = frozenset({"training"})

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        model = prepared.model
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise Skip(f"{type(model).__name__} does not support gradient checkpointing")
        options = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
            prepared.cleanup.append(model.activation_checkpointing_disable)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
            prepared.cleanup.append(model.gradient_checkpointing_disable)
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """Only each layer's input is kept for backward; one more forward per step."""
        return effect.note(
            "activation-checkpointing: layer inputs kept, one layer recomputed at a time",
            activation_checkpointing=True,
        )

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """transformers reports checkpointing on, on the model and its decoder layers."""
        model = prepared.model
        layers = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
        on = [m for m in layers if m.gradient_checkpointing]
        enabled = bool(getattr(model, "is_gradient_checkpointing", False))
        found = f"model checkpointing {'on' if enabled else 'off'}; {len(on)} of {len(layers)} "
        found += "modules recompute their activations"
        return Applied(enabled and bool(on), found)


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [ActivationCheckpointing]
