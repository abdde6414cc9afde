"""``harness.testing``, the kit for plugin authors: a technique, an accuracy task, and a
plugin's KV cache builder stacked with the built-in ``kv-quant``, with exact bytes."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers.cache_utils import Cache, DynamicLayer

from harness import Config, Context, Measurement, MetricDef, Prepared, Technique, Value, Workload
from harness import hookimpl as impl
from harness.kvcache import KVCodec
from harness.testing import (
    ModelShape,
    TestResult,
    assert_bytes,
    kv_cache_bytes,
    model_shape,
    run_accuracy,
    run_technique,
    worker_with,
)
from harness.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "plugin_example"))

import bench_attn  # noqa: E402

WORKLOAD = {"prompt_tokens": 16, "new_tokens": 4}
CACHED = 16 + 4 - 1
FP8 = {"kv-quant": {"backend": "fp8", "bits": 8}}


# ---------------------------------------------------------------- a plugin's cache builder


class CodedLayer(DynamicLayer):
    """A cache layer that holds every token as its storage's codes (``harness.kvcache``):
    what a third-party builder does to stack with ``kv-quant``; plain tensors without one."""

    def __init__(self, codec: KVCodec | None) -> None:
        super().__init__()
        self.codec = codec
        self.codes: tuple[Any, Any] | None = None
        self.seen = 0

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        if self.codec is None:
            return super().update(key_states, value_states, *args, **kwargs)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.seen += key_states.shape[-2]
        keys, values = key_states, value_states
        if self.codes is not None:
            keys = torch.cat([self.codec.decode(self.codes[0]), keys], dim=-2)
            values = torch.cat([self.codec.decode(self.codes[1]), values], dim=-2)
        self.codes = (self.codec.encode(keys, "key"), self.codec.encode(values, "value"))
        return keys, values

    def get_seq_length(self) -> int:
        return self.seen if self.codec is not None else super().get_seq_length()


class CodedCache(Technique):
    """Builds the KV cache; stores its tensors through the stack's storage when there is one."""

    name = "coded-cache"

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        layers = prepared.model.config.num_hidden_layers

        def build(codecs: Any) -> Any:
            return Cache(layers=[CodedLayer(c) for c in (codecs or [None] * layers)])

        prepared.set_cache(build, self.name, stores_codes=True)
        return prepared


class Leaky(Workload[Config]):
    """An accuracy task that returns one metric it registered and one it did not."""

    name = "leaky"
    kind = "accuracy"

    def run(self, prepared: Prepared, ctx: Any) -> Measurement:
        return Measurement((Value("leaky.known", 1.0, "x"), Value("leaky.unknown", 2.0, "x")))


class KitPlugin:
    @impl
    def register_techniques(self) -> list[type[Technique]]:
        return [CodedCache]

    @impl
    def register_workloads(self) -> list[type[Workload[Any]]]:
        return [Leaky]

    @impl
    def register_metrics(self) -> list[MetricDef]:
        return [MetricDef("leaky.known", "x", True, "a registered metric")]


@pytest.fixture(scope="module")
def worker() -> Worker:
    return worker_with([KitPlugin(), bench_attn])


@pytest.fixture(scope="module")
def shape() -> ModelShape:
    return model_shape()


def test_model_shape_of_the_tiny_model(shape: ModelShape) -> None:
    assert shape == ModelShape(layers=2, kv_heads=2, head_dim=16, bytes_per_element=4)
    assert kv_cache_bytes(shape, tokens=19) == 1 * 19 * 2 * 2 * 2 * 16 * 4
    assert kv_cache_bytes(shape, tokens=19, batch=2, bytes_per_element=0.5) == 19 * 2 * 2 * 16 * 2
    with pytest.raises(ValueError, match="whole number"):
        kv_cache_bytes(shape, tokens=1, bytes_per_element=1 / 3)


def test_a_plain_cache_is_exactly_the_reference_formula(worker: Worker, shape: ModelShape) -> None:
    base = run_technique("baseline", workload=WORKLOAD, worker=worker)
    assert base.bytes("memory.kv_cache_bytes") == kv_cache_bytes(shape, tokens=CACHED)
    alone = run_technique("coded-cache", workload=WORKLOAD, worker=worker)
    assert alone.status == "ok", alone.reason
    assert alone.bytes("memory.kv_cache_bytes") == kv_cache_bytes(shape, tokens=CACHED)


@pytest.mark.parametrize("order", ["builder first", "storage first"])
def test_a_plugin_builder_stores_through_the_builtin_kv_quant(
    worker: Worker, shape: ModelShape, order: str
) -> None:
    stack: list[Any] = ["coded-cache", FP8] if order == "builder first" else [FP8, "coded-cache"]
    stacked = run_technique(stack, workload=WORKLOAD, worker=worker)
    assert stacked.status == "ok", stacked.reason
    # fp8 codes: one byte per value, plus one fp32 scale per layer for keys and for values
    fp8 = kv_cache_bytes(shape, tokens=CACHED, bytes_per_element=1) + shape.layers * 2 * 4
    assert_bytes(stacked.value("memory.kv_cache_bytes"), fp8, "coded-cache + kv-quant")
    quant_alone = run_technique(FP8, workload=WORKLOAD, worker=worker)
    assert stacked.bytes("memory.kv_cache_bytes") == quant_alone.bytes("memory.kv_cache_bytes")


def test_an_accuracy_task_runs_on_a_stack(worker: Worker) -> None:
    task = {"greedy-match": {"prompts": 2, "prompt_tokens": 16, "new_tokens": 6}}
    same = run_accuracy(task, worker=worker)
    assert same.status == "ok", same.reason
    assert same.value("greedy.token_match") == 1.0
    (value,) = [v for v in same.result.values if v.name == "greedy.token_match"]
    assert value.samples == (1.0, 1.0) and value.n == 2
    eager = run_accuracy(task, {"attn-impl": {"implementation": "eager"}}, worker=worker)
    assert eager.value("greedy.token_match") == 1.0  # the same maths, another kernel


def test_an_unregistered_metric_is_reported_and_the_cell_keeps_the_rest(worker: Worker) -> None:
    result = run_accuracy("leaky", worker=worker)
    assert result.status == "ok"
    assert result.value("leaky.known") == 1.0
    assert result.value("latency.tpot_s") is not None  # the measure workload's values stay
    with pytest.raises(KeyError):
        result.value("leaky.unknown")
    assert result.reason == (
        "metrics leaky.unknown were not stored: they are not registered; return a MetricDef "
        "for each from the plugin's register_metrics hook"
    )


def test_byte_assertions_say_what_differs(worker: Worker) -> None:
    with pytest.raises(AssertionError, match=r"KV: 9730 bytes, expected exactly 9,728 \(\+2\)"):
        assert_bytes(9730, 9728, "KV")
    assert_bytes(9728.0, 9728)
    result = run_technique("baseline", workload=WORKLOAD, worker=worker).result
    odd = TestResult(replace(result, values=(Value("m", 1.5, "bytes"),)))
    with pytest.raises(AssertionError, match=r"m = 1\.5 is not a whole number of bytes"):
        odd.bytes("m")
    null = TestResult(replace(result, values=(Value("m", None, "bytes", reason="no probe"),)))
    with pytest.raises(AssertionError, match="m is null: no probe"):
        null.bytes("m")
