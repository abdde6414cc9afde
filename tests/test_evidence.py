"""Per-sample evidence against the reference (harness.evidence) and quality gates
(harness.gates), exact on hand-made results; the suite's ``gates:`` key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from harness import derive
from harness.errors import SuiteError
from harness.evidence import flip_metrics, flip_names, sample_values
from harness.gates import Gate, judge
from harness.results import CellResult, MetricDef, Value
from harness.suite import suite_from_data
from harness.suitefile import GateRule
from harness.testing import registry_with

PASSKEY = MetricDef("accuracy.passkey", "fraction", True, "passkey")
DEFS = {m.name: m for m in [PASSKEY, *flip_metrics(PASSKEY), *derive.METRICS]}


def cell(*values: Value, status: str = "ok") -> CellResult:
    return CellResult(
        key="k",
        model="m",
        device="cpu",
        technique="t",
        stack=(),
        workload={},
        status=status,  # type: ignore[arg-type]
        reason=None,
        started_at=0.0,
        duration_s=0.0,
        values=values,
    )


def outcomes(name: str, samples: Sequence[float]) -> Value:
    return Value(
        name, sum(samples) / len(samples), "fraction", n=len(samples), samples=tuple(samples)
    )


def by_name(values: Sequence[Value]) -> dict[str, Value]:
    return {v.name: v for v in values}


# ---------------------------------------------------------------- flips


def test_equal_accuracy_can_hide_flips_and_they_are_counted_exactly() -> None:
    reference = cell(outcomes("accuracy.passkey", [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]))
    # Same accuracy (0.6), but samples 0 and 1 went right → wrong, 4 and 5 wrong → right.
    result = cell(outcomes("accuracy.passkey", [0, 0, 1, 1, 1, 1, 0, 0, 1, 1]))
    got = by_name(sample_values(result, reference, DEFS))
    assert got["flips.passkey_right_to_wrong"].value == 0.2
    assert got["flips.passkey_wrong_to_right"].value == 0.2
    assert got["flips.passkey_changed"].value == 0.4
    assert got["flips.passkey_changed"].n == 10
    assert result.metric("accuracy.passkey") == reference.metric("accuracy.passkey")


def test_flips_need_the_same_samples_on_both_sides() -> None:
    result = cell(outcomes("accuracy.passkey", [1, 0, 1]))
    shorter = cell(outcomes("accuracy.passkey", [1, 0]))
    got = by_name(sample_values(result, shorter, DEFS))
    assert got["flips.passkey_changed"].value is None
    assert "3 samples here, 2 on the reference" in (got["flips.passkey_changed"].reason or "")
    alone = by_name(sample_values(result, None, DEFS))
    assert alone["flips.passkey_right_to_wrong"].value is None
    assert "no ok cell of the reference stack" in (
        alone["flips.passkey_right_to_wrong"].reason or ""
    )
    fractions = cell(outcomes("accuracy.passkey", [0.5, 1, 1]))
    got = by_name(sample_values(result, fractions, DEFS))
    assert "not 1/0 outcomes" in (got["flips.passkey_wrong_to_right"].reason or "")


def test_only_metrics_that_registered_flips_get_them() -> None:
    result = cell(outcomes("accuracy.top1_agreement", [1, 0]), outcomes("accuracy.passkey", [1]))
    reference = cell(outcomes("accuracy.top1_agreement", [1, 1]), outcomes("accuracy.passkey", [1]))
    got = by_name(sample_values(result, reference, DEFS))
    assert sorted(got) == sorted(flip_names("accuracy.passkey").values())


def test_flip_metric_definitions() -> None:
    defs = flip_metrics(PASSKEY)
    assert [(d.name, d.unit, d.higher_is_better) for d in defs] == [
        ("flips.passkey_right_to_wrong", "fraction", False),
        ("flips.passkey_wrong_to_right", "fraction", True),
        ("flips.passkey_changed", "fraction", False),
    ]


# ---------------------------------------------------------------- generation


def generation(tokens: Sequence[Sequence[int]], lengths: Sequence[int]) -> tuple[Value, Value]:
    from harness.workloads.generate import output_values

    tokens_value, length_value = output_values(tokens, lengths)
    return tokens_value, length_value


def test_greedy_token_agreement_and_length_drift_are_exact() -> None:
    reference = cell(*generation([[1, 2, 3, 4], [5, 6, 7, 8]], [4, 2]))
    # Row 0 diverges at step 2 then agrees again at step 3; row 1 agrees everywhere.
    result = cell(*generation([[1, 2, 9, 4], [5, 6, 7, 8]], [3, 4]))
    got = by_name(sample_values(result, reference, DEFS))
    assert got["quality.token_agreement"].value == 7 / 8
    assert got["quality.token_agreement"].n == 8
    assert got["quality.prefix_agreement"].samples == (0.5, 1.0)
    assert got["quality.prefix_agreement"].value == 0.75
    drift = got["quality.length_drift_tokens"]
    assert drift.samples == (-1.0, 2.0)  # the distribution, row by row
    assert drift.value == 0.5


def test_generation_evidence_is_null_without_a_matching_reference() -> None:
    result = cell(*generation([[1, 2]], [2]))
    other = cell(*generation([[1, 2, 3]], [3]))
    got = by_name(sample_values(result, other, DEFS))
    assert got["quality.token_agreement"].value is None
    assert "2 generated tokens here, 3 on the reference" in (
        got["quality.token_agreement"].reason or ""
    )
    got = by_name(sample_values(result, None, DEFS))
    assert got["quality.length_drift_tokens"].value is None


# ---------------------------------------------------------------- gates


def test_each_gate_rule_against_the_reference() -> None:
    values = {"accuracy.perplexity": 10.8, "accuracy.passkey": 0.9, "flips.x": 0.3}
    reference = {"accuracy.perplexity": 10.0, "accuracy.passkey": 1.0}

    def verdict(metric: str, **rules: float) -> float | None:
        return judge([Gate(metric, tuple(rules.items()))], values, reference).value

    assert verdict("accuracy.perplexity", max_ratio=1.1) == 1.0
    assert verdict("accuracy.perplexity", max_ratio=1.05) == 0.0
    assert verdict("accuracy.passkey", min_recovery=0.9) == 1.0
    assert verdict("accuracy.passkey", min_recovery=0.95) == 0.0
    assert verdict("accuracy.passkey", min_ratio=0.91) == 0.0
    assert verdict("accuracy.perplexity", max_delta=0.5) == 0.0
    assert verdict("accuracy.perplexity", max_delta=1.0) == 1.0
    assert verdict("accuracy.passkey", min_delta=-0.1) == 1.0
    assert verdict("flips.x", max=0.25) == 0.0
    assert verdict("flips.x", min=0.25) == 1.0


def test_gate_verdict_names_every_rule_and_what_it_found() -> None:
    gates = [
        Gate("accuracy.perplexity", (("max_ratio", 1.05),)),
        Gate("accuracy.passkey", (("min_recovery", 0.95), ("min", 0.5))),
    ]
    got = judge(
        gates,
        {"accuracy.perplexity": 11.0, "accuracy.passkey": 1.0},
        {
            "accuracy.perplexity": 10.0,
            "accuracy.passkey": 1.0,
        },
    )
    assert got.value == 0.0 and got.n == 3
    assert got.reason == (
        "accuracy.perplexity 1.1× fails max_ratio 1.05; accuracy.passkey 1× passes "
        "min_recovery 0.95; accuracy.passkey 1 passes min 0.5"
    )


def test_an_unmeasured_metric_fails_and_a_missing_reference_is_not_judged() -> None:
    gate = [Gate("accuracy.passkey", (("min_recovery", 0.9),))]
    unmeasured = judge(gate, {"accuracy.passkey": None}, {"accuracy.passkey": 1.0})
    assert unmeasured.value == 0.0
    assert "not measured" in (unmeasured.reason or "")
    alone = judge(gate, {"accuracy.passkey": 0.5}, None)
    assert alone.value is None
    assert "no ok reference cell" in (alone.reason or "")
    # An absolute rule is judged without a reference; the relative one is listed as not judged.
    mixed = [Gate("accuracy.passkey", (("min_recovery", 0.9), ("min", 0.8)))]
    failed = judge(mixed, {"accuracy.passkey": 0.5}, None)
    assert failed.value == 0.0
    assert "not judged: accuracy.passkey min_recovery 0.9" in (failed.reason or "")


def test_relative_values_judge_gates_after_the_evidence() -> None:
    reference = cell(outcomes("accuracy.passkey", [1, 1, 1, 1]))
    result = cell(outcomes("accuracy.passkey", [1, 1, 0, 1]))
    gated = [Gate("flips.passkey_right_to_wrong", (("max", 0.2),))]
    got = by_name(derive.relative_values(result, reference, defs=DEFS, gated=gated))
    assert got["flips.passkey_right_to_wrong"].value == 0.25
    assert got["gate.passed"].value == 0.0
    # A cell that is not ok gets nothing; a reference that is not ok is no reference.
    assert derive.relative_values(cell(status="error"), reference, defs=DEFS, gated=gated) == []
    broken = cell(outcomes("accuracy.passkey", [1, 1, 1, 1]), status="error")
    got = by_name(derive.relative_values(result, broken, defs=DEFS))
    assert got["flips.passkey_changed"].value is None


# ---------------------------------------------------------------- the suite's gates: key


def _suite(gates: Any) -> Any:
    data = {
        "name": "g",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": [8, 16]}},
        "techniques": ["baseline"],
        "accuracy": ["passkey"],
        "gates": gates,
    }
    return suite_from_data(data, registry_with(), devices=["cpu"])


def test_gates_reach_every_cell_and_leave_its_key_alone() -> None:
    gated = _suite({"accuracy.passkey": {"min_recovery": 0.95, "min": 0.5}})
    plain = _suite({})
    assert [c.key for c in gated.cells] == [c.key for c in plain.cells]
    assert all(
        c.gates == (Gate("accuracy.passkey", (("min_recovery", 0.95), ("min", 0.5))),)
        for c in gated.cells
    )


def test_a_gate_on_an_unknown_metric_or_without_a_rule_is_a_suite_error() -> None:
    with pytest.raises(
        SuiteError, match=r"gates: unknown metric 'accuracy.pasky'.*accuracy.passkey"
    ):
        _suite({"accuracy.pasky": {"min": 0.5}})
    with pytest.raises(SuiteError, match="at least one rule"):
        _suite({"accuracy.passkey": {}})
    with pytest.raises(SuiteError, match="max_rate"):
        _suite({"accuracy.passkey": {"max_rate": 1.0}})
    assert GateRule(max_ratio=1.05).rules() == (("max_ratio", 1.05),)
