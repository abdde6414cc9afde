"""The workload contract: what is measured, by one measurement loop for every technique."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from harness.technique import Config

if TYPE_CHECKING:
    from harness.policy import Policy
    from harness.probes import Probe
    from harness.results import Measurement
    from harness.technique import Prepared


@dataclass
class WorkloadContext:
    """What a workload gets besides the prepared model.

    Attributes:
        device: torch device string.
        tokenizer: the model's tokenizer.
        policy: warm-up and repeat counts.
        probes: available probes of this machine (memory and timing phases).
        text: ``text(ref, split)`` returns a text source's text (``split``: prompt or eval).
        reference: the unmodified model, loaded lazily, for tasks that compare against it.
        outputs: what earlier workloads of the same cell returned (e.g. generated tokens).
    """

    device: str
    tokenizer: Any
    policy: Policy
    probes: Sequence[Probe]
    text: Callable[[str, str], str]
    reference: Callable[[], Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


ParamsT = TypeVar("ParamsT", bound=Config)


class Workload(Generic[ParamsT]):
    """Base class of workloads (``kind="measure"``) and accuracy tasks (``kind="accuracy"``).

    A suite has one measure workload whose list-valued parameters expand the matrix, and any
    number of accuracy tasks, run afterwards on the same prepared model in the same worker.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["measure", "accuracy"]] = "measure"
    Params: ClassVar[type[Config]] = Config

    def __init__(self, params: ParamsT) -> None:
        self.params: ParamsT = params

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        """Run and measure; return the cell's metric values."""
        raise NotImplementedError
