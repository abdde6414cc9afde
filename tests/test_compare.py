"""Matching, rows and gates of ``bench compare`` on hand-made frames (no database)."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import pytest

from harness.compare import (
    Gate,
    Options,
    Side,
    compare,
    match_cells,
    parse_fail_on,
    readable,
)
from harness.compare_sides import history_runs
from harness.errors import BenchError
from harness.fingerprint import identity_hash
from harness.results import MetricDef
from harness.store.frames import METRIC_COLUMNS

TPOT, PEAK, PPL, DECODE = (
    "latency.tpot_s",
    "memory.peak_alloc_bytes",
    "accuracy.perplexity",
    "throughput.decode_tok_s",
)
DEFS = {
    TPOT: MetricDef(TPOT, "s", False, "time per output token"),
    PEAK: MetricDef(PEAK, "bytes", False, "allocator peak"),
    PPL: MetricDef(PPL, "ppl", False, "perplexity"),
    DECODE: MetricDef(DECODE, "tok/s", True, "decode throughput"),
    "stats.tpot_cv": MetricDef("stats.tpot_cv", "ratio", False, "cv"),
    "cost.prepare_s": MetricDef("cost.prepare_s", "s", False, "the stack's prepare"),
}
WORKLOAD = "generate(batch_size=1,new_tokens=16,prompt_tokens=64)"
Stored = tuple[float | None, float | None, float | None, int, tuple[float, ...]]


def fingerprint(**changes: Any) -> dict[str, Any]:
    """A fingerprint shaped like the worker's; ``changes`` maps dotted paths to values."""
    fp: dict[str, Any] = {
        "version": 1,
        "model": {
            "id": "smollm2-135m",
            "dtype": "auto",
            "revision": None,
            "trust_remote_code": False,
            "source": "builtin",
            "path": "/home/a/.cache/bench/models/smollm2-135m",
            "commit": None,
            "files": {"model.safetensors": "sampled-sha256:" + "a" * 64},
            "sha256": "1" * 64,
        },
        "workload": {
            "name": "generate",
            "params": {"prompt_tokens": 64, "new_tokens": 16, "batch_size": 1},
            "texts": {"shakespeare": {"prompt": {"source": "shakespeare", "sha256": "2" * 64}}},
            "tokenizer": {"class": "TokenizersBackend", "sha256": "3" * 64},
            "inputs": {"prompt_ids_sha256": "4" * 64, "prompt_shape": [1, 64]},
        },
        "accuracy": [],
        "stack": [{"name": "baseline", "config": {}}],
        "device": {"name": "cpu", "kind": "cpu", "gpu": None, "capability": None, "cpu": "EPYC"},
        "policy": {"warmup": 1, "repeats": 6},
        "software": {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.23.0"},
        "host": {"load_1m": 0.5, "cpus": 2},
    }
    for path, value in changes.items():
        node = fp
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return fp


@dataclass
class FakeCell:
    key: str
    technique: str = "baseline"
    workload: str = WORKLOAD
    device: str = "cpu"
    status: str = "ok"
    reason: str | None = None
    # metric -> (value, ci_low, ci_high, n, samples)
    metrics: Mapping[str, Stored] = field(default_factory=dict)
    fingerprint: dict[str, Any] | None = field(default_factory=fingerprint)


def side(label: str, cells: list[FakeCell], run: dict[str, Any] | None = None) -> Side:
    """Frames shaped like the store's reads (``cells_frame``, ``metrics_frame``, ...)."""
    cell_rows = [
        {
            "cell_key": c.key,
            "model": "smollm2-135m",
            "device": c.device,
            "technique": c.technique,
            "workload": c.workload,
            "status": c.status,
            "reason": c.reason,
        }
        for c in cells
    ]
    metric_rows, sample_rows = [], []
    for c in cells:
        for name, (value, low, high, n, samples) in c.metrics.items():
            unit = DEFS[name].unit if name in DEFS else ""
            metric_rows.append((c.key, name, value, unit, low, high, n, "test", None))
            sample_rows += [(1, c.key, name, i, x) for i, x in enumerate(samples)]
    return Side(
        label=label,
        run=run or {"id": 1, "machine": "vm"},
        cells=pd.DataFrame(cell_rows),
        metrics=pd.DataFrame(metric_rows, columns=list(METRIC_COLUMNS)),
        samples=pd.DataFrame(
            sample_rows, columns=["run_id", "cell_key", "name", "position", "value"]
        ),
        fingerprints={c.key: c.fingerprint for c in cells},
    )


def repeated(*samples: float) -> Stored:
    xs = sorted(samples)
    mid = len(xs) // 2
    median = xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2
    return (median, xs[0], xs[-1], len(xs), tuple(samples))


def once(value: float) -> Stored:
    return (value, None, None, 1, ())


def rows_by_metric(result: Any) -> dict[str, Any]:
    return {r.metric: r for r in result.rows}


# ---------------------------------------------------------------- matching rules


def test_a_different_transformers_version_matches_and_is_named() -> None:
    base = side("A", [FakeCell("k1", metrics={TPOT: repeated(*[0.05] * 6)})])
    newer = fingerprint(**{"software.transformers": "5.24.0", "host.load_1m": 1.7})
    candidate = side(
        "B", [FakeCell("k2", metrics={TPOT: repeated(*[0.05] * 6)}, fingerprint=newer)]
    )
    result = compare(base, candidate, DEFS)
    assert [str(d) for d in result.differences] == ["transformers 5.23.0 → 5.24.0"]
    assert len(result.pairs) == 1 and not result.mismatched
    assert result.pairs[0].differences == ()  # shared ones head the comparison only
    assert rows_by_metric(result)[TPOT].verdict == "unchanged"
    assert result.load == (0.5, 1.7)  # the load is summarised, never a difference


def test_a_different_prompt_text_does_not_match() -> None:
    other_text = fingerprint(
        **{
            "workload.texts": {"my.txt": {"prompt": {"source": "file", "sha256": "9" * 64}}},
            "workload.inputs": {"prompt_ids_sha256": "8" * 64, "prompt_shape": [1, 64]},
        }
    )
    base = side("A", [FakeCell("k1", metrics={TPOT: repeated(*[0.05] * 6)})])
    candidate = side(
        "B", [FakeCell("k2", metrics={TPOT: repeated(*[0.07] * 6)}, fingerprint=other_text)]
    )
    result = compare(base, candidate, DEFS)
    assert result.pairs == () and result.rows == ()
    (pair,) = result.mismatched
    assert {readable(d.field) for d in pair.mismatch} == {
        "the texts' content",
        "the prompts' token ids",
    }
    assert identity_hash(base.fingerprints["k1"]) != identity_hash(other_text)


def test_the_same_text_cut_differently_does_not_match_either() -> None:
    # Same text, other token ids (another tokenizer or prompt cut): not the same inputs.
    other_ids = fingerprint(
        **{"workload.inputs": {"prompt_ids_sha256": "7" * 64, "prompt_shape": [1, 64]}}
    )
    base = side("A", [FakeCell("k1")])
    candidate = side("B", [FakeCell("k2", fingerprint=other_ids)])
    (matched, mismatched, _, _) = match_cells(base, candidate)
    assert not matched
    assert [d.field for d in mismatched[0].mismatch] == ["workload.inputs"]


def test_other_model_files_and_policy_match_and_are_named_per_pair() -> None:
    retrained = fingerprint(**{"model.sha256": "f" * 64})
    base = side("A", [FakeCell("k1"), FakeCell("k3", technique="precision(dtype=bf16)")])
    candidate = side(
        "B",
        [
            FakeCell("k2", fingerprint=retrained),
            FakeCell("k4", technique="precision(dtype=bf16)", fingerprint=fingerprint()),
        ],
    )
    result = compare(base, candidate, DEFS)
    assert result.differences == ()  # not shared by every pair
    by_stack = {p.technique: p for p in result.pairs}
    assert [str(d) for d in by_stack["baseline"].differences] == [
        "model files 1111111111 → ffffffffff"
    ]
    assert by_stack["precision(dtype=bf16)"].differences == ()


def test_one_sided_cells_are_listed() -> None:
    base = side("A", [FakeCell("k1"), FakeCell("k5", technique="gqa(kv_heads=1)")])
    candidate = side("B", [FakeCell("k2"), FakeCell("k6", workload="generate(batch_size=4)")])
    result = compare(base, candidate, DEFS)
    assert [(o.side, o.technique) for o in result.only_base] == [("base", "gqa(kv_heads=1)")]
    assert [(o.side, o.workload) for o in result.only_candidate] == [
        ("candidate", "generate(batch_size=4)")
    ]


def test_devices_must_match_unless_asked() -> None:
    gpu = fingerprint(**{"device.name": "cuda:0", "device.kind": "cuda", "device.gpu": "H100"})
    base = side("A", [FakeCell("k1", metrics={TPOT: once(0.05)})])
    candidate = side("B", [FakeCell("k2", device="cuda:0", fingerprint=gpu)])
    assert not compare(base, candidate, DEFS).pairs
    across = compare(base, candidate, DEFS, Options(across_devices=True))
    (pair,) = across.pairs
    assert pair.candidate_device == "cuda:0"
    assert {d.field for d in across.differences} >= {"device.name", "device.gpu"}


def test_cells_without_fingerprints_match_by_label_and_name_the_runs_differences() -> None:
    old = {"id": 1, "machine": "vm", "git_commit": "aaa", "environment": {"torch": "2.12.0"}}
    new = {"id": 2, "machine": "vm", "git_commit": "bbb", "environment": {"torch": "2.13.0"}}
    base = side("A", [FakeCell("k1", fingerprint=None, metrics={PEAK: once(100.0)})], old)
    candidate = side("B", [FakeCell("k2", fingerprint=None, metrics={PEAK: once(100.0)})], new)
    result = compare(base, candidate, DEFS)
    assert [str(d) for d in result.differences] == ["git commit aaa → bbb", "torch 2.12.0 → 2.13.0"]
    assert rows_by_metric(result)[PEAK].verdict == "unchanged"


# ---------------------------------------------------------------- rows


def test_exact_values_regress_beyond_the_band_and_repeats_stay_inconclusive() -> None:
    base = side(
        "A",
        [
            FakeCell(
                "k1",
                metrics={
                    PEAK: once(1000.0),
                    PPL: once(20.0),
                    TPOT: repeated(0.050, 0.052, 0.049),
                    DECODE: repeated(20.0, 19.2, 20.4),
                },
            )
        ],
    )
    candidate = side(
        "B",
        [
            FakeCell(
                "k2",
                metrics={
                    PEAK: once(1011.0),  # +1.1%
                    PPL: once(20.0),
                    TPOT: repeated(0.0505, 0.053, 0.050),
                    DECODE: repeated(19.6, 18.9, 20.0),
                },
            )
        ],
    )
    gates = (Gate(PEAK, 0.01, 1),)
    rows = rows_by_metric(compare(base, candidate, DEFS, Options(gates=gates)))
    assert (rows[PEAK].verdict, rows[PEAK].threshold) == ("regressed", 0.01)
    assert rows[PPL].verdict == "unchanged" and rows[PPL].ratio.method == "exact"
    # three repeats a side: the bootstrap interval spans the ±2% band
    assert rows[TPOT].verdict == "inconclusive" and rows[TPOT].ratio.method == "bootstrap"
    assert rows[TPOT].repeats_needed is not None and rows[TPOT].repeats_needed > 0
    assert rows[DECODE].higher_is_better is True


def test_a_metric_null_on_one_side_is_missing_and_stats_are_hidden() -> None:
    base = side("A", [FakeCell("k1", metrics={PEAK: once(1.0), "stats.tpot_cv": once(0.1)})])
    candidate = side("B", [FakeCell("k2", metrics={PEAK: (None, None, None, 1, ())})])
    result = compare(base, candidate, DEFS)
    assert [(r.metric, r.verdict) for r in result.rows] == [(PEAK, "missing")]
    asked = compare(base, candidate, DEFS, Options(metrics=("stats.*",)))
    assert [r.metric for r in asked.rows] == ["stats.tpot_cv"]


def test_a_cell_that_stopped_working_is_reported() -> None:
    base = side("A", [FakeCell("k1", metrics={TPOT: once(0.05)})])
    broken = FakeCell("k2", status="error", reason="RuntimeError: boom (x.py:1)")
    result = compare(base, side("B", [broken]), DEFS)
    (pair,) = result.broken
    assert (pair.base_status, pair.candidate_status) == ("ok", "error")


def test_a_timed_out_cell_names_only_what_both_sides_recorded() -> None:
    # A timed-out cell has only the suite's part of its fingerprint: no software, files.
    static = {k: v for k, v in fingerprint().items() if k not in ("software", "host")}
    static["model"] = {k: static["model"][k] for k in ("id", "dtype", "revision")}
    static["policy"] = {"warmup": 1, "repeats": 3}
    base = side("A", [FakeCell("k1", metrics={TPOT: once(0.05)})])
    timed_out = FakeCell("k2", status="timeout", fingerprint=static)
    result = compare(base, side("B", [timed_out]), DEFS)
    (pair,) = result.broken
    assert pair.candidate_status == "timeout"
    assert [str(d) for d in result.differences] == ["policy.repeats 6 → 3"]


def test_failures_are_gated_regressions_only() -> None:
    base = side("A", [FakeCell("k1", metrics={PEAK: once(100.0), PPL: once(10.0)})])
    candidate = side("B", [FakeCell("k2", metrics={PEAK: once(110.0), PPL: once(11.0)})])
    gated = compare(base, candidate, DEFS, Options(gates=(Gate(PEAK, 0.05, 1),)))
    assert [r.metric for r in gated.failures()] == [PEAK]  # PPL regressed too, ungated
    loose = compare(base, candidate, DEFS, Options(gates=(Gate(PEAK, 0.10, 1),)))
    assert loose.failures() == []  # +10% exactly is inside a ±10% band


def test_metric_rows_do_not_depend_on_which_others_are_shown() -> None:
    metrics = {TPOT: repeated(0.05, 0.06, 0.055, 0.052), DECODE: repeated(20.0, 18.0, 19.0)}
    base = side("A", [FakeCell("k1", metrics=metrics)])
    candidate = side("B", [FakeCell("k2", metrics=copy.deepcopy(metrics))])
    everything = rows_by_metric(compare(base, candidate, DEFS))[TPOT]
    alone = rows_by_metric(compare(base, candidate, DEFS, Options(metrics=(TPOT,))))[TPOT]
    assert everything.ratio == alone.ratio


# ---------------------------------------------------------------- --fail-on


def test_parse_fail_on() -> None:
    gates = parse_fail_on("latency.tpot_s:+5%, memory.*:1%,throughput.decode_tok_s:-2.5%", DEFS, [])
    assert gates == [
        Gate(TPOT, 0.05, 1),
        Gate("memory.*", 0.01, 0),
        Gate(DECODE, 0.025, -1),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latency.tpot_ms:+5%", "unknown metric 'latency.tpot_ms'. Did you mean 'latency.tpot_s'?"),
        ("memory.peak_bytes:+1%", "unknown metric 'memory.peak_bytes'"),
        ("latency.tpot_s:5", "is not METRIC:+X%"),
        ("throughput.decode_tok_s:+5%", "write throughput.decode_tok_s:-5%"),
        ("latency.tpot_s:-5%", "write latency.tpot_s:+5%"),
    ],
)
def test_bad_fail_on_names_the_fix(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=re.escape(message)):
        parse_fail_on(text, DEFS, [])


