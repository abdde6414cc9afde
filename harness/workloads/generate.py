"""The ``generate`` workload: prefill a real-text prompt, decode exactly ``new_tokens``.

Protocol (DESIGN §7): prompts are cut from a text source to exact token counts; generation
is greedy and ignores end-of-sequence; ``warmup`` unmeasured runs, then ``repeats`` timed
runs (medians with 95% CIs; with ``policy.target_ci``, more runs until TPOT's interval is
that narrow or ``max_repeats`` is reached); then one untimed run under the memory probes,
after which the KV cache is counted from the cache object itself.

Cost and tails: every cell stores how many timed runs it took (``stats.repeats``) and
their wall time (``stats.converge_s``); with ``target_ci``, whether TPOT's interval got that
narrow (``stats.converged``; a cell that did not is flagged noisy). An inter-token latency
percentile is stored only when enough gaps back it (``min_samples_for_percentile``: p99
needs 100), else null with the reason.

Energy (``harness.workloads.energy``): where an energy probe is available each timed
window runs the generation again until it lasts ``policy.min_energy_window_s``, and the
window's energy is divided by its runs; latency comes from the window's first run only.
Then as many prefill windows run one-token generations of the same prompts, so energy is
split into prefill and decode (``phase_values``). Without an energy probe a window holds
exactly one run and no prefill window runs.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness.footprint import tensor_bytes
from harness.markers import hookimpl
from harness.meter import (
    MIN_N_FOR_95,
    clock,
    min_samples_for_percentile,
    quantile_ci_ranks,
    summarize,
    sync,
)
from harness.probes import ENERGY_TOTAL_J, Probe, is_energy_probe
from harness.results import Measurement, MetricDef, Value
from harness.technique import Config, Prepared
from harness.workloads import Workload, WorkloadContext
from harness.workloads.energy import (
    ENERGY_METRICS,
    PHASE_METRICS,
    EnergyWindow,
    energy_unavailable_reason,
    energy_values,
    idle_power,
    null_energy_values,
    null_phase_values,
    phase_values,
)

if TYPE_CHECKING:
    from harness.suitefile import Policy

#: A cell is flagged noisy (``stats.noisy`` = 1) when the 95% CI half-width of its TPOT
#: median exceeds this fraction of the median ...
NOISY_CI_FRACTION = 0.05
#: ... or when the coefficient of variation of its TPOT samples exceeds this.
NOISY_CV = 0.10
#: Percentiles of the inter-token gaps stored as ``latency.itl_p<q>_s``.
ITL_PERCENTILES = (50, 90, 95, 99)


class GenerateParams(Config):
    prompt_tokens: int = Field(128, ge=1, description="prompt length in tokens, exact")
    new_tokens: int = Field(32, ge=2, description="tokens generated, exact (EOS ignored)")
    batch_size: int = Field(1, ge=1, description="prompts generated together")
    text: str = Field("shakespeare", description="text source the prompts are cut from")
    grounded: bool = Field(
        False,
        description="input-grounded prompts: each ends by restarting its own text, so the "
        "continuation is in the prompt (as in summarising or editing); see prompt_ids",
    )


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


class SuppressEos:
    """A logits processor that sets the end-of-sequence logits to −inf at every step, so
    greedy decoding always runs to ``max_new_tokens``.

    It is what ``min_new_tokens=new_tokens`` does, with the same tokens as the result, at a
    fraction of the cost: transformers then applies two processors per step (its
    ``MinLength`` and ``MinNewTokensLength``), each cloning the scores and building a
    vocabulary-sized ``arange`` and ``isin`` mask: for SmolLM2's 49,152 entries 1.1 ms per
    token on one core of a 2-core VM, 3-9 ms with two threads on the busy VM, against
    0.03-0.07 ms for this one, an in-place write (``scores`` is generate's own float32 copy
    of the last position's logits). A smollm2-135m token takes ~55 ms on that VM, so that
    was 2-15% of TPOT (the ``overhead`` check of benchmarks/run.py compares TPOT with a
    bare decode loop).

    Args:
        eos_token_ids: The ids generation would stop at (the model's generation config).
    """

    def __init__(self, eos_token_ids: Sequence[int]) -> None:
        ids = list(eos_token_ids)
        self._index: int | list[int] = ids[0] if len(ids) == 1 else ids

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        scores[:, self._index] = -math.inf
        return scores


def eos_token_ids(model: Any) -> list[int]:
    """The end-of-sequence ids of ``model.generation_config`` (none if it has none)."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(i) for i in eos]


class EosWatch:
    """A logits processor that notes, per row and step, whether greedy decoding would have
    picked end-of-sequence there, before ``SuppressEos`` forbids it.

    The step is read from the sequence length, not counted, so a step that assisted
    generation scores more than once keeps its last scoring: the one whose prefix was
    accepted. ``natural_lengths`` turns the notes into each row's natural output length.
    Used only in the untimed memory run (an argmax per step).

    Args:
        eos_token_ids: The ids generation would stop at.
        prompt_tokens: Length of the prompt (step 0 is the first generated token).
    """

    def __init__(self, eos_token_ids: Sequence[int], prompt_tokens: int) -> None:
        self._ids = list(eos_token_ids)
        self._prompt = prompt_tokens
        self.picked: dict[int, list[bool]] = {}  # step -> per row: argmax is an EOS id

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        picks = scores.argmax(-1).tolist()
        self.picked[input_ids.shape[1] - self._prompt] = [p in self._ids for p in picks]
        return scores

    def natural_lengths(self, rows: int, new_tokens: int) -> list[int]:
        """Per row: tokens generated before the first end-of-sequence pick (``new_tokens``
        when there is none)."""
        out = []
        for r in range(rows):
            hits = [s for s, picked in self.picked.items() if picked[r] and s < new_tokens]
            out.append(min(hits) if hits else new_tokens)
        return out


def suppress_eos(
    model: Any, generate_kwargs: dict[str, Any], watch: EosWatch | None = None
) -> dict[str, Any]:
    """``logits_processor`` keywords that make greedy decoding run to ``max_new_tokens``:
    the stack's own processors, ``watch`` if given, then ``SuppressEos`` (empty without
    EOS ids)."""
    eos = eos_token_ids(model)
    if not eos:
        return {}
    from transformers import LogitsProcessorList

    extra = generate_kwargs.get("logits_processor") or []
    watching = [watch] if watch is not None else []
    return {"logits_processor": LogitsProcessorList([*extra, *watching, SuppressEos(eos)])}


@functools.lru_cache(maxsize=8)
def _token_pool(tokenizer: Any, text: str, needed: int) -> tuple[int, ...]:
    chars = min(len(text), needed * 8)
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) >= needed or chars >= len(text):
            return tuple(ids)
        chars = min(len(text), chars * 2)


def prompt_ids(
    tokenizer: Any, text: str, batch_size: int, prompt_tokens: int, *, grounded: bool = False
) -> Any:
    """``batch_size`` consecutive, distinct windows of exactly ``prompt_tokens`` tokens.

    Grounded: a window is a passage of ``a`` = ⌈3/4 · prompt_tokens⌉ tokens followed by its
    first ``prompt_tokens − a`` tokens again, so the next ``2a − prompt_tokens`` tokens of
    the passage continue it: text the model can copy from its prompt.
    """
    import torch

    passage = -(-3 * prompt_tokens // 4) if grounded else prompt_tokens
    needed = batch_size * passage
    pool = _token_pool(tokenizer, text, needed)
    if len(pool) < needed:
        raise ValueError(
            f"the text holds {len(pool)} tokens, fewer than the {needed} the prompts need"
        )
    rows = [pool[i * passage : (i + 1) * passage] for i in range(batch_size)]
    rows = [row + row[: prompt_tokens - passage] for row in rows]
    return torch.tensor(rows, dtype=torch.long)


class Generate(Workload[GenerateParams]):
    """Prefill plus decode, timed per token."""

    name = "generate"
    Params = GenerateParams
    text_splits = ("prompt",)

    def tokens_needed(self) -> dict[tuple[str, str], int]:
        """``batch_size`` passages (see :func:`prompt_ids`) of the prompt split."""
        p = self.params
        passage = -(-3 * p.prompt_tokens // 4) if p.grounded else p.prompt_tokens
        return {(p.text, "prompt"): p.batch_size * passage}

    def fingerprint(self, ctx: WorkloadContext) -> dict[str, Any]:
        """The prompts as token ids: sha256 of the ``prompt_ids`` tensor's values (int64,
        little-endian, row by row) and its shape [batch_size, prompt_tokens]."""
        p = self.params
        text = ctx.text(p.text, "prompt")
        ids = prompt_ids(ctx.tokenizer, text, p.batch_size, p.prompt_tokens, grounded=p.grounded)
        data = ids.to("cpu").contiguous().numpy().astype("<i8").tobytes()
        return {
            "prompt_ids_sha256": hashlib.sha256(data).hexdigest(),
            "prompt_shape": list(ids.shape),
        }

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        import torch

        p = self.params
        text = ctx.text(p.text, "prompt")
        ids = prompt_ids(ctx.tokenizer, text, p.batch_size, p.prompt_tokens, grounded=p.grounded)
        ids = ids.to(ctx.device)
        model = prepared.model
        kwargs = suppress_eos(model, prepared.generate_kwargs)
        watch = EosWatch(eos_token_ids(model), p.prompt_tokens)

        def once(streamer: _TokenClock | None = None, *, watched: bool = False) -> Any:
            args = prepared.generate_args(ids, p.new_tokens, ctx.tokenizer)
            extra = suppress_eos(model, prepared.generate_kwargs, watch) if watched else kwargs
            with torch.inference_mode():
                return model.generate(
                    **{**args, **extra}, return_dict_in_generate=True, streamer=streamer
                )

        timing = [pr for pr in ctx.probes if pr.phase == "timing" and pr.unavailable() is None]
        energy = next((pr for pr in timing if is_energy_probe(pr)), None)
        timing = [pr for pr in timing if pr is energy or not is_energy_probe(pr)]
        memory = [pr for pr in ctx.probes if pr.phase == "memory" and pr.unavailable() is None]

        for _ in range(ctx.policy.warmup):
            once()

        idle = idle_power(energy, ctx.device) if energy is not None else None
        min_window_s = ctx.policy.min_energy_window_s if energy is not None else 0.0
        ttft: list[float] = []
        e2e: list[float] = []
        itl: list[float] = []
        windows: list[tuple[list[Value], float, int]] = []  # (probe values, s, runs)
        timed_from = time.perf_counter()
        while not _enough(ttft, e2e, p, ctx.policy):
            stream = _TokenClock(ctx.device)
            sync(ctx.device)
            with window(timing) as measured:
                t0 = clock(ctx.device)
                out = once(stream)
                t1 = t_end = clock(ctx.device)
                runs = 1
                while t_end - t0 < min_window_s:
                    once()
                    runs += 1
                    t_end = clock(ctx.device)
            windows.append((measured, t_end - t0, runs))
            ttft.append(stream.stamps[0] - t0)
            e2e.append(t1 - t0)
            itl.extend(b - a for a, b in zip(stream.stamps, stream.stamps[1:], strict=False))
        timed_s = time.perf_counter() - timed_from
        tokens = out.sequences[:, ids.shape[1] :].tolist()
        del out

        prefill_windows: list[tuple[list[Value], float, int]] = []
        if energy is not None and idle is not None:

            def prefill_once() -> None:
                args = prepared.generate_args(ids, 1, ctx.tokenizer, speculate=False)
                with torch.inference_mode():
                    model.generate(**{**args, **kwargs})

            for _ in windows:
                sync(ctx.device)
                with window([energy]) as measured:
                    t0 = t_end = clock(ctx.device)
                    runs = 0
                    while runs == 0 or t_end - t0 < min_window_s:
                        prefill_once()
                        runs += 1
                        t_end = clock(ctx.device)
                prefill_windows.append((measured, t_end - t0, runs))

        with window(memory) as memory_values:
            out = once(watched=True)

        converged = _converged(ttft, e2e, p, ctx.policy)
        values = _latency_values(ttft, e2e, itl, p)
        values += _stats_values(ttft, e2e, p, converged=converged)
        values += _cost_values(len(ttft), timed_s, converged)
        if energy is None or idle is None:
            values += null_energy_values(energy_unavailable_reason(ctx.probes))
            values += null_phase_values(energy_unavailable_reason(ctx.probes))
        else:
            values += _window_energy(windows, idle, p.batch_size * p.new_tokens)
            values += _phase_energy(windows, prefill_windows, idle, p)
        values += _timing_values(windows)
        values += memory_values
        values.append(
            Value(
                "memory.kv_cache_bytes",
                float(tensor_bytes(out.cache)),
                "bytes",
                source="cache-object",
            )
        )
        values += output_values(tokens, watch.natural_lengths(len(tokens), p.new_tokens))
        return Measurement(tuple(values), outputs={"tokens": tokens})


def output_values(tokens: Sequence[Sequence[int]], lengths: Sequence[int]) -> list[Value]:
    """What the generation produced, kept as samples for ``harness.evidence``.

    ``generate.tokens``: the generated ids, row after row (value: their count);
    ``generate.natural_length_tokens``: per row, the tokens generated before the model first
    picked end-of-sequence (value: their mean over rows).
    """
    flat = tuple(float(t) for row in tokens for t in row)
    return [
        Value("generate.tokens", float(len(flat)), "tokens", source="greedy", samples=flat),
        Value(
            "generate.natural_length_tokens",
            sum(lengths) / len(lengths),
            "tokens",
            n=len(lengths),
            source="greedy, end-of-sequence picks",
            samples=tuple(float(n) for n in lengths),
        ),
    ]


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
    """TTFT, TPOT, e2e and throughputs as medians with 95% CIs, then ITL percentiles.

    TPOT = (e2e − TTFT) / (new_tokens − 1)  (vLLM's definition);
    prefill tok/s = batch × prompt_tokens / TTFT; decode tok/s = batch × (new_tokens − 1) /
    (e2e − TTFT).  Throughputs are computed per repeat, then summarised.
    """

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
        values.append(
            Value(name, s.median, unit, s.ci_low, s.ci_high, s.n, "clock", samples=tuple(samples))
        )
    return values + _itl_values(itl)


def _itl_values(itl: Sequence[float]) -> list[Value]:
    """Percentiles of the inter-token gaps pooled over the repeats, with 95% CIs.

    ``latency.itl_p<q>_s`` for q in ``ITL_PERCENTILES``: ``numpy.percentile`` (linear
    interpolation) of every gap between consecutive decoding steps, s. Stored only when at
    least ``min_samples_for_percentile(q)`` gaps back it (p95: 20, p99: 100), else null with
    the reason. The interval is the order-statistic interval of ``quantile_ci_ranks``,
    which treats the gaps as independent (an approximation: the gaps of one generation are
    correlated); none where the sample cannot bound the percentile (a p99 below 368 gaps).
    """
    import numpy as np

    xs = sorted(itl)
    n = len(xs)
    values = []
    for q in ITL_PERCENTILES:
        name, need = f"latency.itl_p{q}_s", min_samples_for_percentile(q)
        if n < need:
            why = (
                f"p{q} needs at least {need} inter-token gaps, {n} were measured: raise "
                "new_tokens or policy.repeats"
            )
            values.append(Value(name, None, "s", n=n, reason=why))
            continue
        ranks = quantile_ci_ranks(n, q / 100)
        low, high = (xs[ranks[0] - 1], xs[ranks[1] - 1]) if ranks else (None, None)
        values.append(Value(name, float(np.percentile(xs, q)), "s", low, high, n, "clock"))
    return values


def _tpot(ttft: Sequence[float], e2e: Sequence[float], p: GenerateParams) -> list[float]:
    """TPOT of each run: (e2e − TTFT) / (new_tokens − 1), s."""
    return [(e - t) / (p.new_tokens - 1) for t, e in zip(ttft, e2e, strict=True)]


def _enough(ttft: Sequence[float], e2e: Sequence[float], p: GenerateParams, policy: Policy) -> bool:
    """Whether the timed runs so far suffice.

    Without ``target_ci``: after ``repeats`` runs. With it: after at least ``repeats``
    and ``MIN_N_FOR_95`` runs (fewer cannot give a 95% interval), once the CI half-width
    of the TPOT median is at most ``target_ci`` × median, or after
    max(``repeats``, ``max_repeats``) runs.
    """
    n = len(ttft)
    if n < policy.repeats:
        return False
    if policy.target_ci is None or n >= max(policy.repeats, policy.max_repeats):
        return True
    if n < MIN_N_FOR_95:
        return False
    s = summarize(_tpot(ttft, e2e, p))
    return (s.ci_high - s.ci_low) / 2 <= policy.target_ci * s.median


def _converged(
    ttft: Sequence[float], e2e: Sequence[float], p: GenerateParams, policy: Policy
) -> bool | None:
    """Whether TPOT's 95% CI half-width reached ``target_ci`` × median (None without a
    target): False for a cell that stopped at ``max_repeats`` or had too few runs for a 95%
    interval."""
    if policy.target_ci is None:
        return None
    if len(ttft) < MIN_N_FOR_95:
        return False
    s = summarize(_tpot(ttft, e2e, p))
    return (s.ci_high - s.ci_low) / 2 <= policy.target_ci * s.median


def _stats_values(
    ttft: Sequence[float],
    e2e: Sequence[float],
    p: GenerateParams,
    *,
    converged: bool | None = None,
) -> list[Value]:
    """Spread of the timed runs: CVs of TPOT and TTFT, and the noisy flag.

    ``stats.tpot_cv`` / ``stats.ttft_cv`` = sample standard deviation / mean of the
    per-run values (``Stats.cv``; 0 for a single run). ``stats.noisy`` = 1.0 when the 95%
    CI half-width of the TPOT median, (ci_high − ci_low) / 2, exceeds ``NOISY_CI_FRACTION``
    × median, ``stats.tpot_cv`` exceeds ``NOISY_CV``, or the cell never reached its
    ``target_ci`` (``converged`` is False); else 0.0.
    """
    tpot = summarize(_tpot(ttft, e2e, p))
    first = summarize(ttft)
    half_width = (tpot.ci_high - tpot.ci_low) / 2
    noisy = half_width > NOISY_CI_FRACTION * tpot.median or tpot.cv > NOISY_CV or converged is False
    return [
        Value("stats.tpot_cv", tpot.cv, "ratio", n=tpot.n, source="clock"),
        Value("stats.ttft_cv", first.cv, "ratio", n=first.n, source="clock"),
        Value("stats.noisy", 1.0 if noisy else 0.0, "flag", n=tpot.n, source="clock"),
    ]


def _cost_values(runs: int, seconds: float, converged: bool | None) -> list[Value]:
    """What the number cost: ``stats.repeats`` = timed runs measured (with ``target_ci``:
    the runs it took to converge, or ``max_repeats``); ``stats.converge_s`` = wall time of
    those runs, s, energy-window extensions included, warm-up and memory run not;
    ``stats.converged`` = 1.0 when TPOT reached ``target_ci``, 0.0 when it never did, null
    without a target."""
    if converged is None:
        flag = Value("stats.converged", None, "flag", reason="no policy.target_ci: fixed repeats")
    else:
        flag = Value("stats.converged", 1.0 if converged else 0.0, "flag", n=runs, source="clock")
    return [
        Value("stats.repeats", float(runs), "runs", source="clock"),
        Value("stats.converge_s", seconds, "s", source="clock"),
        flag,
    ]


def _window_energy(
    windows: Sequence[tuple[Sequence[Value], float, int]], idle: Value, tokens: int
) -> list[Value]:
    """Energy values of the timed windows (``energy_values``); a window whose probe gave
    no energy (a counter that went backwards) is left out, all of them → null with the
    probe's reason."""
    measured: list[EnergyWindow] = []
    source = reason = None
    for probe_values, seconds, runs in windows:
        value = next((v for v in probe_values if v.name == ENERGY_TOTAL_J.name), None)
        if value is not None and value.value is not None:
            measured.append(EnergyWindow(value.value, seconds, runs))
            source = value.source
        elif value is not None:
            reason = value.reason
    if not measured:
        return null_energy_values(reason or "the energy probe returned no energy")
    return energy_values(measured, idle, tokens, source)


def _energy_windows(
    windows: Sequence[tuple[Sequence[Value], float, int]],
) -> tuple[list[EnergyWindow | None], str | None, str | None]:
    """Each window's energy (None where the probe gave none), the source and the reason."""
    out: list[EnergyWindow | None] = []
    source = reason = None
    for probe_values, seconds, runs in windows:
        value = next((v for v in probe_values if v.name == ENERGY_TOTAL_J.name), None)
        if value is not None and value.value is not None:
            out.append(EnergyWindow(value.value, seconds, runs))
            source = value.source
        else:
            out.append(None)
            reason = value.reason if value is not None else reason
    return out, source, reason


def _phase_energy(
    windows: Sequence[tuple[Sequence[Value], float, int]],
    prefill: Sequence[tuple[Sequence[Value], float, int]],
    idle: Value,
    p: GenerateParams,
) -> list[Value]:
    """Prefill and decode energy (``phase_values``) over the window pairs where both the
    full window and its prefill window gave energy; null with the reason if none did."""
    full, source, reason = _energy_windows(windows)
    first, _, prefill_reason = _energy_windows(prefill)
    pairs = [(f, q) for f, q in zip(full, first, strict=True) if f is not None and q is not None]
    if not pairs:
        why = prefill_reason or reason or "the energy probe returned no energy"
        return null_phase_values(why)
    return phase_values(
        [f for f, _ in pairs],
        [q for _, q in pairs],
        idle,
        p.batch_size * p.prompt_tokens,
        p.batch_size * (p.new_tokens - 1),
        source,
    )


def _timing_values(windows: Sequence[tuple[Sequence[Value], float, int]]) -> list[Value]:
    """Metrics of timing probes other than energy (third-party), summarised per name over
    the windows: median and 95% CI of the non-null values, null with the reason if none."""
    by_name: dict[str, list[Value]] = {}
    for probe_values, _, _ in windows:
        for v in probe_values:
            if v.name != ENERGY_TOTAL_J.name:
                by_name.setdefault(v.name, []).append(v)
    values = []
    for name, vs in by_name.items():
        numbers = [v.value for v in vs if v.value is not None]
        if not numbers:
            values.append(Value(name, None, vs[0].unit, reason=vs[0].reason))
            continue
        s = summarize(numbers)
        values.append(Value(name, s.median, vs[0].unit, s.ci_low, s.ci_high, s.n, vs[0].source))
    return values


METRICS = [
    MetricDef("latency.ttft_s", "s", False, "time to first token: prefill plus first token"),
    MetricDef("latency.tpot_s", "s", False, "time per output token: (e2e − ttft)/(new − 1)"),
    MetricDef("latency.e2e_s", "s", False, "end-to-end generation time"),
    MetricDef("latency.itl_p50_s", "s", False, "median gap between consecutive tokens"),
    MetricDef("latency.itl_p90_s", "s", False, "90th percentile inter-token latency"),
    MetricDef("latency.itl_p95_s", "s", False, "95th percentile inter-token latency (≥ 20 gaps)"),
    MetricDef("latency.itl_p99_s", "s", False, "99th percentile inter-token latency (≥ 100 gaps)"),
    MetricDef("throughput.prefill_tok_s", "tok/s", True, "batch × prompt_tokens / ttft"),
    MetricDef("throughput.decode_tok_s", "tok/s", True, "batch × (new − 1) / (e2e − ttft)"),
    MetricDef("memory.kv_cache_bytes", "bytes", False, "bytes held by the KV cache object"),
    MetricDef(
        "generate.tokens",
        "tokens",
        False,
        "tokens generated in one run (samples: their ids, row by row, for greedy agreement "
        "with the reference stack)",
    ),
    MetricDef(
        "generate.natural_length_tokens",
        "tokens",
        False,
        "mean tokens per row before the model's first end-of-sequence pick (new_tokens when "
        "none; generation itself ignores end-of-sequence); samples: each row's",
    ),
    MetricDef("stats.tpot_cv", "ratio", False, "coefficient of variation of per-run TPOT"),
    MetricDef("stats.ttft_cv", "ratio", False, "coefficient of variation of per-run TTFT"),
    MetricDef(
        "stats.noisy",
        "flag",
        False,
        "1 when TPOT's 95% CI half-width exceeds 5% of its median, its CV exceeds 0.1 or it "
        "never reached policy.target_ci",
    ),
    MetricDef("stats.repeats", "runs", False, "timed runs measured (to converge, with target_ci)"),
    MetricDef("stats.converge_s", "s", False, "wall time of the timed runs"),
    MetricDef("stats.converged", "flag", True, "1 when TPOT reached policy.target_ci, else 0"),
    *ENERGY_METRICS,
    *PHASE_METRICS,
]


@hookimpl
def register_workloads() -> list[type[Workload]]:
    return [Generate]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
