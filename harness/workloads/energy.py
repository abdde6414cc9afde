"""Energy accounting of timed windows: gross and net energy per run and per token, power.

A workload measures energy with one energy probe (``is_energy_probe``) around each timed
window, after synchronizing the device. Energy counters advance in steps (NVML's about
every 100 ms), so a short window is extended by running the work ``runs`` times inside it
until it lasts ``policy.min_energy_window_s``; every number below is per run. Once per
probe (per worker and device) the idle power is measured over ``IDLE_WINDOW_S`` with the
same probe, so each result carries gross and net (above idle) energy.

Formulas, for window i of energy E_i (J), duration t_i (s) holding r_i runs of T tokens
(T = batch_size × new_tokens for ``generate``), and idle power P_idle (W):

- ``energy.total_j``          = E_i / r_i
- ``energy.j_per_token``      = E_i / (r_i · T)
- ``energy.net_j_per_token``  = (E_i − P_idle · t_i) / (r_i · T)
- ``power.avg_w``             = E_i / t_i
- ``power.idle_w``            = E_idle / t_idle, one window of the device doing nothing

each stored as the median over windows with its 95% CI (``harness.meter.summarize``) and
the probe's source (``nvml-counter``, ``nvml-power``, ``rapl``). Where no probe can
measure, every one of them is null with the reason, never zero and never an estimate.

Per phase (``generate``, :func:`phase_values`): after the timed windows, as many *prefill
windows* run the same prompts for one token only (``max_new_tokens=1``: the prompt's
forward pass and the first token, what TTFT times), each extended like the others. For
prefill window i of energy E'_i, t'_i and r'_i runs, P = batch × prompt_tokens prompt
tokens and D = batch × (new_tokens − 1) decoded tokens:

- ``energy.prefill_j``               = E'_i / r'_i
- ``energy.prefill_j_per_token``     = E'_i / (r'_i · P)
- ``energy.decode_j``                = E_i / r_i − E'_i / r'_i (window i of the full runs)
- ``energy.decode_j_per_token``      = (E_i / r_i − E'_i / r'_i) / D
- ``energy.net_prefill_j_per_token`` = (E'_i − P_idle · t'_i) / (r'_i · P)
- ``energy.net_decode_j_per_token``  = ((E_i − P_idle · t_i) / r_i − (E'_i − P_idle · t'_i)
  / r'_i) / D

(medians over i with their 95% CIs); the source says the prefill came from one-token runs.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.meter import clock as device_clock
from harness.meter import summarize
from harness.probes import ENERGY_TOTAL_J, Probe, is_energy_probe
from harness.results import MetricDef, Value

#: Length of the idle-power window, s: ten updates of NVML's ~100 ms energy counter.
IDLE_WINDOW_S = 1.0

ENERGY_METRICS = [
    MetricDef(
        "energy.j_per_token",
        "J/token",
        False,
        "energy per generated token: window energy / (runs × batch × new_tokens)",
    ),
    MetricDef(
        "energy.net_j_per_token",
        "J/token",
        False,
        "energy per generated token above idle: (E − idle W × window s) / (runs × tokens)",
    ),
    MetricDef("power.avg_w", "W", False, "mean power over the window: window energy / window s"),
    MetricDef(
        "power.idle_w",
        "W",
        False,
        "power of the idle device, measured once per worker over ~1 s with the energy probe",
    ),
]
_NAMES = (
    ENERGY_TOTAL_J.name,
    "energy.j_per_token",
    "energy.net_j_per_token",
    "power.avg_w",
    "power.idle_w",
)
_UNITS = {"energy.total_j": "J", "power.avg_w": "W", "power.idle_w": "W"}


@dataclass(frozen=True)
class EnergyWindow:
    """What one timed energy window measured.

    Attributes:
        energy_j: Energy over the whole window, J (all its runs).
        duration_s: Length of the window, s, between the synchronized clock reads.
        runs: How many times the work ran inside the window (>= 1).
    """

    energy_j: float
    duration_s: float
    runs: int


PHASE_METRICS = [
    MetricDef("energy.prefill_j", "J", False, "energy of one prefill: a one-token run's energy"),
    MetricDef(
        "energy.prefill_j_per_token",
        "J/token",
        False,
        "prefill energy per prompt token: one-token run energy / (batch × prompt_tokens)",
    ),
    MetricDef(
        "energy.net_prefill_j_per_token",
        "J/token",
        False,
        "prefill energy per prompt token above idle power",
    ),
    MetricDef(
        "energy.decode_j",
        "J",
        False,
        "energy of the decode phase of one run: full-run energy − one-token-run energy",
    ),
    MetricDef(
        "energy.decode_j_per_token",
        "J/token",
        False,
        "decode energy per decoded token: decode energy / (batch × (new_tokens − 1))",
    ),
    MetricDef(
        "energy.net_decode_j_per_token",
        "J/token",
        False,
        "decode energy per decoded token above idle power",
    ),
]
PHASE_NAMES = tuple(m.name for m in PHASE_METRICS)


def null_phase_values(reason: str) -> list[Value]:
    """Every per-phase energy metric as null, each carrying ``reason``."""
    return [Value(m.name, None, m.unit, reason=reason) for m in PHASE_METRICS]


def phase_values(
    full: Sequence[EnergyWindow],
    prefill: Sequence[EnergyWindow],
    idle: Value,
    prompt_tokens: int,
    decode_tokens: int,
    source: str | None,
) -> list[Value]:
    """Prefill and decode energy, gross and net, per run and per token (module formulas).

    Args:
        full: The timed windows of full runs, in order.
        prefill: The prefill windows (one-token runs), as many as ``full``, in order.
        idle: ``power.idle_w``; its null value makes the net values null with its reason.
        prompt_tokens: Prompt tokens of one run (batch × prompt_tokens).
        decode_tokens: Tokens one run decodes after the first (batch × (new_tokens − 1)).
        source: The energy probe's source.
    """
    pairs = list(zip(full, prefill, strict=False))
    per_run = {
        "energy.prefill_j": [p.energy_j / p.runs for _, p in pairs],
        "energy.prefill_j_per_token": [p.energy_j / (p.runs * prompt_tokens) for _, p in pairs],
        "energy.decode_j": [f.energy_j / f.runs - p.energy_j / p.runs for f, p in pairs],
        "energy.decode_j_per_token": [
            (f.energy_j / f.runs - p.energy_j / p.runs) / decode_tokens for f, p in pairs
        ],
    }
    if idle.value is not None:
        watts = idle.value

        def net(w: EnergyWindow) -> float:
            return (w.energy_j - watts * w.duration_s) / w.runs

        per_run["energy.net_prefill_j_per_token"] = [net(p) / prompt_tokens for _, p in pairs]
        per_run["energy.net_decode_j_per_token"] = [
            (net(f) - net(p)) / decode_tokens for f, p in pairs
        ]
    units = {m.name: m.unit for m in PHASE_METRICS}
    where = f"{source}; prefill from one-token runs" if source else "one-token runs"
    values = []
    for metric in PHASE_METRICS:
        samples = per_run.get(metric.name)
        if samples is None:
            values.append(Value(metric.name, None, metric.unit, reason=idle.reason))
            continue
        s = summarize(samples)
        values.append(
            Value(
                metric.name,
                s.median,
                units[metric.name],
                s.ci_low,
                s.ci_high,
                s.n,
                where[:64],
                samples=tuple(samples),
            )
        )
    return values


def null_energy_values(reason: str) -> list[Value]:
    """Every energy and power metric as null, each carrying ``reason``."""
    return [Value(name, None, _UNITS.get(name, "J/token"), reason=reason) for name in _NAMES]


def energy_unavailable_reason(probes: Sequence[Probe]) -> str:
    """Why no energy probe among ``probes`` can measure: ``name: reason`` of each."""
    reasons = [f"{pr.name}: {pr.unavailable()}" for pr in probes if is_energy_probe(pr)]
    return "; ".join(reasons) or "no energy probe is installed"


def energy_values(
    windows: Sequence[EnergyWindow], idle: Value, tokens_per_run: int, source: str | None
) -> list[Value]:
    """Gross and net energy per run and per token, and average power (module formulas).

    Args:
        windows: The timed windows, one per measured repeat (at least one).
        idle: ``power.idle_w`` as ``idle_power`` measured it; when its value is None the
            net energy is null with its reason.
        tokens_per_run: Tokens one run generates (batch × new_tokens).
        source: The energy probe's source, stored with every value.
    """
    per_run = {
        ENERGY_TOTAL_J.name: [w.energy_j / w.runs for w in windows],
        "energy.j_per_token": [w.energy_j / (w.runs * tokens_per_run) for w in windows],
        "power.avg_w": [w.energy_j / w.duration_s for w in windows],
    }
    if idle.value is not None:
        idle_w = idle.value
        per_run["energy.net_j_per_token"] = [
            (w.energy_j - idle_w * w.duration_s) / (w.runs * tokens_per_run) for w in windows
        ]
    values = []
    for name, samples in per_run.items():
        s = summarize(samples)
        unit = _UNITS.get(name, "J/token")
        values.append(
            Value(name, s.median, unit, s.ci_low, s.ci_high, s.n, source, samples=tuple(samples))
        )
    if idle.value is None:
        values.append(Value("energy.net_j_per_token", None, "J/token", reason=idle.reason))
    values.append(idle)
    return values


def measure_idle_power(
    probe: Probe,
    device: str,
    seconds: float = IDLE_WINDOW_S,
    *,
    clock: Callable[[str], float] = device_clock,
    sleep: Callable[[float], None] = time.sleep,
) -> Value:
    """``power.idle_w``: the probe's energy over ``seconds`` of sleep / their length, W.

    The device is synchronized (``clock``) before the window opens and before it closes,
    so queued work does not leak into it. The result is null with the probe's reason when
    its window gave no energy.
    """
    clock(device)
    probe.start()
    t0 = clock(device)
    try:
        sleep(seconds)
    finally:
        t1 = clock(device)
        measured = probe.stop()
    energy = next((v for v in measured if v.name == ENERGY_TOTAL_J.name), None)
    if energy is None or energy.value is None:
        reason = energy.reason if energy is not None else f"{probe.name} returned no energy"
        return Value("power.idle_w", None, "W", reason=f"idle power not measured: {reason}")
    return Value("power.idle_w", energy.value / (t1 - t0), "W", n=1, source=energy.source)


_IDLE: weakref.WeakKeyDictionary[Probe, Value] = weakref.WeakKeyDictionary()


def idle_power(probe: Probe, device: str) -> Value:
    """``measure_idle_power`` once per probe instance (a worker keeps its probes for its
    life, so once per worker and device); later calls return the first measurement."""
    if probe not in _IDLE:
        _IDLE[probe] = measure_idle_power(probe, device)
    return _IDLE[probe]
