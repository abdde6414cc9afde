"""A small results database with realistic values, written through ``Store.record``.

Shared by the dashboard and report tests. Two models × eight technique stacks on one CPU
machine in two runs (the second has a 10% slower baseline TPOT, a significant change), plus
one run on a GPU machine. Numbers are shaped like SmolLM2 on a laptop CPU: weights from the
parameter count, KV cache from layers × heads × head_dim, latencies in milliseconds.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from harness.results import CellResult, MetricDef, Status, Value
from harness.store import Store

WORKLOAD = {"name": "generate", "params": {"prompt_tokens": 128, "new_tokens": 32, "batch_size": 1}}
WORKLOAD_LABEL = "generate(batch_size=1,new_tokens=32,prompt_tokens=128)"
CI_FRACTION = 0.02  # each repeated metric gets a ±2% 95% interval

DEFS = [
    MetricDef("latency.ttft_s", "s", False, "time to first token"),
    MetricDef("latency.tpot_s", "s", False, "time per output token"),
    MetricDef("throughput.decode_tok_s", "tok/s", True, "decode tokens per second"),
    MetricDef("memory.weights_bytes", "bytes", False, "bytes of the weights"),
    MetricDef("memory.kv_cache_bytes", "bytes", False, "bytes of the KV cache"),
    MetricDef("memory.peak_alloc_bytes", "bytes", False, "allocator peak"),
    MetricDef("energy.j_per_token", "J/token", False, "energy per generated token"),
    MetricDef("accuracy.perplexity", "", False, "teacher-forced perplexity"),
]

# model -> (parameters, KV bytes per token in fp32, baseline ttft s, tpot s, perplexity)
MODELS = {
    "smollm2-135m": (134_515_008, 30 * 2 * 3 * 64 * 4, 0.052, 0.0210, 21.4),
    "smollm2-360m": (361_821_120, 32 * 2 * 5 * 64 * 4, 0.131, 0.0480, 16.9),
}

# label, stack, weight bytes factor, kv factor, ttft factor, tpot factor, perplexity factor
STACKS: list[tuple[str, list[dict[str, object]], float, float, float, float, float]] = [
    ("baseline", [{"name": "baseline", "config": {}}], 1.0, 1.0, 1.0, 1.0, 1.0),
    (
        "precision(dtype=bf16)",
        [{"name": "precision", "config": {"dtype": "bf16"}}],
        0.5,
        0.5,
        1.35,
        1.25,
        1.001,
    ),
    (
        "weight-quant(bits=8)",
        [{"name": "weight-quant", "config": {"bits": 8}}],
        0.2656,
        1.0,
        1.6,
        1.45,
        1.004,
    ),
    (
        "weight-quant(bits=4)",
        [{"name": "weight-quant", "config": {"bits": 4}}],
        0.1406,
        1.0,
        1.9,
        1.7,
        1.052,
    ),
    (
        "kv-quant(bits=4)",
        [{"name": "kv-quant", "config": {"bits": 4}}],
        1.0,
        0.14,
        1.1,
        1.12,
        1.009,
    ),
    (
        "weight-quant(bits=4)+kv-quant(bits=2)",
        [
            {"name": "weight-quant", "config": {"bits": 4}},
            {"name": "kv-quant", "config": {"bits": 2}},
        ],
        0.1406,
        0.08,
        2.0,
        1.9,
        1.13,
    ),
]
SKIPPED: tuple[str, list[dict[str, object]], Status, str] = (
    "offload(target=cpu)",
    [{"name": "offload", "config": {"target": "cpu"}}],
    "skipped",
    "needs CUDA: offloading moves weights from a GPU to host memory",
)
FAILED: tuple[str, list[dict[str, object]], Status, str] = (
    "h2o(heavy_ratio=0.1)",
    [{"name": "h2o", "config": {"heavy_ratio": 0.1}}],
    "error",
    "RuntimeError: attention scores not available with sdpa",
)


@dataclass
class DemoDb:
    """What :func:`fill_demo_db` wrote."""

    url: str
    run_ids: list[int] = field(default_factory=list)
    defs: list[MetricDef] = field(default_factory=lambda: list(DEFS))


def metric_values(
    model: str,
    stack_index: int,
    slowdown: float = 1.0,
    with_accuracy: bool = True,
    speed: float = 1.0,
) -> list[Value]:
    """The metric values of one ok cell (stored units).

    ``slowdown`` multiplies the baseline's TPOT only; ``speed`` multiplies every latency
    (the GPU machine is faster).
    """
    params, kv_per_token, ttft0, tpot0, ppl0 = MODELS[model]
    _, _, wf, kvf, ttftf, tpotf, pplf = STACKS[stack_index]
    weights = params * 4 * wf
    kv = kv_per_token * (128 + 32) * kvf
    activations = 96 * 2**20
    ttft = ttft0 * ttftf * speed
    tpot = tpot0 * tpotf * speed * (slowdown if stack_index == 0 else 1.0)
    values = [
        _ci("latency.ttft_s", ttft, "s"),
        _ci("latency.tpot_s", tpot, "s"),
        _ci("throughput.decode_tok_s", 1.0 / tpot, "tok/s"),
        Value("memory.weights_bytes", weights, "bytes"),
        Value("memory.kv_cache_bytes", kv, "bytes"),
        Value("memory.peak_alloc_bytes", weights + kv + activations, "bytes", source="profiler"),
        Value("energy.j_per_token", None, "J/token", reason="no energy meter (RAPL unreadable)"),
    ]
    if with_accuracy:
        values.append(Value("accuracy.perplexity", ppl0 * pplf, "", n=1, source="shakespeare"))
    return values


def _key(model: str, label: str, device: str) -> str:
    return hashlib.sha256(f"{model}|{label}|{device}".encode()).hexdigest()[:32]


def _ci(name: str, value: float, unit: str) -> Value:
    half = value * CI_FRACTION
    return Value(name, value, unit, value - half, value + half, n=5, source="perf_counter")


def _cell(
    model: str,
    device: str,
    label: str,
    stack: list[dict[str, object]],
    started_at: float,
    duration_s: float,
    values: list[Value],
    status: Status = "ok",
    reason: str | None = None,
) -> CellResult:
    return CellResult(
        key=_key(model, label, device),
        model=model,
        device=device,
        technique=label,
        stack=tuple(stack),
        workload=WORKLOAD,
        status=status,
        reason=reason,
        started_at=started_at,
        duration_s=duration_s,
        values=tuple(values),
        reference=label == "baseline",
    )


def _record_run(
    store: Store,
    machine_id: int,
    device: str,
    slowdown: float,
    with_accuracy: bool,
    speed: float = 1.0,
    suite: str = "inference",
) -> int:
    run_id = store.start_run(
        suite_name=suite,
        suite_path=f"suites/{suite}.yaml",
        suite_hash="3f9a" * 16,
        machine_id=machine_id,
        harness_version="0.1.0",
        git_commit="0123456789abcdef",
        environment={
            "python": "3.11.9",
            "libraries": {"torch": "2.13.0", "transformers": "5.23.0"},
        },
    )
    t0 = 1_750_000_000.0
    for model in MODELS:
        for i, (label, stack, *_rest) in enumerate(STACKS):
            values = metric_values(model, i, slowdown, with_accuracy, speed)
            store.record(run_id, _cell(model, device, label, stack, t0 + i, 4.0 + i, values))
        for label, stack, status, reason in (SKIPPED, FAILED):
            duration_s = 0.0 if status == "skipped" else 1.5
            cell = _cell(model, device, label, stack, t0 + 20, duration_s, [], status, reason)
            store.record(run_id, cell)
    store.finish_run(run_id)
    return run_id


def fill_demo_db(url: str, *, with_accuracy: bool = True, gpu_run: bool = True) -> DemoDb:
    """Writes the demo runs into the database at ``url`` (created if needed)."""
    demo = DemoDb(url=url)
    with Store.open(url) as store:
        store.save_metric_defs(DEFS)
        cpu = store.ensure_machine(
            "cpu-fingerprint",
            {
                "hostname": "laptop",
                "cpu": "AMD Ryzen 7 7840U",
                "cpu_count": 16,
                "ram_bytes": 32 * 2**30,
            },
        )
        demo.run_ids.append(_record_run(store, cpu, "cpu", 1.0, with_accuracy))
        demo.run_ids.append(_record_run(store, cpu, "cpu", 1.10, with_accuracy))
        if gpu_run:
            gpu = store.ensure_machine(
                "gpu-fingerprint",
                {
                    "hostname": "gpu-node",
                    "cpu": "Intel Xeon 8480+",
                    "cpu_count": 112,
                    "ram_bytes": 2048 * 2**30,
                    "gpu": "NVIDIA H100 80GB HBM3",
                    "gpu_count": 1,
                    "driver": "550.54",
                },
            )
            demo.run_ids.append(_record_run(store, gpu, "cuda:0", 1.0, with_accuracy, speed=0.15))
    return demo


def expected_delta(model: str, stack_index: int, metric: str, slowdown: float = 1.0) -> float:
    """Δ% of a stack against the baseline, from the generating formulas (not the store)."""
    values = {v.name: v.value for v in metric_values(model, stack_index, slowdown)}
    base = {v.name: v.value for v in metric_values(model, 0, slowdown)}
    if values[metric] is None or base[metric] is None:
        return math.nan
    return 100.0 * (values[metric] - base[metric]) / base[metric]  # type: ignore[operator]
