"""Kit for plugin authors: run a technique on a real (tiny) model in-process.

    from harness.testing import run_technique
    result = run_technique({"my-method": {"ratio": 0.5}}, plugins=[my_plugin_module])
    assert result.status == "ok"
    assert result.value("memory.kv_cache_bytes") < baseline.value("memory.kv_cache_bytes")

The default model is the built-in ``tiny-random-llama`` (seeded, a few MB, made on first
use); pass ``model="smollm2-135m"`` for the real one.
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
    """A cell's result with a convenience accessor for metric values."""

    result: CellResult

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def reason(self) -> str | None:
        return self.result.reason

    def value(self, name: str) -> float | None:
        for v in self.result.values:
            if v.name == name:
                return v.value
        raise KeyError(f"no metric {name!r} in {[v.name for v in self.result.values]}")


def registry_with(plugins: Iterable[object] = ()) -> Registry:
    """The installed plugins plus ``plugins`` (modules or objects with hook implementations)."""
    return Registry(get_plugin_manager(extra=tuple(plugins)))


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
) -> TestResult:
    """Run one cell (technique stack × workload) in this process and return its result."""
    registry = worker.registry if worker else registry_with(plugins)
    stack_list = [stack] if isinstance(stack, (str, Mapping)) else list(stack)
    data = {
        "name": "test",
        "models": [model],
        "devices": [device],
        "workload": {"generate": dict(workload or {"prompt_tokens": 16, "new_tokens": 4})},
        "techniques": [stack_list],
        "accuracy": list(accuracy),
        "policy": {"warmup": warmup, "repeats": repeats, "timeout_s": 600},
    }
    (cell,) = suite_from_data(data, registry, devices=[device]).cells
    runner = worker or Worker(device, registry)
    return TestResult(runner.run(cell))


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
