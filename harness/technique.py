"""The technique contract: what a plugin implements to change *what runs*.

A technique never times itself or reads memory counters; the harness owns measurement.
It prepares the model (quantized, converted, placed) and what the workload needs to run it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import ConfigDict

from harness.errors import Skip
from harness.strict import StrictNumbers

if TYPE_CHECKING:
    from harness.environment import Environment
    from harness.estimate.arch import Architecture
    from harness.estimate.effect import Effect, Shape
    from harness.kvcache import KVBuilder, KVStorage

Kind = Literal["inference", "training"]


class Config(StrictNumbers):
    """Base of every technique's parameters. Unknown keys are errors, values are frozen;
    numeric fields refuse booleans and non-finite floats (``harness.strict``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Context:
    """What a technique may look at while preparing a cell.

    Attributes:
        device: torch device string the cell runs on (``"cpu"``, ``"cuda:0"``).
        model_id: the suite's model id.
        tokenizer: the model's tokenizer.
        workload: the cell's workload name and resolved parameters.
        env: facts about this machine (devices, installed libraries).
        state: scratch space a technique may fill in ``prepare`` and read in ``metrics``.
    """

    device: str
    model_id: str
    tokenizer: Any
    workload: dict[str, Any]
    env: Environment
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prepared:
    """The bundle a technique stack hands to the workload.

    Attributes:
        model: the model to run.
        generate_kwargs: extra keyword arguments for ``model.generate`` (an assistant
            model, prompt-lookup settings, ...).
        optimizer_factory: builds the optimizer from the trainable parameters (training).
        autocast_dtype: ``"bfloat16"`` or ``"float16"``: the training loop runs forward and
            loss under ``torch.autocast`` of that dtype (float16 with a ``GradScaler``).
        cleanup: callables run after the cell (remove hooks, free memory).

    The KV cache is composed through :meth:`set_cache` (a builder) and
    :meth:`set_cache_storage` (a storage), see :mod:`harness.kvcache`; workloads get it
    from :meth:`cache_kwargs` or :meth:`generate_args`.
    """

    model: Any
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer_factory: Callable[[Any], Any] | None = None
    autocast_dtype: str | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    _builder: tuple[str, KVBuilder, bool] | None = field(default=None, repr=False)
    _storage: tuple[str, KVStorage] | None = field(default=None, repr=False)

    def set_cache(self, build: KVBuilder, technique: str, *, stores_codes: bool = False) -> None:
        """Make ``technique`` the builder of the KV cache.

        Args:
            build: returns a fresh cache for one generation, given the storage's per-layer
                codecs (or None when the stack has no storage).
            technique: the name of the technique, for messages.
            stores_codes: whether ``build`` keeps its tensors through the codecs it is
                given; without it a storage in the stack skips the cell.

        Raises:
            Skip: another technique already builds the cache, or a storage is in the stack
                and this builder cannot use it.
        """
        if self._builder is not None:
            raise Skip(
                f"{technique} and {self._builder[0]} both build the KV cache; "
                "such stacks do not combine"
            )
        if self._storage is not None and not stores_codes:
            raise Skip(f"{technique} cannot store its KV cache through {self._storage[0]}")
        self._builder = (technique, build, stores_codes)

    def set_cache_storage(self, storage: KVStorage, technique: str) -> None:
        """Make ``technique`` the storage of the KV cache (see :mod:`harness.kvcache`).

        Raises:
            Skip: another technique already stores the cache, or the builder already set
                cannot store through a storage.
        """
        if self._storage is not None:
            raise Skip(
                f"{technique} and {self._storage[0]} both store the KV cache; "
                "such stacks do not combine"
            )
        if self._builder is not None and not self._builder[2]:
            raise Skip(f"{self._builder[0]} cannot store its KV cache through {technique}")
        self._storage = (technique, storage)

    @property
    def builds_cache(self) -> bool:
        """Whether the stack replaces the model's default KV cache."""
        return self._builder is not None or self._storage is not None

    def cache_kwargs(self) -> dict[str, Any]:
        """``model.generate`` keywords with a fresh KV cache; empty for the model's default."""
        storage = self._storage[1] if self._storage else None
        if self._builder is not None:
            return {"cache": self._builder[1](storage.codecs() if storage else None)}
        if storage is not None:
            return {"cache": storage.cache()}
        return {}

    def generate_args(
        self, input_ids: Any, new_tokens: int, tokenizer: Any, *, speculate: bool = True
    ) -> dict[str, Any]:
        """Keywords of one greedy ``model.generate`` call over ``input_ids`` with this stack.

        ``new_tokens`` at most (the caller suppresses end-of-sequence to get exactly that
        many), the tokenizer's pad id (its end-of-sequence id when it has none), a fresh
        KV cache of the stack, and the stack's ``generate_kwargs`` unless ``speculate`` is
        False (tokens forced by the caller come no faster from a drafter).
        """
        import torch

        pad = tokenizer.pad_token_id
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": new_tokens,
            "do_sample": False,
            "pad_token_id": pad if pad is not None else tokenizer.eos_token_id,
            **(self.generate_kwargs if speculate else {}),
            **self.cache_kwargs(),
        }