def test_a_gate_sign_gives_an_unregistered_metric_its_direction() -> None:
    metrics = {"kv.evicted_tokens": once(100.0)}
    base = side("A", [FakeCell("k1", metrics=metrics)])
    candidate = side("B", [FakeCell("k2", metrics={"kv.evicted_tokens": once(150.0)})])
    gates = tuple(parse_fail_on("kv.evicted_tokens:+10%", DEFS, ["kv.evicted_tokens"]))
    result = compare(base, candidate, DEFS, Options(gates=gates))
    assert [r.verdict for r in result.rows] == ["regressed"]
    assert compare(base, candidate, DEFS).rows[0].verdict == "changed"  # no direction


def test_a_replica_with_other_inputs_is_not_a_sample_of_the_side() -> None:
    steady = repeated(*[0.05] * 6)
    other_text = fingerprint(**{"workload.inputs": {"prompt_ids_sha256": "8" * 64}})
    replicas = (
        side("A2", [FakeCell("k3", metrics={TPOT: repeated(*[0.06] * 6)})]),
        side("A3", [FakeCell("k4", metrics={TPOT: repeated(*[0.09] * 6)}, fingerprint=other_text)]),
        side("A4", [FakeCell("k5", status="failed", metrics={TPOT: repeated(*[0.01] * 6)})]),
    )
    base = replace(
        side("A", [FakeCell("k1", metrics={TPOT: steady, PEAK: once(1e6)})]), replicas=replicas
    )
    candidate = side("B", [FakeCell("k2", metrics={TPOT: steady, PEAK: once(1e6)})])
    rows = rows_by_metric(compare(base, candidate, DEFS))
    assert rows[TPOT].base.runs == (0.05, 0.06)  # not the other inputs', not the failed cell's
    assert rows[TPOT].candidate.runs == ()
    assert rows[TPOT].ratio.method == "runs"
    assert rows[TPOT].ratio.ratio == pytest.approx(0.05 / math.sqrt(0.05 * 0.06))
    assert rows[PEAK].ratio.method == "exact"


