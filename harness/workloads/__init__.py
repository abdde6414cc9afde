"""The workload contract: what is measured, by one measurement loop for every technique."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from harness.errors import BenchError
from harness.technique import Config

if TYPE_CHECKING:
    from harness.probes import Probe
    from harness.results import Measurement
    from harness.suitefile import Policy
    from harness.technique import Prepared


@dataclass
class WorkloadContext:
    """What a workload gets besides the prepared model.

    Attributes:
        device: torch device string.
        tokenizer: the model's tokenizer.
        policy: warm-up and repeat counts.
        probes: available probes of this machine (memory and timing phases).
        texts: the text of each (text source, split) the task declared (``Workload.texts``).
        reference: what the task's ``reference`` returned for the unmodified model (None for
            a task that does not use one).
        outputs: what earlier workloads of the same cell returned (e.g. generated tokens).
    """

    device: str
    tokenizer: Any
    policy: Policy
    probes: Sequence[Probe]
    texts: Mapping[tuple[str, str], str] = field(default_factory=dict)
    reference: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)

    def text(self, ref: str, split: str) -> str:
        """The text of source ``ref``'s ``split`` (``prompt`` or ``eval``).

        Raises:
            BenchError: the task did not declare it in ``Workload.texts``.
        """
        try:
            return self.texts[(ref, split)]
        except KeyError:
            raise BenchError(
                f"text {ref!r} split {split!r} was not declared by the task; return it from "
                "the workload's texts() (or list the split in text_splits)"
            ) from None


ParamsT = TypeVar("ParamsT", bound=Config)


class Workload(Generic[ParamsT]):
    """Base class of workloads (``kind="measure"``) and accuracy tasks (``kind="accuracy"``).

    A suite has one measure workload whose list-valued parameters expand the matrix, and any
    number of accuracy tasks, run afterwards on the same prepared model in the same worker.

    Class attributes:
        name: the key in suites.
        kind: ``measure`` or ``accuracy``.
        Params: the pydantic parameters (a ``harness.Config``).
        mutates_weights: the workload changes the model (training): it gets a fresh copy.
        text_splits: the splits of ``params.text`` that ``run`` reads (see ``texts``).
        uses_reference: ``run`` compares against the unmodified model: ``reference`` is
            called on it and its result is ``WorkloadContext.reference``.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["measure", "accuracy"]] = "measure"
    Params: ClassVar[type[Config]] = Config
    mutates_weights: ClassVar[bool] = False
    text_splits: ClassVar[tuple[str, ...]] = ()
    uses_reference: ClassVar[bool] = False

    def __init__(self, params: ParamsT) -> None:
        self.params: ParamsT = params

    def texts(self) -> list[tuple[str, str]]:
        """The (text source, split) pairs ``run`` reads: by default ``params.text`` in each
        of ``text_splits``. The harness loads them into ``WorkloadContext.texts``."""
        ref = getattr(self.params, "text", None)
        return [(ref, split) for split in self.text_splits] if isinstance(ref, str) else []

    def tokens_needed(self) -> dict[tuple[str, str], int]:
        """The fewest tokens ``run`` reads from each of its ``texts``, by (text source,
        split). ``bench check`` compares them with the texts' lengths, so a text too short
        for the parameters is an input error before anything runs. Default: none known."""
        return {}

    def reference(self, model: Any, ctx: WorkloadContext) -> Any:
        """Outputs of the unmodified ``model`` that ``run`` compares against.

        Called once per worker, model and parameters when ``uses_reference`` is set; the
        result travels as ``WorkloadContext.reference``.
        """
        return None

    def fingerprint(self, ctx: WorkloadContext) -> dict[str, Any]:
        """What identifies this task's actual inputs beyond its parameters and texts.

        Stored in the cell's fingerprint (``workload.inputs``) so that two cells compare
        only when they measured the same inputs: ``generate`` returns the sha256 of its
        prompt token ids. Called once per cell, before ``run``, with the task's texts and
        the model's tokenizer; it must be cheap and deterministic. Default: nothing beyond
        the parameters and the texts' hashes, which the harness records itself.
        """
        return {}

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        """Run and measure; return the cell's metric values."""
        raise NotImplementedError
