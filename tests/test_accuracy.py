"""Accuracy tasks in the worker: the per-stack result cache, and metrics that can fail (DoD)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from harness import (
    Config,
    Context,
    Measurement,
    MetricDef,
    Prepared,
    Technique,
    Value,
    Workload,
    WorkloadContext,
    hookimpl,
)
from harness.suite import Cell, suite_from_data
from harness.testing import registry_with, run_technique
from harness.worker import Worker


class _Counting(Workload):
    """An accuracy task that counts its runs (the generate parameters must not matter)."""

    name = "counting"
    kind = "accuracy"
    runs: ClassVar[int] = 0

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        type(self).runs += 1
        return Measurement((Value("test.runs", float(type(self).runs), "runs"),))


class _StepsParams(Config):
    steps: int = 1


class _Training(Workload):
    """A measure workload that changes the weights (as training does): nothing to share."""

    name = "fake-train"
    Params = _StepsParams
    mutates_weights = True

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        return Measurement(())


class _Budget(Technique):
    """Prepares from the workload's parameters (like a KV budget as a share of the prompt)."""

    name = "budget"

    @property
    def reads_workload(self) -> bool:
        return True

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        ctx.state["budget"] = ctx.workload["params"]["prompt_tokens"] // 2
        return prepared


class _Forwards(Technique):
    """Counts the model's forward passes; its metric must describe the measure workload."""

    name = "forwards"

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        ctx.state["forwards"] = 0

        def count(module: Any, args: Any) -> None:
            ctx.state["forwards"] += 1

        handle = prepared.model.register_forward_pre_hook(count)
        prepared.cleanup.append(handle.remove)
        return prepared

    def metrics(self, ctx: Context) -> dict[str, float]:
        return {"test.forwards": ctx.state["forwards"]}


class _Plugin:
    @hookimpl
    def register_workloads(self) -> list[type[Workload]]:
        return [_Counting, _Training]

    @hookimpl
    def register_techniques(self) -> list[type[Technique]]:
        return [_Budget, _Forwards]

    @hookimpl
    def register_metrics(self) -> list[MetricDef]:
        return [
            MetricDef("test.runs", "runs", True, "times the counting task ran"),
            MetricDef("test.forwards", "calls", False, "forward passes of the model"),
        ]


def counting_cells(
    workload: dict[str, Any], techniques: list[Any] | None = None
) -> tuple[Worker, tuple[Cell, ...]]:
    """A worker with the test plugin and the cells of a suite with the ``counting`` task."""
    registry = registry_with([_Plugin()])
    data = {
        "name": "t",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": workload,
        "techniques": techniques or ["baseline"],
        "accuracy": ["counting"],
        "policy": {"warmup": 0, "repeats": 1},
    }
    return Worker("cpu", registry), suite_from_data(data, registry, devices=["cpu"]).cells


GENERATE_8_12 = {"generate": {"prompt_tokens": [8, 12], "new_tokens": 2}}


def test_accuracy_runs_once_per_stack_and_is_stored_in_every_cell() -> None:
    worker, cells = counting_cells(GENERATE_8_12, ["baseline", {"precision": {"dtype": "bf16"}}])
    _Counting.runs = 0
    results = [worker.run(cell) for cell in cells]
    assert [r.status for r in results] == ["ok"] * 4
    runs = {(r.technique, r.workload["params"]["prompt_tokens"]): r for r in results}
    value = {k: next(v.value for v in r.values if v.name == "test.runs") for k, r in runs.items()}
    # Two stacks → two runs; the second workload variant of each stack reuses the first's.
    assert _Counting.runs == 2
    assert value[("baseline", 8)] == value[("baseline", 12)] == 1.0
    assert value[("precision(dtype=bf16)", 8)] == value[("precision(dtype=bf16)", 12)] == 2.0


def test_technique_metrics_describe_the_measure_workload_not_the_accuracy_tasks() -> None:
    registry = registry_with([_Plugin()])
    accuracy = [{"perplexity": {"tokens": 64, "window": 32, "stride": 16}}]
    first = run_technique("forwards", accuracy=accuracy, worker=Worker("cpu", registry))
    second = run_technique("forwards", worker=Worker("cpu", registry))
    # 1 timed + 1 memory generation of 4 tokens each (prefill + 3 steps); perplexity's 3
    # windows ran after the metric was read.
    assert first.value("test.forwards") == second.value("test.forwards") == 8


def test_a_stack_prepared_from_the_workload_gets_accuracy_per_variant() -> None:
    worker, cells = counting_cells(GENERATE_8_12, ["budget"])
    _Counting.runs = 0
    assert [worker.run(cell).status for cell in cells] == ["ok", "ok"]
    assert _Counting.runs == 2


def test_accuracy_after_a_weight_changing_workload_runs_for_every_variant() -> None:
    worker, cells = counting_cells({"fake-train": {"steps": [1, 2]}})
    _Counting.runs = 0
    assert [worker.run(cell).status for cell in cells] == ["ok", "ok"]
    assert _Counting.runs == 2


# ------------------------------------------------------------------ smollm2 (issue 4 DoD)

ACCURACY = [
    {"perplexity": {"tokens": 512, "window": 256, "stride": 192}},
    {"passkey": {"context_tokens": [256], "depths": [0.25, 0.75], "trials": 2}},
    {"agreement": {"tokens": 256, "window": 256}},
]


@pytest.mark.slow
def test_a_damaged_model_scores_worse_on_every_accuracy_metric(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/plugins/bench_damage.py zeroes half the attention heads of every layer."""
    monkeypatch.setenv("BENCH_PLUGINS", "bench_damage")  # tests/plugins is on sys.path
    worker = Worker("cpu")
    results: dict[str, Any] = {}
    for name, stack in (("baseline", "baseline"), ("damage", {"damage": {"fraction": 0.5}})):
        result = run_technique(stack, model="smollm2-135m", accuracy=ACCURACY, worker=worker)
        assert result.status == "ok", result.reason
        results[name] = result
    base, bad = results["baseline"], results["damage"]
    assert base.value("accuracy.passkey") == 1.0
    assert base.value("accuracy.top1_agreement") == 1.0
    assert base.value("accuracy.kl_div") == 0.0
    assert bad.value("accuracy.perplexity") > 1.5 * base.value("accuracy.perplexity")
    assert bad.value("accuracy.bits_per_byte") > base.value("accuracy.bits_per_byte")
    assert bad.value("accuracy.passkey") < base.value("accuracy.passkey")
    assert bad.value("accuracy.top1_agreement") < 0.9
    assert bad.value("accuracy.kl_div") > 0.1