# ---------------------------------------------------------------- many rows, the machine


def calibrated(seconds: float, **changes: Any) -> dict[str, Any]:
    parts = {"python_s": seconds, "matmul_s": seconds, "copy_s": seconds}
    return fingerprint(**{"host.calibration": parts, **changes})


def test_timings_are_judged_relative_to_the_machines_calibration() -> None:
    tpot = (0.0500, 0.0502, 0.0498, 0.0500, 0.0501, 0.0499)
    decode = (20.0, 20.1, 19.9, 20.0, 20.05, 19.95)

    def sides(**changes: Any) -> tuple[Side, Side]:
        def cells(name: str, slower: float, fp: dict[str, Any]) -> list[FakeCell]:
            metrics = {
                TPOT: repeated(*(x * slower for x in tpot)),
                DECODE: repeated(*(x / slower for x in decode)),
                PEAK: once(1e6),
            }
            return [
                FakeCell(f"{name}{i}", f"stack{i}", metrics=metrics, fingerprint=fp)
                for i in range(3)
            ]

        return side("A", cells("a", 1.0, calibrated(0.01))), side(
            "B", cells("b", 1.1, calibrated(0.011, **changes))
        )

    result = compare(*sides(), DEFS, Options(machine_relative=True))
    assert result.machine is not None and result.machine.ratio == pytest.approx(1.1)
    assert result.relative
    rows = rows_by_metric(result)
    assert rows[TPOT].relative and rows[TPOT].ratio.ratio == pytest.approx(1.0)
    assert rows[DECODE].ratio.ratio == pytest.approx(1.0)
    assert {r.verdict for r in result.rows} == {"unchanged"}
    assert not rows[PEAK].relative  # bytes do not depend on the machine's speed
    absolute = compare(*sides(), DEFS)
    assert not absolute.relative
    assert [r.verdict for r in absolute.rows if r.metric != PEAK] == ["regressed", "regressed"] * 3
    # another python runs the calibration itself: it cannot stand for the machine
    other_python = compare(
        *sides(**{"software.python": "3.12.1"}), DEFS, Options(machine_relative=True)
    )
    assert not other_python.relative and "python 3.11.7 → 3.12.1" in map(
        str, other_python.differences
    )


