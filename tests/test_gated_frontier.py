"""Gated-out cells in the dashboard and the report: shown, drawn apart, never on the front."""

from __future__ import annotations

import math

import pandas as pd

from dashboard.charts import frontier_spec
from dashboard.queries import frontier_frame, gated_out, leaderboard, normalize_cells
from dashboard.svg import frontier_svg
from harness.results import MetricDef

DEFS = {
    "memory.peak_alloc_bytes": MetricDef("memory.peak_alloc_bytes", "bytes", False, "peak"),
    "accuracy.perplexity": MetricDef("accuracy.perplexity", "ppl", False, "ppl"),
}


def cells() -> pd.DataFrame:
    rows = [
        # technique, peak bytes, perplexity, gate.passed
        ("baseline", 100.0, 10.0, 1.0),
        ("quant-8", 60.0, 10.2, 1.0),
        ("quant-2", 20.0, 10.5, 0.0),  # dominates quant-4, but failed its gate
        ("quant-4", 40.0, 11.0, 1.0),  # on the front once quant-2 is gated out
    ]
    frame = pd.DataFrame(
        {
            "run_id": 1,
            "cell_key": [f"k{i}" for i in range(len(rows))],
            "model": "m",
            "device": "cpu",
            "workload": "generate()",
            "technique": [r[0] for r in rows],
            "status": "ok",
            "reason": None,
            "reference": [r[0] == "baseline" for r in rows],
            "memory.peak_alloc_bytes": [r[1] for r in rows],
            "accuracy.perplexity": [r[2] for r in rows],
            "gate.passed": [r[3] for r in rows],
        }
    )
    return normalize_cells(frame)


def test_a_gated_point_stays_but_is_never_on_the_front() -> None:
    points = frontier_frame(cells(), "memory.peak_alloc_bytes", "accuracy.perplexity", DEFS)
    by = points.set_index("technique")
    assert len(points) == 4  # not hidden
    assert bool(by.loc["quant-2", "gated"]) and not bool(by.loc["quant-2", "on_front"])
    assert by["on_front"].to_dict() == {
        "quant-2": False,
        "quant-4": True,
        "quant-8": True,
        "baseline": True,
    }


def test_without_gates_nothing_is_gated_and_the_front_is_unchanged() -> None:
    plain = cells().drop(columns=["gate.passed"])
    points = frontier_frame(plain, "memory.peak_alloc_bytes", "accuracy.perplexity", DEFS)
    assert not points["gated"].any()
    assert points.set_index("technique")["on_front"].to_dict()["quant-4"] is False
    assert gated_out(plain).tolist() == [False] * 4


def test_charts_draw_gated_points_as_crosses() -> None:
    points = frontier_frame(cells(), "memory.peak_alloc_bytes", "accuracy.perplexity", DEFS)
    spec = frontier_spec(points, "memory.peak_alloc_bytes", "accuracy.perplexity", DEFS)
    fronts = {r["technique"]: r["front"] for r in spec["data"]["values"]}
    assert fronts["quant-2"] == "gated out"
    shape = spec["layer"][-1]["encoding"]["shape"]["scale"]
    assert dict(zip(shape["domain"], shape["range"], strict=True))["gated out"] == "cross"
    svg = frontier_svg(points, "memory.peak_alloc_bytes", "accuracy.perplexity", DEFS)
    assert svg.count('class="point gated"') == 1
    assert svg.count("<circle") == 3


def test_the_leaderboard_names_the_gate_verdict() -> None:
    table = leaderboard(cells(), "m", "cpu", "generate()", ["accuracy.perplexity"])
    assert table.set_index("technique")["gate"].to_dict() == {
        "baseline": "passed",
        "quant-2": "failed",
        "quant-4": "passed",
        "quant-8": "passed",
    }
    no_gates = leaderboard(
        cells().drop(columns=["gate.passed"]), "m", "cpu", "generate()", ["accuracy.perplexity"]
    )
    assert "gate" not in no_gates.columns
    assert not math.isnan(table.set_index("technique").loc["quant-2", "accuracy.perplexity"])
