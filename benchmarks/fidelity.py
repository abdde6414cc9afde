"""Fidelity checks of bench's own measurements (run by ``benchmarks/run.py``).

Each check measures one property of the harness against an independent reference and
returns a ``Check``: its measured value, its target and whether the target is met. These
are measurements, not tests: timings depend on the machine and its load.

- ``overhead``: TPOT measured by bench (the generate workload run by the Worker) against a
  hand-written greedy decode loop (model forward with a ``DynamicCache``, argmax) on the
  same model, prompt and number of new tokens, in the same process, alternated A B A B so
  drifts in machine load hit both alike. Ratio = bench TPOT / bare TPOT per pair.
- ``kv-bytes``: stored ``memory.kv_cache_bytes`` against b·n·l·2·h·c·bytes (REFERENCE
  eq. 2) for MHA, GQA and MQA variants of the tiny model.
- ``alloc-peak``: a workload with a known allocation pattern (3 MiB, 5 MiB, free 3 MiB,
  1 MiB) must report exactly its 8 MiB peak on CPU, through the Worker and the probes.
- ``repeatability``: the same cell measured several times; CV of its TPOT medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness import hookimpl
from harness.meter import summarize
from harness.results import Measurement
from harness.suite import ModelSpec, suite_from_data
from harness.technique import Prepared
from harness.testing import registry_with, run_technique
from harness.worker import Worker
from harness.workloads import Workload, WorkloadContext
from harness.workloads.generate import prompt_ids, window

MiB = 2**20
DEFAULT_MODEL = "smollm2-135m"
OVERHEAD_TARGET = 1.03
REPEATABILITY_TARGET_CV = 0.05


@dataclass(frozen=True)
class Check:
    """One fidelity check's outcome."""

    name: str
    measured: str
    target: str
    ok: bool
    detail: str


# ---------------------------------------------------------------- overhead


def _worker(model: str) -> Worker:
    """A CPU worker whose memory probes are off: they run in an untimed extra generation
    and do not change TPOT, but the profiler would make every pair several times longer."""
    worker = Worker("cpu", registry_with())
    worker.probes = [p for p in worker.probes if p.phase == "timing"]
    worker.load(ModelSpec(id=model))
    return worker


def bare_tpot(model: Any, ids: Any, new_tokens: int) -> float:
    """TPOT of a minimal greedy loop, s: (t_last − t_first) / (new_tokens − 1).

    Prefill computes the first token (logits of the last position only, as generate
    does); each of the new_tokens − 1 decode steps is one forward of the previous token
    through a ``DynamicCache`` and an argmax. No logits processors, stopping criteria,
    attention mask or streamer.
    """
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        t_first = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, cache=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        t_last = time.perf_counter()
    return (t_last - t_first) / (new_tokens - 1)


def overhead(
    model: str = DEFAULT_MODEL, pairs: int = 10, prompt_tokens: int = 128, new_tokens: int = 32
) -> Check:
    """bench TPOT / bare-loop TPOT: median of ``pairs`` alternated pairs, with its 95% CI."""
    worker = _worker(model)
    loaded = worker.load(ModelSpec(id=model))
    ids = prompt_ids(loaded.tokenizer, worker.text("shakespeare", "prompt"), 1, prompt_tokens)
    workload = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens}

    def bench_tpot() -> float:
        result = run_technique(model=model, workload=workload, worker=worker, repeats=1)
        if result.status != "ok":
            raise RuntimeError(f"bench cell failed: {result.reason}")
        value = result.value("latency.tpot_s")
        assert value is not None
        return value

    bench_tpot(), bare_tpot(loaded.model, ids, new_tokens)  # warm-up of both
    a: list[float] = []
    b: list[float] = []
    for _ in range(pairs):
        a.append(bench_tpot())
        b.append(bare_tpot(loaded.model, ids, new_tokens))
    ratios = summarize([x / y for x, y in zip(a, b, strict=True)])
    per_token_us = (statistics.median(a) - statistics.median(b)) * 1e6
    return Check(
        "overhead",
        f"{ratios.median:.3f} [{ratios.ci_low:.3f}, {ratios.ci_high:.3f}]",
        f"<= {OVERHEAD_TARGET}",
        ratios.median <= OVERHEAD_TARGET,
        f"{model}, prompt {prompt_tokens}, {new_tokens} new tokens, {pairs} ABAB pairs; "
        f"TPOT bench {statistics.median(a) * 1e3:.2f} ms, bare {statistics.median(b) * 1e3:.2f}"
        f" ms ({per_token_us:+.0f} µs/token); ratio CI = 95% CI of the median, CV "
        f"{ratios.cv:.3f}",
    )


# ---------------------------------------------------------------- kv-bytes


