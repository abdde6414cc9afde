"""The ``generate`` workload: prefill a real-text prompt, decode exactly ``new_tokens``.

Protocol (DESIGN §7): prompts are cut from a text source to exact token counts; generation
is greedy and ignores end-of-sequence; ``warmup`` unmeasured runs, then ``repeats`` timed
runs (medians with 95% CIs); then one untimed run under the memory probes, after which the
KV cache is counted from the cache object itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import Field

from harness.footprint import tensor_bytes
from harness.hookspecs import hookimpl
from harness.meter import clock, summarize
from harness.probes import Probe
from harness.results import Measurement, MetricDef, Value
from harness.technique import Config, Prepared
from harness.workloads import Workload, WorkloadContext


class GenerateParams(Config):
    prompt_tokens: int = Field(128, ge=1, description="prompt length in tokens, exact")
    new_tokens: int = Field(32, ge=2, description="tokens generated, exact (EOS ignored)")
    batch_size: int = Field(1, ge=1, description="prompts generated together")
    text: str = Field("shakespeare", description="text source the prompts are cut from")


class _TokenClock:
    """A generate() streamer that stamps the time each new token appears.

    The first ``put`` carries the prompt; every later one carries one decoding step.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.stamps: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.stamps.append(clock(self.device))

    def end(self) -> None:
        pass


@functools.lru_cache(maxsize=8)
def _token_pool(tokenizer: Any, text: str, needed: int) -> tuple[int, ...]:
    chars = min(len(text), needed * 8)
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) >= needed or chars >= len(text):
            return tuple(ids)
        chars = min(len(text), chars * 2)


def prompt_ids(tokenizer: Any, text: str, batch_size: int, prompt_tokens: int) -> Any:
    """``batch_size`` consecutive, distinct windows of exactly ``prompt_tokens`` tokens."""
    import torch

    needed = batch_size * prompt_tokens
    pool = _token_pool(tokenizer, text, needed)
    if len(pool) < needed:
        raise ValueError(
            f"the text holds {len(pool)} tokens, fewer than batch_size × prompt_tokens = {needed}"
        )
    return torch.tensor(pool[:needed], dtype=torch.long).view(batch_size, prompt_tokens)


class Generate(Workload):
    """Prefill plus decode, timed per token."""

    name = "generate"
    Params = GenerateParams

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        import torch

        p: GenerateParams = self.params  # type: ignore[assignment]
        ids = prompt_ids(ctx.tokenizer, ctx.text(p.text, "prompt"), p.batch_size, p.prompt_tokens)
        ids = ids.to(ctx.device)
        pad = ctx.tokenizer.pad_token_id
        kwargs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "max_new_tokens": p.new_tokens,
            "min_new_tokens": p.new_tokens,
            "do_sample": False,
            "pad_token_id": pad if pad is not None else ctx.tokenizer.eos_token_id,
            "return_dict_in_generate": True,
            **prepared.generate_kwargs,
        }
        model = prepared.model

        def once(streamer: _TokenClock | None = None) -> Any:
            cache = {"past_key_values": prepared.make_cache()} if prepared.make_cache else {}
            with torch.inference_mode():
                return model.generate(**kwargs, **cache, streamer=streamer)

        timing = [pr for pr in ctx.probes if pr.phase == "timing" and pr.unavailable() is None]
        memory = [pr for pr in ctx.probes if pr.phase == "memory" and pr.unavailable() is None]

        for _ in range(ctx.policy.warmup):
            once()

        ttft: list[float] = []
        e2e: list[float] = []
        itl: list[float] = []
        timing_values: list[list[Value]] = []
        for _ in range(ctx.policy.repeats):
            stream = _TokenClock(ctx.device)
            with window(timing) as measured:
                t0 = clock(ctx.device)
                out = once(stream)
                t1 = clock(ctx.device)
            timing_values.append(measured)
            ttft.append(stream.stamps[0] - t0)
            e2e.append(t1 - t0)
            itl.extend(b - a for a, b in zip(stream.stamps, stream.stamps[1:], strict=False))
        tokens = out.sequences[:, ids.shape[1] :].tolist()
        del out

        with window(memory) as memory_values:
            out = once()

        values = _latency_values(ttft, e2e, itl, p)
        values += _energy_values(timing_values, ctx.probes, p)
        values += memory_values
        values.append(
            Value(
                "memory.kv_cache_bytes",
                float(tensor_bytes(out.past_key_values)),
                "bytes",
                source="cache-object",
            )
        )
        return Measurement(tuple(values), outputs={"tokens": tokens})


