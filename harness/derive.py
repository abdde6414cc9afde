"""Numbers derived from measured ones, each with its formula: the one place they are made.

Two steps use this module:

* in the cell pipeline (``harness.cell``), :func:`cell_values` adds what follows from one
  cell's own values and prepared model;
* in the runner, :func:`relative_values` adds what compares a cell with the reference
  stack's cell of the same run, model, device and workload (``reference:`` in the suite,
  ``baseline`` by default), from the two results in memory — never from another run:
  ratios (:data:`RATIOS`), per-sample evidence (flips, greedy token agreement, length
  drift: ``harness.evidence``) and the verdict of the suite's quality gates
  (``harness.gates``), in that order, so a gate can bound a flip rate.

Numbers a workload summarises per repeat, because their confidence intervals need the
samples (TPOT, throughputs, energy per token), are computed where the repeats are: their
formulas are in ``harness.workloads.generate`` and ``harness.workloads.energy``.
This module imports neither torch nor numpy at import time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness import evidence, gates
from harness.results import CellResult, MetricDef, Value

#: (metric, its ratio metric, higher_is_better of the ratio, description of the ratio)
RATIOS: tuple[tuple[str, str, bool, str], ...] = (
    (
        "latency.tpot_s",
        "latency.speedup",
        True,
        "reference TPOT / this cell's TPOT (the reference stack of the same run, model, "
        "device and workload)",
    ),
)

NO_REFERENCE = "no ok cell of the reference stack for this model, device and workload in this run"

#: (metric, predicted time, measured time, description): the roofline fractions.
FRACTIONS: tuple[tuple[str, str, str, str], ...] = (
    (
        "roofline.prefill_fraction",
        "estimate.prefill_s",
        "latency.ttft_s",
        "predicted prefill time at the roofline / measured TTFT: the share of what the "
        "hardware allows that the prefill achieved (1 = at the roof)",
    ),
    (
        "roofline.decode_fraction",
        "estimate.decode_s",
        "latency.tpot_s",
        "predicted decode-step time at the roofline / measured TPOT (1 = at the roof)",
    ),
)
#: (metric, predicted operations, measured time, description): achieved operations/s.
ACHIEVED: tuple[tuple[str, str, str, str], ...] = (
    (
        "roofline.prefill_flops",
        "estimate.prefill_ops",
        "latency.ttft_s",
        "operations of the prefill (estimate) / measured TTFT: achieved FLOP/s",
    ),
    (
        "roofline.decode_flops",
        "estimate.decode_ops",
        "latency.tpot_s",
        "operations of one decode step (estimate) / measured TPOT: achieved FLOP/s",
    ),
)

METRICS = [
    *(MetricDef(ratio, "ratio", better, text) for _, ratio, better, text in RATIOS),
    *(MetricDef(name, "ratio", True, text) for name, _, _, text in FRACTIONS),
    *(MetricDef(name, "FLOP/s", True, text) for name, _, _, text in ACHIEVED),
    *evidence.METRICS,
    *gates.METRICS,
]


def cell_values(values: Mapping[str, Value], model: Any) -> dict[str, Value]:
    """In-cell numbers: the weights' bytes and, on CPU, the peak of the whole generation.

    - ``memory.weights_bytes`` = bytes of every tensor the model holds
      (``harness.footprint.module_bytes``: packed codes, scales and zero points included).
    - ``memory.peak_alloc_bytes`` (CPU, where no allocator probe gave it) =
      ``memory.weights_bytes`` + ``memory.window_peak_bytes``: the profiler sees only the
      allocations inside the measured window, and the weights, allocated before it, stay
      resident throughout.
    """
    from harness.footprint import module_bytes

    weights = float(module_bytes(model))
    out = {
        "memory.weights_bytes": Value("memory.weights_bytes", weights, "bytes", source="tensors")
    }
    window = values.get("memory.window_peak_bytes")
    if "memory.peak_alloc_bytes" not in values and window and window.value is not None:
        out["memory.peak_alloc_bytes"] = Value(
            "memory.peak_alloc_bytes",
            weights + window.value,
            "bytes",
            source=f"weights+{window.source}",
        )
    return out


def roofline_values(values: Mapping[str, Value]) -> dict[str, Value]:
    """How far the measurement is from the roofline (seed 003 §2.3, ``harness.estimate``).

    - ``roofline.prefill_fraction`` = ``estimate.prefill_s`` / ``latency.ttft_s`` and
      ``roofline.decode_fraction`` = ``estimate.decode_s`` / ``latency.tpot_s``: predicted
      time at the bound ÷ measured time (1 = the hardware's limit reached);
    - ``roofline.prefill_flops`` = ``estimate.prefill_ops`` / ``latency.ttft_s`` and
      ``roofline.decode_flops`` = ``estimate.decode_ops`` / ``latency.tpot_s``: achieved
      operations/s, the y of the roofline chart (x: ops / bytes of the estimate).

    Each carries a 95% interval from the measured time's: [p / t_high, p / t_low], so
    ``bench compare`` judges it with the timing's noise, not as an exact number.

    A number whose inputs are missing is left out; one whose prediction is null (no
    estimate for the stack, speculative decoding's unknown acceptance) is null with its
    reason.
    """

    def number(name: str) -> float | None:
        v = values.get(name)
        return v.value if v is not None else None

    def over_time(name: str, numerator: float, measured: str, unit: str, source: str) -> Value:
        """numerator / the measured time (known non-zero), with the reciprocal of its
        interval."""
        time = values[measured]
        low, high = time.ci_low, time.ci_high
        return Value(
            name,
            numerator / float(time.value or 0),
            unit,
            ci_low=numerator / high if low and high else None,
            ci_high=numerator / low if low and high else None,
            n=time.n,
            source=source,
        )

    out: dict[str, Value] = {}
    for name, predicted, measured, _ in FRACTIONS:
        got, time = values.get(predicted), number(measured)
        if got is None or not time:
            continue
        if got.value is None:
            out[name] = Value(name, None, "ratio", reason=got.reason)
        else:
            source = f"{predicted}/{measured}"
            out[name] = over_time(name, got.value, measured, "ratio", source)
    for name, ops_name, measured, _ in ACHIEVED:
        ops, time = number(ops_name), number(measured)
        stage = ops_name.removesuffix("_ops") + "_s"
        if ops is None or not time or number(stage) is None:
            continue
        out[name] = over_time(name, ops, measured, "FLOP/s", f"{ops_name}/{measured}")
    return out


def relative_values(
    result: CellResult,
    reference: CellResult | None,
    *,
    defs: Mapping[str, MetricDef] | None = None,
    gated: Sequence[gates.Gate] = (),
) -> list[Value]:
    """What compares an ``ok`` cell ``result`` with ``reference``: ratios, evidence, gates.

    - Ratios (:data:`RATIOS`): ``ratio = reference value / value`` for a lower-is-better
      metric, so above 1 is better (``latency.speedup``). Null with the reason when there
      is no ok reference cell in this run or either value is missing or zero; a cell that
      lacks the metric gets no ratio.
    - Per-sample evidence (``harness.evidence.sample_values``): flips of every metric whose
      flip metrics are registered in ``defs``, greedy token agreement and length drift.
    - ``gate.passed`` when the suite has ``gated`` rules (``harness.gates.judge``), over the
      cell's values including the ones above.
    """
    if result.status != "ok":
        return []
    if reference is not None and reference.status != "ok":
        reference = None
    out = _ratios(result, reference)
    out += evidence.sample_values(result, reference, defs or {})
    if gated:
        mine = {v.name: v.value for v in (*result.values, *out)}
        theirs = {v.name: v.value for v in reference.values} if reference is not None else None
        out.append(gates.judge(gated, mine, theirs))
    return out


def _ratios(result: CellResult, reference: CellResult | None) -> list[Value]:
    out = []
    for metric, ratio, _, _ in RATIOS:
        value = result.metric(metric)
        if value is None:
            continue
        base = reference.metric(metric) if reference and reference.status == "ok" else None
        if reference is None or reference.status != "ok":
            why = (
                "no ok cell of the reference stack for this model, device and workload in this run"
            )
            out.append(Value(ratio, None, "ratio", reason=why))
        elif not base or not value:
            out.append(Value(ratio, None, "ratio", reason=f"{metric} missing or zero"))
        else:
            out.append(Value(ratio, base / value, "ratio", source=f"reference {metric}"))
    return out
