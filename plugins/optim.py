"""What the optimizer-replacing training techniques share (``galore``, ``apollo``, ``adam-8bit``).

Each of them only swaps AdamW for another optimizer over the same trainable parameters, at
the learning rate the ``train`` workload asks for. :class:`OptimizerTechnique` does that
once: its ``check`` skips when the optimizer's library is missing, and its ``prepare`` sets
``Prepared.optimizer_factory`` to the subclass's :meth:`~OptimizerTechnique.optimizer`.
:func:`projected_groups` is the parameter split of the low-rank projection methods, and
:meth:`~OptimizerTechnique.verify` checks the optimizer the loop built (its state's dtype
or rank). Registered as a plugin only for the metrics of those checks; it registers no
technique.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from harness import Applied, Context, Environment, MetricDef, Prepared, Technique, hookimpl
from harness.estimate import Architecture, Linear
from harness.technique import ConfigT
from harness.workloads.train import train_params, trainable

TRAIN_EXTRA = "pip install 'bench[train]'"


class OptimizerTechnique(Technique[ConfigT]):
    """Base of training techniques that change only the optimizer.

    Subclasses set ``name``, ``Config``, ``module`` (the library's import name) and
    implement :meth:`optimizer`; the library is imported there, when the cell runs.
    """

    kind = frozenset({"training"})
    module: ClassVar[str]
    install: ClassVar[str] = TRAIN_EXTRA

    def check(self, env: Environment) -> None:
        env.require(self.module, install=self.install)

    def optimizer(self, model: Any, lr: float) -> Any:
        """Build the optimizer over ``model``'s trainable parameters at learning rate ``lr``."""
        raise NotImplementedError

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        lr = train_params(ctx.workload).lr

        def factory(model: Any) -> Any:
            optimizer = self.optimizer(model, lr)
            ctx.state["optimizer"] = optimizer  # for verify; released when the cell ends
            return optimizer

        prepared.optimizer_factory = factory
        prepared.cleanup.append(lambda: ctx.state.pop("optimizer", None))
        return prepared

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """The training loop built this technique's optimizer and it holds state; subclasses
        add what their optimizer must hold (dtype, rank)."""
        optimizer = ctx.state.get("optimizer")
        if optimizer is None or prepared.optimizer_factory is None:
            return Applied(False, f"the training loop did not build the {self.name} optimizer")
        if not optimizer.state:
            return Applied(False, f"{type(optimizer).__name__} holds no state: it never stepped")
        return self.check_state(optimizer)

    def check_state(self, optimizer: Any) -> Applied:
        """What the stepped optimizer's state must show; by default, that it has some."""
        return Applied(True, f"{type(optimizer).__name__} stepped: {len(optimizer.state)} states")


def projected_params(model: Any, targets: Sequence[str]) -> list[Any]:
    """2-D weights of the ``torch.nn.Linear`` modules whose qualified name holds a target."""
    import torch

    return [
        mod.weight
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear)
        and any(t in name for t in targets)
        and mod.weight.requires_grad
    ]


class Projection(Protocol):
    """The fields GaLore's and APOLLO's configs share."""

    @property
    def targets(self) -> list[str]: ...
    @property
    def rank(self) -> int: ...
    @property
    def update_proj_gap(self) -> int: ...
    @property
    def scale(self) -> float: ...


def projected_groups(model: Any, c: Projection, **options: Any) -> list[dict[str, Any]]:
    """Two parameter groups: the trainable parameters left as they are, and the projected
    weights of ``c.targets`` with the low-rank keys galore-torch and apollo-torch read
    (``rank``, ``update_proj_gap``, ``scale``, ``proj_type="std"``) plus ``options``."""
    low = projected_params(model, c.targets)
    low_ids = {id(p) for p in low}
    rest = [p for p in trainable(model) if id(p) not in low_ids]
    projection = {
        "rank": c.rank,
        "update_proj_gap": c.update_proj_gap,
        "scale": c.scale,
        "proj_type": "std",
    }
    return [{"params": rest}, {"params": low, **projection, **options}]


def projected_linears(arch: Architecture, targets: Sequence[str]) -> list[Linear]:
    """The linear layers of ``arch`` whose qualified name holds a target (as
    ``projected_params`` selects them from a loaded model)."""
    return [lin for lin in arch.linears() if any(t in lin.name for t in targets)]


def adamw_rest_bytes(arch: Architecture, projected: Sequence[Linear]) -> float:
    """AdamW's two fp32 moments for every parameter outside ``projected``: 8 bytes each
    (the projection optimizers keep ``step`` as a Python int: no tensor)."""
    low = sum(lin.numel for lin in projected)
    return 8.0 * (arch.n_params - low)


def low_rank_check(optimizer: Any, rank: int) -> Applied:
    """The projected parameters (groups with a ``rank``) hold moments of rank ``rank``.

    A projected parameter of shape m×n passes when its state has a tensor (a moment of the
    projected gradient) whose shape differs from m×n and has a side of ``rank`` (or of
    min(m, n) when ``rank`` exceeds it). Evidence: ``optim.low_rank_share``, the share of
    projected parameters with state that pass, and ``optim.state_rank``.
    """
    import torch

    projected = [
        p
        for group in optimizer.param_groups
        if "rank" in group
        for p in group["params"]
        if optimizer.state.get(p)
    ]
    passing = 0
    for p in projected:
        want = min(rank, *p.shape) if p.dim() == 2 else rank
        tensors = [t for t in optimizer.state[p].values() if isinstance(t, torch.Tensor)]
        if any(t.shape != p.shape and want in t.shape for t in tensors):
            passing += 1
    share = passing / len(projected) if projected else 0.0
    evidence = {"optim.low_rank_share": share, "optim.state_rank": float(rank)}
    found = (
        f"{passing} of {len(projected)} projected weights hold rank-{rank} moments "
        f"({type(optimizer).__name__})"
    )
    return Applied(bool(projected) and passing == len(projected), found, evidence)


METRICS = [
    MetricDef(
        "optim.low_rank_share",
        "fraction",
        True,
        "share of projected weights whose optimizer moments have the projection rank (verify)",
    ),
    MetricDef("optim.state_rank", "rank", False, "rank of the projected optimizer moments"),
    MetricDef(
        "optim.state_8bit_share",
        "fraction",
        True,
        "share of the trainable elements whose moments are stored in 8 bits (verify)",
    ),
]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