@dataclass(frozen=True)
class Applied:
    """A technique's proof that it took effect in a cell (``Technique.verify``).

    Attributes:
        ok: whether the check passed. A failed check makes the cell ``not-applied``.
        reason: what was checked and found, in one sentence with the numbers
            ("30 of 30 linear layers replaced; linear bytes 54.2 MiB → 15.1 MiB").
        evidence: registered metric names and the numbers the check read (stored with the
            cell; register a ``MetricDef`` for each in the plugin's ``register_metrics``).
        checked: False only for the default of a technique that defines no check.
    """

    ok: bool
    reason: str
    evidence: Mapping[str, float] = field(default_factory=dict)
    checked: bool = True


_ConfigBase = Config  # the class attribute ``Technique.Config`` shadows the name inside
ConfigT = TypeVar("ConfigT", bound=Config)


class Technique(Generic[ConfigT]):
    """Base class of every technique plugin.

    Subclasses set ``name`` (the key in suites), ``kind``, a ``Config`` subclass, and
    override ``prepare``; ``check`` and ``metrics`` are optional. Name the config class as
    the type parameter, ``class MyMethod(Technique[MyConfig])``, so ``self.config`` is typed.
    """

    name: ClassVar[str]
    kind: ClassVar[frozenset[Kind]] = frozenset({"inference"})
    Config: ClassVar[type[_ConfigBase]] = _ConfigBase
    mutates_weights: ClassVar[bool] = False
    incompatible_with: ClassVar[frozenset[str]] = frozenset()
    #: The stack a suite compares with when it names no ``reference:`` (the built-in
    #: ``baseline`` sets it; at most one installed technique should).
    default_reference: ClassVar[bool] = False

    def __init__(self, config: ConfigT) -> None:
        self.config: ConfigT = config

    @property
    def reads_workload(self) -> bool:
        """Whether ``prepare`` uses the workload's parameters (``Context.workload``) to decide
        what runs, so each workload variant of the stack is a different model and accuracy is
        measured per variant instead of once per stack. Override where it is so."""
        return False

    def check(self, env: Environment) -> None:
        """Raise ``Skip(reason)`` when this technique cannot run on ``env``."""

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        """Return what runs: the (possibly changed) model and the workload's extras.

        ``prepared`` comes from the previous technique of the stack (or holds the loaded
        model); a technique returns it updated or a new bundle.
        """
        return prepared

    def metrics(self, ctx: Context) -> dict[str, float]:
        """Technique-specific metrics after the cell ran (registered metric names)."""
        return {}

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """This technique's analytic effect, for ``bench estimate`` and the prediction
        stored beside every measurement (``harness.estimate``).

        ``effect`` is the stack's state after the techniques before this one; return it
        changed with ``dataclasses.replace`` or ``effect.note(text, field=value)`` (weight
        and KV storage formats, KV heads, eviction budget, offloaded share, tokens per
        decode step, optimizer state bytes, ...), ``effect.cannot(quantity, reason)`` for
        what cannot be predicted. Must not import torch or load anything: it runs in
        milliseconds before the model loads. The default returns None: "no estimate", and
        the stack then gets no numbers at all rather than numbers that leave it out.
        """
        return None

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """Check that this technique took effect, after the cell's measure workload ran.

        Read the prepared model and what ``prepare`` left in ``ctx.state`` (a tally, the
        last cache's length, the optimizer), never a clock or a memory counter. Return
        ``Applied(False, reason)`` when the technique did nothing (no layer replaced, no
        token evicted, no draft verified): the cell is then recorded as ``not-applied``
        with the reason instead of ``ok``. The default says no check is defined; every
        technique should override it.
        """
        return Applied(
            True, f"{self.name} defines no verify(): its effect is not checked", checked=False
        )

    @classmethod
    def validate_model(cls, config: Mapping[str, Any], model_config: Mapping[str, Any]) -> None:
        """Raise ``BenchError`` (with the fix) when ``config`` cannot work on this model.

        ``bench check`` calls it with the model's ``config.json`` as a dict when that file can
        be read without loading the model; ``prepare`` should make the same check.
        """

    @classmethod
    def describe(cls, config: Mapping[str, Any]) -> str:
        """Readable label such as ``precision(dtype=bfloat16)``; defaulted fields are left out."""
        fields = cls.Config.model_fields
        shown = {
            k: v
            for k, v in config.items()
            if fields[k].is_required() or fields[k].get_default(call_default_factory=True) != v
        }
        if not shown:
            return cls.name
        return f"{cls.name}({','.join(f'{k}={v}' for k, v in shown.items())})"