def test_rows_beyond_the_band_by_chance_are_corrected_for_their_number() -> None:
    # at 95% ×1.05 of these is regressed (CI about [1.024, 1.077]), at 99.5% not (1.012)
    steady = (0.0500, 0.0512, 0.0488, 0.0505, 0.0495, 0.0508)
    shifted = {"big": 1.5, "marginal": 1.05}

    def cells(name: str, candidate: bool) -> list[FakeCell]:
        out = []
        for i in range(20):
            stack = ("big", "marginal")[i] if i < 2 else f"stack{i}"
            times = shifted.get(stack, 1.0) if candidate else 1.0
            metrics = {TPOT: repeated(*(x * times for x in steady))}
            out.append(FakeCell(f"{name}{i}", stack, metrics=metrics))
        return out

    base, candidate = side("A", cells("a", False)), side("B", cells("b", True))
    uncorrected = rows_by_technique(compare(base, candidate, DEFS, Options(uncorrected=True)))
    assert uncorrected["big"].verdict == uncorrected["marginal"].verdict == "regressed"
    result = compare(base, candidate, DEFS)
    assert result.corrected == (2, 20, pytest.approx(0.995))  # 1 - 2 · 0.05 / 20
    rows = rows_by_technique(result)
    assert (rows["big"].verdict, rows["big"].level) == ("regressed", pytest.approx(0.995))
    assert rows["marginal"].verdict == "inconclusive"
    assert rows["stack5"].level == 0.95  # rows within the band keep their own interval


