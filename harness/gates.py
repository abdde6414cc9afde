"""Quality gates: the suite's ``gates:`` judged against the reference stack of the same run.

A gate bounds one registered metric of every ``ok`` cell, as a ratio or a difference
against the reference stack's cell of the same model, device and workload, or as an
absolute value::

    gates:
      accuracy.perplexity: {max_ratio: 1.05}        # value / reference ≤ 1.05
      accuracy.passkey: {min_recovery: 0.95}        # value / reference ≥ 0.95
      flips.passkey_right_to_wrong: {max: 0.05}     # value ≤ 0.05

Rules (v: the cell's value, r: the reference cell's): ``max_ratio`` v / r ≤ x,
``min_ratio`` and ``min_recovery`` v / r ≥ x (the share of the reference's score kept),
``max_delta`` v − r ≤ x, ``min_delta`` v − r ≥ x, ``max`` v ≤ x, ``min`` v ≥ x.

The verdict is stored as the metric ``gate.passed`` (1 passed, 0 failed) whose reason
names every rule and what it found, so ``bench results``, ``bench compare``, the report
and the dashboard all read the same verdict. A metric that was not measured fails its
gate (a quality claim needs the number); a rule against the reference cannot be judged
without an ok reference cell: the verdict is then null with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.results import MetricDef, Value

#: rule name -> (needs the reference, description)
RULES: dict[str, tuple[bool, str]] = {
    "max_ratio": (True, "value / reference ≤ x"),
    "min_ratio": (True, "value / reference ≥ x"),
    "min_recovery": (True, "value / reference ≥ x (share of the reference's score kept)"),
    "max_delta": (True, "value − reference ≤ x"),
    "min_delta": (True, "value − reference ≥ x"),
    "max": (False, "value ≤ x"),
    "min": (False, "value ≥ x"),
}

METRICS = [
    MetricDef(
        "gate.passed",
        "flag",
        True,
        "1 when the cell passes every quality gate of its suite (gates:), judged against "
        "the reference stack of the same run; the reason names each rule and its finding",
    ),
]


@dataclass(frozen=True)
class Gate:
    """One suite gate: a metric and its rules (rule name -> bound)."""

    metric: str
    rules: tuple[tuple[str, float], ...]


def judge(
    gates: Sequence[Gate],
    values: Mapping[str, float | None],
    reference: Mapping[str, float | None] | None,
) -> Value:
    """``gate.passed`` of a cell with ``values`` against the reference cell's ``reference``.

    Args:
        gates: the suite's gates.
        values: the cell's metric values by name (None: not measured).
        reference: the reference cell's values, or None when this run has no ok one.
    """
    findings: list[str] = []
    failed = 0
    unjudged: list[str] = []
    for gate in gates:
        value = values.get(gate.metric)
        for rule, bound in gate.rules:
            needs_reference, _ = RULES[rule]
            base = reference.get(gate.metric) if reference is not None else None
            if value is None:
                failed += 1
                findings.append(f"{gate.metric} not measured: fails {rule} {bound:g}")
                continue
            if needs_reference and (reference is None or base is None or base == 0):
                unjudged.append(f"{gate.metric} {rule} {bound:g}")
                continue
            ok, shown = _check(rule, bound, value, base if base is not None else 0.0)
            failed += 0 if ok else 1
            findings.append(f"{gate.metric} {shown} {'passes' if ok else 'fails'} {rule} {bound:g}")
    n = sum(len(g.rules) for g in gates)
    if unjudged and not failed:
        why = "no ok reference cell (or a zero or missing reference value) to judge " + ", ".join(
            unjudged
        )
        return Value("gate.passed", None, "flag", n=n, reason="; ".join([why, *findings]))
    reason = "; ".join(findings + [f"not judged: {u}" for u in unjudged])
    return Value("gate.passed", 0.0 if failed else 1.0, "flag", n=n, source="gates", reason=reason)


def _check(rule: str, bound: float, value: float, base: float) -> tuple[bool, str]:
    """(passes, what was found) of one rule; ``base`` (the reference's value, non-zero for
    the ratio rules) is read only by the rules that need the reference."""
    if rule in ("max_ratio", "min_ratio", "min_recovery"):
        ratio = value / base
        return (ratio <= bound if rule == "max_ratio" else ratio >= bound), f"{ratio:.4g}×"
    if rule in ("max_delta", "min_delta"):
        delta = value - base
        return (delta <= bound if rule == "max_delta" else delta >= bound), f"{delta:+.4g}"
    return (value <= bound if rule == "max" else value >= bound), f"{value:.4g}"
