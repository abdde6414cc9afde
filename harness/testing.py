"""Kit for plugin authors: run techniques, stacks and tasks on a real (tiny) model in-process.

    from harness.testing import kv_cache_bytes, model_shape, run_accuracy, run_technique

    result = run_technique({"my-method": {"ratio": 0.5}}, plugins=[my_plugin])
    assert result.status == "ok", result.reason
    stacked = run_technique([{"my-evict": {"keep": 8}}, {"kv-quant": {"bits": 4}}])
    task = run_accuracy({"my-task": {"tokens": 32}}, plugins=[my_plugin])
    assert task.value("my.score") == 1.0
    shape = model_shape()  # layers, KV heads, head size, bytes per element
    assert result.bytes("memory.kv_cache_bytes") == kv_cache_bytes(shape, tokens=19)

What runs is what ``bench run`` runs: the same cell pipeline in a worker of this process,
with ``plugins`` registered beside the installed ones (a plugin that is installed too is
registered once). The default model is the built-in ``tiny-random-llama`` (seeded, a few
MB, made on first use); pass ``model="smollm2-135m"`` for the real one. Accuracy tasks
and workloads can also be called directly: :func:`load_model`, :func:`workload_context`,
:func:`run_task`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.plugins import get_plugin_manager

# Fakes that replay recorded meter readings, for energy tests without the hardware.
from harness.probes.replay import ReplayNvml as ReplayNvml
from harness.probes.replay import ReplayRapl as ReplayRapl
from harness.registry import Registry
from harness.results import CellResult, Measurement
from harness.suite import Policy, suite_from_data
from harness.technique import Prepared
from harness.worker import Worker
from harness.workloads import Workload, WorkloadContext

StackSpec = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]


@dataclass(frozen=True)
class TestResult:
    """A cell's result with accessors for its metric values."""

    __test__ = False  # not a test class, though plugin authors import it into test modules
    result: CellResult

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def reason(self) -> str | None:
        return self.result.reason

    def value(self, name: str) -> float | None:
        """The value of metric ``name`` (None when measured as null).

        Raises:
            KeyError: the cell has no such metric; the message lists those it has.
        """
        for v in self.result.values:
            if v.name == name:
                return v.value
        raise KeyError(f"no metric {name!r} in {[v.name for v in self.result.values]}")

    def bytes(self, name: str) -> int:
        """The value of byte-count metric ``name`` as an exact ``int``.

        Raises:
            AssertionError: the value is null or not a whole number of bytes.
        """
        value = self.value(name)
        if value is None:
            raise AssertionError(f"{name} is null: {self._reason(name)}")
        if not float(value).is_integer():
            raise AssertionError(f"{name} = {value} is not a whole number of bytes")
        return int(value)

    def _reason(self, name: str) -> str | None:
        return next((v.reason for v in self.result.values if v.name == name), None)


def registry_with(plugins: Iterable[object] = ()) -> Registry:
    """The installed plugins plus ``plugins`` (modules or objects with hook implementations)."""
    return Registry(get_plugin_manager(extra=tuple(plugins)))


def worker_with(plugins: Iterable[object] = (), *, device: str = "cpu") -> Worker:
    """A worker for ``device`` with the installed plugins plus ``plugins``: pass it to
    several ``run_technique``/``run_accuracy`` calls so they share the loaded model."""
    return Worker(device, registry_with(plugins))


def run_technique(
    stack: StackSpec = "baseline",
    *,
    model: str = "tiny-random-llama",
    workload: Mapping[str, Any] | None = None,
    accuracy: Sequence[Any] = (),
    device: str = "cpu",
    warmup: int = 0,
    repeats: int = 1,
    plugins: Iterable[object] = (),
    worker: Worker | None = None,
    measure: str = "generate",
) -> TestResult:
    """Run one cell (technique stack × workload) in this process and return its result.

    Args:
        stack: a technique (``"baseline"``, ``{"kv-quant": {"bits": 4}}``) or a list of
            them, applied in order, as one entry of a suite's ``techniques:``.
        model: a model id, as in a suite's ``models:``.
        workload: the measure workload's parameters (for ``generate``, by default, 16
            prompt tokens and 4 new tokens; for another workload, its defaults).
        accuracy: accuracy tasks, as in a suite's ``accuracy:``.
        device: ``cpu`` or ``cuda:N``.
        warmup: unmeasured runs before the measured ones.
        repeats: measured runs.
        plugins: plugin modules or objects to register beside the installed ones.
        worker: a worker to run in (see :func:`worker_with`); its plugins are used.
        measure: the measure workload, as the key of a suite's ``workload:``.
    """
    registry = worker.registry if worker else registry_with(plugins)
    stack_list = [stack] if isinstance(stack, (str, Mapping)) else list(stack)
    default = {"prompt_tokens": 16, "new_tokens": 4} if measure == "generate" else {}
    data = {
        "name": "test",
        "models": [model],
        "devices": [device],
        "workload": {measure: dict(workload or default)},
        "techniques": [stack_list],
        "accuracy": list(accuracy),
        "policy": {"warmup": warmup, "repeats": repeats, "timeout_s": 600},
    }
    (cell,) = suite_from_data(data, registry, devices=[device]).cells
    runner = worker or Worker(device, registry)
    return TestResult(runner.run(cell))