@contextmanager
def window(probes: Sequence[Probe]) -> Iterator[list[Value]]:
    """Start ``probes``, run the body, stop them (always, in reverse order), collect values."""
    values: list[Value] = []
    started: list[Probe] = []
    try:
        for probe in probes:
            probe.start()
            started.append(probe)
        yield values
    finally:
        for probe in reversed(started):
            values.extend(probe.stop())


def _latency_values(
    ttft: Sequence[float], e2e: Sequence[float], itl: Sequence[float], p: GenerateParams
) -> list[Value]:
    """TTFT, TPOT, e2e, ITL percentiles and throughputs, as medians with 95% CIs.

    TPOT = (e2e − TTFT) / (new_tokens − 1)  (vLLM's definition);
    prefill tok/s = batch × prompt_tokens / TTFT; decode tok/s = batch × (new_tokens − 1) /
    (e2e − TTFT).  Throughputs are computed per repeat, then summarised.
    """
    import numpy as np

    decode = [e - t for e, t in zip(e2e, ttft, strict=True)]
    per_run = {
        "latency.ttft_s": list(ttft),
        "latency.e2e_s": list(e2e),
        "latency.tpot_s": [d / (p.new_tokens - 1) for d in decode],
        "throughput.prefill_tok_s": [p.batch_size * p.prompt_tokens / t for t in ttft],
        "throughput.decode_tok_s": [p.batch_size * (p.new_tokens - 1) / d for d in decode],
    }
    units = {"latency": "s", "throughput": "tok/s"}
    values = []
    for name, samples in per_run.items():
        s = summarize(samples)
        unit = units[name.split(".")[0]]
        values.append(Value(name, s.median, unit, s.ci_low, s.ci_high, s.n, source="clock"))
    for q in (50, 90, 99):
        values.append(Value(f"latency.itl_p{q}_s", float(np.percentile(itl, q)), "s", n=len(itl)))
    return values


def _energy_values(
    windows: Sequence[Sequence[Value]], probes: Sequence[Probe], p: GenerateParams
) -> list[Value]:
    """Energy per run and per generated token (J/token = window energy / (batch × new_tokens))."""
    tokens = p.batch_size * p.new_tokens
    per_run = [v for w in windows for v in w if v.name == "energy.total_j" and v.value is not None]
    if not per_run:
        reasons = [pr.unavailable() for pr in probes if pr.phase == "timing"]
        reason = "; ".join(r for r in reasons if r) or "no energy probe is installed"
        return [
            Value("energy.total_j", None, "J", reason=reason),
            Value("energy.j_per_token", None, "J/token", reason=reason),
        ]
    source = per_run[0].source
    total = summarize([v.value for v in per_run if v.value is not None])
    per_token = summarize([v.value / tokens for v in per_run if v.value is not None])
    return [
        Value("energy.total_j", total.median, "J", total.ci_low, total.ci_high, total.n, source),
        Value(
            "energy.j_per_token",
            per_token.median,
            "J/token",
            per_token.ci_low,
            per_token.ci_high,
            per_token.n,
            source,
        ),
    ]


METRICS = [
    MetricDef("latency.ttft_s", "s", False, "time to first token: prefill plus first token"),
    MetricDef("latency.tpot_s", "s", False, "time per output token: (e2e − ttft)/(new − 1)"),
    MetricDef("latency.e2e_s", "s", False, "end-to-end generation time"),
    MetricDef("latency.itl_p50_s", "s", False, "median gap between consecutive tokens"),
    MetricDef("latency.itl_p90_s", "s", False, "90th percentile inter-token latency"),
    MetricDef("latency.itl_p99_s", "s", False, "99th percentile inter-token latency"),
    MetricDef("throughput.prefill_tok_s", "tok/s", True, "batch × prompt_tokens / ttft"),
    MetricDef("throughput.decode_tok_s", "tok/s", True, "batch × (new − 1) / (e2e − ttft)"),
    MetricDef("memory.kv_cache_bytes", "bytes", False, "bytes held by the KV cache object"),
    MetricDef("energy.j_per_token", "J/token", False, "window energy / generated tokens"),
]


@hookimpl
def register_workloads() -> list[type[Workload]]:
    return [Generate]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
