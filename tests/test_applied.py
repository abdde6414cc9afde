"""Proof of effect: every built-in technique's ``verify`` on the tiny model (passing and
failing), the pipeline's not-applied status, and the one-time costs' windows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from harness import Applied, Context, Prepared, Technique, hookimpl
from harness.costs import cost_window, peak_value
from harness.environment import Environment
from harness.models import BuiltinSource
from harness.probes import PEAK_RSS_BYTES, WINDOW_PEAK_BYTES, Phase, Probe
from harness.registry import Registry
from harness.results import MetricDef, Value
from harness.testing import registry_with, run_technique
from harness.worker import Worker

INFERENCE = {"prompt_tokens": 40, "new_tokens": 6}


@pytest.fixture(scope="module")
def worker() -> Worker:
    return Worker("cpu", registry_with())


def applied_reason(result: Any) -> str:
    return next(v.reason for v in result.result.values if v.name == "check.applied") or ""


def ok(result: Any) -> bool:
    assert result.status == "ok", result.reason
    return result.value("check.applied") == 1.0


# ---------------------------------------------------------------- built-ins through a cell


def test_baseline_and_weight_quant_prove_their_effect(worker: Worker) -> None:
    base = run_technique(worker=worker, workload=INFERENCE)
    assert ok(base)
    assert applied_reason(base) == "baseline: runs the model as loaded; nothing to check"
    quant = run_technique({"weight-quant": {"bits": 4}}, worker=worker, workload=INFERENCE)
    assert ok(quant)
    assert quant.value("weight_quant.replaced_share") == 1.0
    assert "14 of 14 targeted linear layers quantized" in applied_reason(quant)


def test_kv_evict_checks_the_final_cache_against_its_budget(worker: Worker) -> None:
    evict = run_technique(
        {"kv-evict": {"policy": "streaming", "budget_tokens": 16}},
        worker=worker,
        workload=INFERENCE,
    )
    assert ok(evict)
    assert evict.value("kv.final_cache_tokens") == 16
    assert evict.value("kv.seen_tokens") == 40 + 6 - 1  # the last token is never cached
    snap = run_technique(
        {"kv-evict": {"policy": "snapkv", "budget_tokens": 24, "window": 4}},
        worker=worker,
        workload=INFERENCE,
    )
    assert ok(snap)
    assert snap.value("kv.final_cache_tokens") == 24 + 5  # the budget plus what decode added
    # A budget the cell never reaches evicts nothing: the technique did not take effect.
    idle = run_technique(
        {"kv-evict": {"policy": "streaming", "budget_tokens": 500}},
        worker=worker,
        workload=INFERENCE,
    )
    assert idle.status == "not-applied"
    assert "never exceeded the budget, nothing evicted" in (idle.reason or "")
    assert idle.value("kv.final_cache_tokens") == 45  # the evidence is kept


def test_kv_quant_gqa_speculative_and_precision_prove_their_effect(worker: Worker) -> None:
    quant = run_technique({"kv-quant": {"bits": 4}}, worker=worker, workload=INFERENCE)
    assert ok(quant) and quant.value("kv_quant.quantized_layers") == 2
    gqa = run_technique({"gqa": {"kv_heads": 1}}, worker=worker, workload=INFERENCE)
    assert ok(gqa) and gqa.value("gqa.kv_heads_after") == 1
    spec = run_technique(
        {"speculative": {"method": "prompt-lookup"}},
        worker=worker,
        workload={**INFERENCE, "grounded": True},
    )
    assert ok(spec)
    assert (spec.value("spec.generate_calls") or 0) >= 1
    assert (spec.value("spec.drafted_tokens") or 0) > 0
    bf16 = run_technique({"precision": {"dtype": "bf16"}}, worker=worker, workload=INFERENCE)
    assert ok(bf16) and "dtypes other than bfloat16: none" in applied_reason(bf16)


TRAIN = {"seq_len": 16, "batch_size": 1, "steps": 1, "warmup_steps": 0, "eval_tokens": 32}


def _train(stack: Any, worker: Worker) -> Any:
    from harness.suite import suite_from_data
    from harness.testing import TestResult

    data = {
        "name": "train",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"train": TRAIN},
        "techniques": [stack],
        "policy": {"warmup": 0, "repeats": 1},
    }
    (cell,) = suite_from_data(data, worker.registry, devices=["cpu"]).cells
    return TestResult(worker.run(cell))


@pytest.mark.parametrize(
    ("stack", "evidence", "value"),
    [
        ({"galore": {"rank": 4}}, "optim.low_rank_share", 1.0),
        ({"apollo-mini": {}}, "optim.low_rank_share", 1.0),
        ({"adam-8bit": {"min_8bit_size": 1024}}, "optim.state_8bit_share", None),
        ({"lora": {"rank": 2}}, "lora.trainable_share", None),
        ("activation-checkpointing", None, None),
        ({"mixed-precision": {"dtype": "bf16"}}, None, None),
    ],
)
def test_training_techniques_prove_their_effect(
    stack: Any, evidence: str | None, value: float | None, worker: Worker
) -> None:
    result = _train(stack, worker)
    if result.status == "skipped":
        pytest.skip(result.reason or "")
    assert ok(result), applied_reason(result)
    if evidence is not None:
        got = result.value(evidence)
        assert got is not None and got > 0
        if value is not None:
            assert got == value


# ---------------------------------------------------------------- failing checks, directly


@pytest.fixture(scope="module")
def tiny() -> Any:
    return BuiltinSource().load("tiny-random-llama")


def _ctx(tiny: Any, **state: Any) -> Context:
    return Context("cpu", "tiny-random-llama", tiny.tokenizer, {}, Environment.detect("cpu"), state)


def test_weight_quant_fails_when_a_layer_stayed_in_full_precision(tiny: Any) -> None:
    from plugins.quant_backends import targets
    from plugins.weight_quant import WeightQuant, WeightQuantConfig

    names = [n for n, _ in targets(tiny.model, ["lm_head"])]
    ctx = _ctx(tiny, model=tiny.model, targets=names, target_bytes_before=10**9)
    got = WeightQuant(WeightQuantConfig(bits=4)).verify(Prepared(tiny.model), ctx)
    assert not got.ok
    assert f"0 of {len(names)} targeted linear layers quantized" in got.reason
    assert got.evidence == {"weight_quant.replaced_share": 0.0}


def test_speculation_that_drafted_nothing_is_not_applied(tiny: Any) -> None:
    from plugins.speculative import PassCounter, Speculative, SpeculativeConfig

    counter = PassCounter(calls=2, passes=10, drafted=0, emitted=10)
    got = Speculative(SpeculativeConfig(method="prompt-lookup")).verify(
        Prepared(tiny.model), _ctx(tiny, counter=counter)
    )
    assert not got.ok and "nothing was drafted" in got.reason


def test_precision_gqa_and_kv_quant_fail_when_nothing_changed(tiny: Any) -> None:
    from plugins.gqa import GQA, GQAConfig
    from plugins.kv_quant import KVQuant, KVQuantConfig, QuantizedStorage
    from plugins.precision import Precision, PrecisionConfig

    fp32 = Precision(PrecisionConfig(dtype="bf16")).verify(Prepared(tiny.model), _ctx(tiny))
    assert not fp32.ok and "float32" in fp32.reason
    heads = GQA(GQAConfig(kv_heads=1)).verify(Prepared(tiny.model), _ctx(tiny, before=2))
    assert not heads.ok and "config 2 key/value heads" in heads.reason
    storage = QuantizedStorage(KVQuantConfig(bits=4), tiny.model.config)
    never = KVQuant(KVQuantConfig(bits=4)).verify(Prepared(tiny.model), _ctx(tiny, storage=storage))
    assert not never.ok and "no generation" in never.reason


def test_checkpointing_fails_when_transformers_reports_it_off(tiny: Any) -> None:
    from harness.technique import Config
    from plugins.checkpointing import ActivationCheckpointing

    got = ActivationCheckpointing(Config()).verify(Prepared(tiny.model), _ctx(tiny))
    assert not got.ok and "model checkpointing off" in got.reason


# ---------------------------------------------------------------- the pipeline


class Unchecked(Technique):
    name = "unchecked"


class Refuses(Technique):
    name = "refuses"

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        return Applied(False, "did nothing on purpose", {"kv.budget_tokens": 3.0})


class Plugin:
    @hookimpl
    def register_techniques(self) -> list[type[Technique]]:
        return [Unchecked, Refuses]


def test_a_failed_check_makes_the_cell_not_applied_and_skips_accuracy() -> None:
    result = run_technique(
        "refuses",
        plugins=[Plugin()],
        accuracy=[{"perplexity": {"tokens": 64, "window": 32, "stride": 16}}],
    )
    assert result.status == "not-applied"
    assert result.reason == "refuses: did nothing on purpose"
    names = {v.name for v in result.result.values}
    assert "latency.tpot_s" in names and "cost.prepare_s" in names  # the evidence is kept
    assert result.value("check.applied") == 0.0
    assert result.value("kv.budget_tokens") == 3.0
    assert "accuracy.perplexity" not in names


def test_a_technique_without_a_check_says_so() -> None:
    result = run_technique(["baseline", "unchecked"], plugins=[Plugin()])
    assert result.status == "ok"
    assert result.value("check.applied") == 1.0
    assert applied_reason(result) == (
        "baseline: runs the model as loaded; nothing to check; "
        "unchecked: unchecked defines no verify(): its effect is not checked"
    )


# ---------------------------------------------------------------- one-time costs


class Log:
    events: ClassVar[list[str]] = []


class FakeRss(Probe):
    """An RSS probe whose peak is 100 bytes per window opened so far."""

    name: ClassVar[str] = "fake-rss"
    phase: ClassVar[Phase] = "memory"
    metrics: ClassVar[tuple[MetricDef, ...]] = (PEAK_RSS_BYTES,)
    opened = 0

    def start(self) -> None:
        FakeRss.opened += 1
        Log.events.append("start")

    def stop(self) -> list[Value]:
        Log.events.append("stop")
        return [self._value(PEAK_RSS_BYTES.name, 100.0 * FakeRss.opened, "fake")]


class SlowProfiler(FakeRss):
    name: ClassVar[str] = "slow-profiler"
    metrics: ClassVar[tuple[MetricDef, ...]] = (WINDOW_PEAK_BYTES,)
    slows: ClassVar[bool] = True

    def start(self) -> None:
        Log.events.append("profiler")

    def stop(self) -> list[Value]:
        Log.events.append("profiler stop")
        return [self._value(WINDOW_PEAK_BYTES.name, 1.0, "fake")]


@pytest.fixture
def log() -> Iterator[list[str]]:
    Log.events.clear()
    yield Log.events


def test_cost_window_times_the_body_and_takes_the_peak_of_fast_probes(log: list[str]) -> None:
    with cost_window([FakeRss("cpu"), SlowProfiler("cpu")], "cpu", "prepare") as values:
        log.append("body")
    assert log == ["start", "body", "stop"]  # the profiler slows code down: left out
    got = {v.name: v for v in values}
    assert got["cost.prepare_s"].value is not None and got["cost.prepare_s"].value >= 0
    assert got["cost.prepare_peak_bytes"].source == "memory.peak_rss_bytes (fake)"
    none = peak_value("cost.load_peak_bytes", [], [])
    assert none.value is None and "no memory probe" in (none.reason or "")


def test_load_and_prepare_peaks_are_taken_apart_from_the_workload_window(log: list[str]) -> None:
    class Marks(Technique):
        name = "marks"

        def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
            log.append("prepare")
            return prepared

    class MarksPlugin:
        @hookimpl
        def register_techniques(self) -> list[type[Technique]]:
            return [Marks]

        @hookimpl
        def register_probes(self) -> list[type[Probe]]:
            return [FakeRss]

    registry: Registry = registry_with([MarksPlugin()])
    worker = Worker("cpu", registry)
    worker.probes = [p for p in worker.probes if isinstance(p, FakeRss)]
    FakeRss.opened = 0
    result = run_technique("marks", worker=worker)
    assert result.status == "ok", result.reason
    # load window, then prepare window, then the workload's own memory window: each is
    # opened (its peak reset) after the one before was closed.
    assert log[:7] == ["start", "stop", "start", "prepare", "stop", "start", "stop"]
    assert result.value("cost.load_peak_bytes") == 100.0
    assert result.value("cost.prepare_peak_bytes") == 200.0
    assert result.value("memory.peak_rss_bytes") == 300.0