def run_accuracy(
    task: str | Mapping[str, Any],
    stack: StackSpec = "baseline",
    *,
    model: str = "tiny-random-llama",
    device: str = "cpu",
    plugins: Iterable[object] = (),
    worker: Worker | None = None,
) -> TestResult:
    """Run accuracy ``task`` (a name, or ``{name: params}`` as in a suite's ``accuracy:``)
    on ``stack`` as a suite would: after a short ``generate`` workload, in one cell."""
    return run_technique(
        stack,
        model=model,
        accuracy=[task],
        device=device,
        plugins=plugins,
        worker=worker,
    )


@dataclass(frozen=True)
class ModelShape:
    """What a plain KV cache's size follows from (REFERENCE.md, eq. 2).

    Attributes:
        layers: decoder layers (l).
        kv_heads: key/value heads (h).
        head_dim: channels per head (c).
        bytes_per_element: bytes of one cached value in the model's dtype.
    """

    layers: int
    kv_heads: int
    head_dim: int
    bytes_per_element: int


def load_model(model: str = "tiny-random-llama", *, device: str = "cpu") -> Any:
    """The model ``model`` (a ``harness.models.LoadedModel``: ``.model``, ``.tokenizer``),
    loaded through the installed model sources as a worker loads it."""
    from harness.models import resolve_source

    return resolve_source(model, registry_with().model_sources).load(model, device=device)


def model_shape(model: Any = "tiny-random-llama") -> ModelShape:
    """The :class:`ModelShape` of ``model``: a model id (loaded) or a loaded model."""
    loaded = load_model(model).model if isinstance(model, str) else model
    config = loaded.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    element = next(iter(loaded.parameters())).element_size()
    return ModelShape(config.num_hidden_layers, kv_heads, head_dim, element)


def kv_cache_bytes(
    shape: ModelShape, tokens: int, *, batch: int = 1, bytes_per_element: float | None = None
) -> int:
    """Bytes of a plain KV cache holding ``tokens`` positions (REFERENCE.md, eq. 2):
    ``batch × tokens × layers × 2 × kv_heads × head_dim × bytes_per_element``.

    After ``generate`` with ``prompt_tokens`` P and ``new_tokens`` N the cache holds
    ``P + N − 1`` positions (the last token is never fed back). ``bytes_per_element``
    overrides the model's (e.g. ``0.5`` for 4-bit codes without their scales).
    """
    element = shape.bytes_per_element if bytes_per_element is None else bytes_per_element
    total = batch * tokens * shape.layers * 2 * shape.kv_heads * shape.head_dim * element
    if not float(total).is_integer():
        raise ValueError(f"{total} is not a whole number of bytes")
    return int(total)


def assert_bytes(actual: float | None, expected: int, what: str = "bytes") -> None:
    """Assert an exact byte count, with both numbers and their difference in the message.

    Raises:
        AssertionError: ``actual`` is not exactly ``expected``.
    """
    if actual is None or actual != expected:
        diff = "" if actual is None else f" ({actual - expected:+,.0f})"
        raise AssertionError(f"{what}: {actual} bytes, expected exactly {expected:,}{diff}")


class BuiltinTexts(Mapping[tuple[str, str], str]):
    """``WorkloadContext.texts`` that loads any (text source, split) of the installed text
    sources on first use, for calling a task directly."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], str] = {}

    def __getitem__(self, key: tuple[str, str]) -> str:
        if key not in self._loaded:
            from harness.textsources import resolve_text_source

            ref, split = key
            source = resolve_text_source(ref, registry_with().text_sources)
            self._loaded[key] = source.load(ref, split)  # type: ignore[arg-type]
        return self._loaded[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._loaded)

    def __len__(self) -> int:
        return len(self._loaded)


def workload_context(tokenizer: Any, *, device: str = "cpu") -> WorkloadContext:
    """A ``WorkloadContext`` for calling a workload's ``run`` directly: default policy, no
    probes, the installed text sources (``BuiltinTexts``)."""
    return WorkloadContext(
        device=device, tokenizer=tokenizer, policy=Policy(), probes=[], texts=BuiltinTexts()
    )


def run_task(
    task: Workload[Any],
    prepared: Prepared,
    ctx: WorkloadContext,
    *,
    reference_model: Any = None,
) -> Measurement:
    """Run ``task`` as the cell pipeline does: when it ``uses_reference``, its reference
    outputs are first computed on ``reference_model`` (the unmodified model)."""
    if task.uses_reference and reference_model is not None:
        ctx.reference = task.reference(reference_model, ctx)
    return task.run(prepared, ctx)