def kv_bytes(batch: int = 2, prompt_tokens: int = 16, new_tokens: int = 4) -> Check:
    """Stored KV bytes = b·n·l·2·h·c·4 (fp32) with n = prompt + new − 1, for h = 4, 2, 1."""
    from harness.assets import TINY_LLAMA_CONFIG, tiny_model_dir

    layers = TINY_LLAMA_CONFIG["num_hidden_layers"]
    channels = TINY_LLAMA_CONFIG["head_dim"]
    n = prompt_tokens + new_tokens - 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, heads in (("MHA", 4), ("GQA", 2), ("MQA", 1)):
            folder = tiny_model_dir(Path(tmp) / label, num_key_value_heads=heads)
            result = run_technique(
                model=str(folder),
                workload={
                    "prompt_tokens": prompt_tokens,
                    "new_tokens": new_tokens,
                    "batch_size": batch,
                },
            )
            stored = result.value("memory.kv_cache_bytes") if result.status == "ok" else None
            expected = batch * n * layers * 2 * heads * channels * 4
            rows.append((label, heads, stored, expected))
    exact = sum(stored == expected for _, _, stored, expected in rows)
    detail = "; ".join(
        f"{label} h={heads}: {stored if stored is None else int(stored)} vs {expected}"
        for label, heads, stored, expected in rows
    )
    return Check("kv-bytes", f"{exact}/{len(rows)} exact", "3/3 exact", exact == len(rows), detail)


# ---------------------------------------------------------------- alloc-peak

ALLOC_PATTERN_MIB = ((+3, "a"), (+5, "b"), (-3, "a"), (+1, "c"))
ALLOC_PEAK_BYTES = 8 * MiB  # 3 + 5, then 5 + 1 = 6 after freeing a


class AllocPattern(Workload):
    """Allocates a known pattern of CPU tensors inside the memory probes' window."""

    name: ClassVar[str] = "alloc-pattern"

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        import torch

        memory = [pr for pr in ctx.probes if pr.phase == "memory" and pr.unavailable() is None]
        held: dict[str, Any] = {}
        with window(memory) as values:
            for mib, key in ALLOC_PATTERN_MIB:
                if mib > 0:
                    held[key] = torch.empty(mib * MiB, dtype=torch.uint8)
                else:
                    del held[key]
            held.clear()
        return Measurement(tuple(values))


class _AllocPlugin:
    @hookimpl
    def register_workloads(self) -> list[type[Workload]]:
        return [AllocPattern]


def alloc_peak() -> Check:
    """The CPU allocator peak reported for ``AllocPattern`` equals 8 MiB exactly."""
    registry = registry_with([_AllocPlugin()])
    data = {
        "name": "alloc-peak",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"alloc-pattern": {}},
        "policy": {"warmup": 0, "repeats": 1},
    }
    (cell,) = suite_from_data(data, registry, devices=["cpu"]).cells
    result = Worker("cpu", registry).run(cell)
    values = {v.name: v for v in result.values}
    window_peak = values.get("memory.window_peak_bytes")
    peak = window_peak.value if window_peak is not None else None
    total = values.get("memory.peak_alloc_bytes")
    weights = values.get("memory.weights_bytes")
    consistent = (
        total is not None
        and weights is not None
        and total.value == (weights.value or 0) + ALLOC_PEAK_BYTES
    )
    return Check(
        "alloc-peak",
        f"{peak if peak is None else int(peak)} B",
        f"{ALLOC_PEAK_BYTES} B exactly",
        result.status == "ok" and peak == ALLOC_PEAK_BYTES and consistent,
        "pattern +3 MiB, +5 MiB, −3 MiB, +1 MiB via torch-profiler (cpu-allocator); "
        f"peak_alloc = weights + window: {'yes' if consistent else 'no'}",
    )


# ---------------------------------------------------------------- repeatability


def repeatability(
    model: str = DEFAULT_MODEL, cells: int = 5, prompt_tokens: int = 128, new_tokens: int = 32
) -> Check:
    """CV of the TPOT medians of the same cell measured ``cells`` times (warm-up 1, 5
    repeats each), and the median within-cell CV (``stats.tpot_cv``)."""
    worker = _worker(model)
    workload = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens}
    medians, within, noisy = [], [], 0
    for _ in range(cells):
        result = run_technique(model=model, workload=workload, worker=worker, warmup=1, repeats=5)
        if result.status != "ok":
            raise RuntimeError(f"cell failed: {result.reason}")
        medians.append(result.value("latency.tpot_s") or 0.0)
        within.append(result.value("stats.tpot_cv") or 0.0)
        noisy += result.value("stats.noisy") == 1.0
    s = summarize(medians)
    return Check(
        "repeatability",
        f"CV {s.cv:.3f}",
        f"<= {REPEATABILITY_TARGET_CV}",
        s.cv <= REPEATABILITY_TARGET_CV,
        f"{model}, {cells} cells × 5 repeats; TPOT medians "
        + ", ".join(f"{m * 1e3:.2f}" for m in medians)
        + f" ms; within-cell CV median {statistics.median(within):.3f}; {noisy} flagged noisy",
    )