def rows_by_technique(result: Any) -> dict[str, Any]:
    return {r.pair.technique: r for r in result.rows}


def test_other_runs_of_the_same_software_tell_the_spread_between_runs() -> None:
    tight = (0.0500, 0.0501, 0.0499, 0.0500, 0.0500, 0.0500)
    base = side("A", [FakeCell("a", metrics={TPOT: repeated(*tight), PEAK: once(1e6)})])
    slower = repeated(*(x * 1.1 for x in tight))
    candidate = side("B", [FakeCell("b", metrics={TPOT: slower, PEAK: once(1e6)})])
    assert rows_by_metric(compare(base, candidate, DEFS))[TPOT].verdict == "regressed"

    def run(key: str, tpot: float, commit: str, **changes: Any) -> Side:
        metrics = {TPOT: repeated(*(x * tpot / 0.05 for x in tight)), PEAK: once(1e6)}
        cell = FakeCell(key, metrics=metrics, fingerprint=fingerprint(**changes))
        return side(key, [cell], run={"id": key, "git_commit": commit, "environment": {}})

    history = [
        run("h1", 0.05, "old"),
        run("h2", 0.08, "old"),  # this process was slow
        run("h3", 0.05, "old"),
        run("h4", 0.20, "other"),  # alone on its software: tells nothing
        run("h5", 0.50, "old", **{"workload.inputs.prompt_ids_sha256": "9" * 64}),  # other inputs
    ]
    result = compare(base, candidate, DEFS, history=history)
    assert result.history == 4  # h1-h3 and h5 (whose cell does not count)
    rows = rows_by_metric(result)
    # one run a side plus the group h1-h3: df 2, s² = Σ(ln x − mean)² / 2
    logs = [math.log(x) for x in (0.05, 0.08, 0.05)]
    squares = sum((x - sum(logs) / 3) ** 2 for x in logs)
    half = 4.302653 * math.sqrt(squares / 2) * math.sqrt(2)
    r = rows[TPOT].ratio
    assert (r.method, r.df, r.spread_df) == ("runs", 2, 2)
    assert r.ratio == pytest.approx(1.1)
    assert (r.low, r.high) == (
        pytest.approx(1.1 * math.exp(-half)),
        pytest.approx(1.1 * math.exp(half)),
    )
    assert rows[TPOT].verdict == "inconclusive"
    assert rows[PEAK].ratio.method == "exact"  # counts need no spread


