"""The technique contract: what a plugin implements to change *what runs*.

A technique never times itself or reads memory counters; the harness owns measurement.
It prepares the model (quantized, converted, placed) and what the workload needs to run it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from harness.errors import Skip

if TYPE_CHECKING:
    from harness.environment import Environment

Kind = Literal["inference", "training"]


class Config(BaseModel):
    """Base of every technique's parameters. Unknown keys are errors, values are frozen."""

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
        make_cache: returns a fresh KV-cache object for one generation (eviction, offload).
        quantized_cache: returns a fresh quantized cache (kv-quant). Alone it is the cache;
            with ``make_cache`` set by a builder that ``stores_quantized`` (kv-evict), that
            builder stores its tensors through this cache's layers. Workloads call
            ``cache_kwargs``.
        optimizer_factory: builds the optimizer from the trainable parameters (training).
        autocast_dtype: ``"bfloat16"`` or ``"float16"``: the training loop runs forward and
            loss under ``torch.autocast`` of that dtype (float16 with a ``GradScaler``).
        cleanup: callables run after the cell (remove hooks, free memory).
    """

    model: Any
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    make_cache: Callable[[], Any] | None = None
    quantized_cache: Callable[[], Any] | None = None
    optimizer_factory: Callable[[Any], Any] | None = None
    autocast_dtype: str | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    _stores_quantized: bool = field(default=False, repr=False)

    def set_cache(
        self, make_cache: Callable[[], Any], technique: str, *, stores_quantized: bool = False
    ) -> None:
        """Set ``make_cache``; ``stores_quantized``: it honours ``quantized_cache``.

        Skips the cell when an earlier technique of the stack built the cache, or quantized
        it and this builder cannot store through the quantizer.
        """
        if self.make_cache is not None:
            raise Skip(
                f"{technique} and an earlier technique of this stack both build the KV cache; "
                "such stacks do not combine"
            )
        if self.quantized_cache is not None and not stores_quantized:
            raise Skip(f"{technique} cannot hold a quantized KV cache; drop kv-quant")
        self.make_cache = make_cache
        self._stores_quantized = stores_quantized

    def set_quantized_cache(self, quantized_cache: Callable[[], Any], technique: str) -> None:
        """Set ``quantized_cache``; skips when the cache builder already set cannot use it."""
        if self.make_cache is not None and not self._stores_quantized:
            raise Skip(f"the KV cache built earlier in this stack cannot hold {technique}'s codes")
        self.quantized_cache = quantized_cache

    def cache_kwargs(self) -> dict[str, Any]:
        """``model.generate`` keywords with a fresh KV cache; empty for the model's default."""
        if self.make_cache is not None:
            return {"past_key_values": self.make_cache()}
        if self.quantized_cache is not None:
            return {"past_key_values": self.quantized_cache()}
        return {}


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

    def __init__(self, config: ConfigT) -> None:
        self.config: ConfigT = config

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