def test_history_runs_are_the_suites_other_runs_on_the_machine() -> None:
    records = [
        {"id": i, "suite_name": suite, "machine_fingerprint": machine, "cells": cells}
        for i, suite, machine, cells in [
            (1, "s", "m", 3),
            (2, "s", "m", 3),
            (3, "other", "m", 3),
            (4, "s", "elsewhere", 3),
            (5, "s", "m", 0),  # recorded nothing
            (6, "s", "m", 3),
            (7, "s", "m", 3),
        ]
    ]
    named = [records[6], records[1]]
    assert [r["id"] for r in history_runs(records, named)] == [6, 1]
    assert [r["id"] for r in history_runs(records, named, limit=1)] == [6]


def test_a_single_sub_millisecond_timing_is_not_judged() -> None:
    cost = "cost.prepare_s"
    base = side("A", [FakeCell("a", metrics={cost: once(0.00002), TPOT: once(0.05)})])
    candidate = side("B", [FakeCell("b", metrics={cost: once(0.0005), TPOT: once(0.06)})])
    history = [
        side(
            f"h{i}",
            [FakeCell(f"h{i}", metrics={cost: once(x), TPOT: once(0.05)})],
            run={"id": i, "git_commit": "g"},
        )
        for i, x in enumerate((0.00002, 0.00002, 0.00003))
    ]
    rows = rows_by_metric(compare(base, candidate, DEFS, history=history))
    assert rows[cost].ratio.ratio == pytest.approx(25.0)
    assert (rows[cost].verdict, rows[cost].note) == ("inconclusive", "under 1 ms, timed once")
    assert rows[TPOT].ratio.method == "runs"  # 50 ms is judged, with the history's spread
