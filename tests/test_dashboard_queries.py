"""Tests for the dashboard's pure queries (dashboard.queries), chart specs (dashboard.charts,
dashboard.svg) and read-only loaders (dashboard.data)."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dashboard_db import DEFS, WORKLOAD_LABEL, expected_delta, fill_demo_db

from dashboard.charts import axis_title, display_unit, format_value, frontier_spec, ratio_spec
from dashboard.comparing import (
    REGRESSION_COLUMNS,
    compare_frames,
    intervals_overlap,
    regression_frame,
)
from dashboard.data import cell_detail, load_comparison, load_snapshot, run_detail
from dashboard.queries import (
    DELTA_SUFFIX,
    busiest_workload,
    default_axes,
    delta_is_better,
    directed_metrics,
    failed_cells,
    flatten,
    frontier_frame,
    leaderboard,
    metric_columns,
    metrics_of_kind,
    normalize_cells,
    reference_deltas,
    status_summary,
    technique_family,
    workload_label,
)
from dashboard.svg import frontier_svg, nice_ticks
from harness.compare import Options
from harness.results import MetricDef

ROOT = Path(__file__).resolve().parent.parent
D = {d.name: d for d in DEFS}
MEM, TPOT, PPL, TOK = (
    "memory.peak_alloc_bytes",
    "latency.tpot_s",
    "accuracy.perplexity",
    "throughput.decode_tok_s",
)


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    base = {
        "run_id": 1,
        "suite": "s",
        "cell_key": "k",
        "model": "m",
        "device": "cpu",
        "workload": "w",
        "status": "ok",
        "reason": None,
    }
    # The cells of the stack labelled baseline are the reference stack's, as in a suite
    # without 'reference:'.
    rows = [{**base, "reference": r.get("technique") == "baseline", **r} for r in rows]
    return normalize_cells(pd.DataFrame(rows))


# --- labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "family"),
    [
        ("baseline", "baseline"),
        ("precision(dtype=bf16)", "precision"),
        ("weight-quant(bits=4)+kv-quant(bits=2)", "weight-quant+kv-quant"),
        ("h2o(ratio=0.1,keep=a+b)+offload", "h2o+offload"),
        ("spec(draft=(x,y))", "spec"),
    ],
)
def test_technique_family(label: str, family: str) -> None:
    assert technique_family(label) == family


def test_workload_label_matches_store_label() -> None:
    stored = {
        "name": "generate",
        "params": {"prompt_tokens": 128, "new_tokens": 32, "batch_size": 1},
    }
    assert workload_label(stored) == WORKLOAD_LABEL
    assert workload_label(WORKLOAD_LABEL) == WORKLOAD_LABEL


def test_metric_columns_skip_identity_ci_and_text() -> None:
    cells = frame([{"technique": "baseline", MEM: 1.0, MEM + ".ci_low": 0.9, "note": "x"}])
    assert metric_columns(cells) == [MEM]


# --- default axes ----------------------------------------------------------------------------


def test_default_axes_with_accuracy() -> None:
    assert default_axes([TPOT, MEM, PPL, TOK], D) == [(MEM, PPL), (TPOT, PPL)]


def test_default_axes_prefer_perplexity_among_accuracy_metrics() -> None:
    kl, bpb = "accuracy.kl_div", "accuracy.bits_per_byte"
    defs = {**D, **{m: MetricDef(m, "", False, m) for m in (kl, bpb)}}
    assert default_axes([MEM, bpb, PPL, kl], defs) == [(MEM, PPL)]
    assert default_axes([MEM, kl, bpb], defs) == [(MEM, bpb)]


def test_the_accuracy_axis_is_chosen_by_declared_kind_not_by_name() -> None:
    """A plugin's ``match.greedy`` declared of kind accuracy is an accuracy axis; a metric
    named ``accuracy.*`` but declared ``other`` is not, nor is one without a definition."""
    greedy, odd = "match.greedy", "accuracy.tokens_seen"
    defs = {
        **D,
        greedy: MetricDef(greedy, "fraction", True, "greedy match", kind="accuracy"),
        odd: MetricDef(odd, "tokens", True, "tokens read", kind="other"),
    }
    assert default_axes([MEM, TPOT, odd, greedy], defs) == [(MEM, greedy), (TPOT, greedy)]
    assert default_axes([MEM, TPOT, odd], defs) == [(MEM, TPOT)]
    assert default_axes([MEM, TPOT, "accuracy.undefined"], defs) == [(MEM, TPOT)]
    assert metrics_of_kind([odd, greedy, MEM, "x"], defs, "accuracy") == [greedy]
    assert metrics_of_kind([odd, greedy, MEM], defs, "memory") == [MEM]


def test_the_leaderboard_shows_key_metrics_then_those_of_kind_accuracy() -> None:
    from dashboard.views.leaderboard import default_metrics

    greedy = "greedy.token_match"
    defs = {**D, greedy: MetricDef(greedy, "fraction", True, "greedy match", kind="accuracy")}
    assert default_metrics(["prune.sparsity", greedy, PPL, TPOT], defs) == [TPOT, greedy, PPL]


def test_busiest_workload_has_the_most_stacks() -> None:
    cells = frame(
        [
            {"technique": "baseline", "workload": "a"},
            {"technique": "baseline", "workload": "b"},
            {"technique": "quant", "workload": "b"},
            {"technique": "quant", "workload": "b", "run_id": 2},
            {"technique": "evict", "workload": "c"},
            {"technique": "baseline", "workload": "c"},
        ]
    )
    assert busiest_workload(cells) == "b"  # b and c have two stacks each: the first by name


def test_default_axes_fall_back_to_memory_vs_tpot() -> None:
    assert default_axes([TOK, TPOT, MEM], D) == [(MEM, TPOT)]


def test_default_axes_other_peak_memory_and_too_few_metrics() -> None:
    rss = "memory.peak_rss_bytes"
    assert default_axes([rss, TPOT], D) == [(rss, TPOT)]
    assert default_axes([TOK, "latency.ttft_s"], D) == [(TOK, "latency.ttft_s")]
    assert default_axes([TOK], D) == []


def test_directed_metrics_need_a_definition_and_data() -> None:
    cells = frame([{"technique": "baseline", MEM: 1.0, TPOT: math.nan, "custom.x": 2.0}])
    assert directed_metrics(cells, D) == [MEM]


# --- deltas and leaderboard ------------------------------------------------------------------


def test_reference_deltas_exact() -> None:
    cells = frame(
        [
            {"technique": "baseline", MEM: 200.0, TPOT: 0.020},
            {"technique": "quant", MEM: 50.0, TPOT: 0.025},
            {"technique": "quant", "model": "other", MEM: 10.0, TPOT: 0.01},
        ]
    )
    out = reference_deltas(cells, [MEM, TPOT])
    assert out[MEM + DELTA_SUFFIX].tolist()[:2] == [0.0, -75.0]
    assert out[TPOT + DELTA_SUFFIX].iloc[1] == pytest.approx(25.0)
    # The other model has no baseline: no delta.
    assert math.isnan(out[MEM + DELTA_SUFFIX].iloc[2])


def test_reference_deltas_zero_or_missing_baseline_gives_nan() -> None:
    cells = frame(
        [
            {"technique": "baseline", MEM: 0.0, TPOT: math.nan},
            {"technique": "quant", MEM: 5.0, TPOT: 0.02},
        ]
    )
    out = reference_deltas(cells, [MEM, TPOT])
    assert math.isnan(out[MEM + DELTA_SUFFIX].iloc[1])
    assert math.isnan(out[TPOT + DELTA_SUFFIX].iloc[1])


def test_leaderboard_keeps_newest_run_and_sorts_by_direction() -> None:
    cells = frame(
        [
            {"run_id": 1, "technique": "baseline", TOK: 10.0, MEM: 100.0},
            {"run_id": 2, "technique": "baseline", TOK: 20.0, MEM: 100.0},
            {"run_id": 2, "technique": "a", TOK: 30.0, MEM: 50.0},
            {"run_id": 2, "technique": "b", TOK: 5.0, MEM: 150.0},
            {"run_id": 2, "technique": "c", "status": "oom", TOK: math.nan, MEM: math.nan},
            {"run_id": 2, "technique": "x", "device": "cuda:0", TOK: 99.0, MEM: 1.0},
        ]
    )
    table = leaderboard(cells, "m", "cpu", "w", [TOK, MEM], sort_by=TOK, defs=D)
    assert table["technique"].tolist() == ["a", "baseline", "b", "c"]  # higher tok/s first
    assert table[TOK + DELTA_SUFFIX].tolist()[:3] == [50.0, 0.0, -75.0]  # vs run 2 baseline
    by_memory = leaderboard(cells, "m", "cpu", "w", [MEM], sort_by=MEM, defs=D)
    assert by_memory["technique"].tolist() == ["a", "baseline", "b", "c"]  # lower first
    default = leaderboard(cells, "m", "cpu", "w", [MEM], defs=D)
    assert default["technique"].tolist() == ["baseline", "a", "b", "c"]
    assert list(default.columns) == [
        "technique",
        "family",
        "reference",
        "status",
        "reason",
        "run_id",
        MEM,
        MEM + DELTA_SUFFIX,
    ]


@pytest.mark.parametrize(
    ("delta", "metric", "verdict"),
    [(-5.0, MEM, True), (5.0, MEM, False), (5.0, TOK, True), (0.0, TOK, None), (1.0, "x", None)],
)
def test_delta_is_better(delta: float, metric: str, verdict: bool | None) -> None:
    assert delta_is_better(delta, metric, D) is verdict


# --- frontier --------------------------------------------------------------------------------


def test_frontier_frame_directions_and_exclusions() -> None:
    cells = frame(
        [
            {"technique": "baseline", MEM: 100.0, PPL: 10.0},
            {"technique": "q8", MEM: 60.0, PPL: 10.1},
            {"technique": "q4", MEM: 30.0, PPL: 11.0},
            {"technique": "bad", MEM: 70.0, PPL: 12.0},
            {"technique": "nan", MEM: 10.0, PPL: math.nan},
            {"technique": "oom", "status": "oom", MEM: 1.0, PPL: 1.0},
        ]
    )
    points = frontier_frame(cells, MEM, PPL, D)
    assert dict(zip(points["technique"], points["on_front"], strict=True)) == {
        "q4": True,
        "q8": True,
        "bad": False,
        "baseline": True,
    }
    assert points["x"].tolist() == [30.0, 60.0, 70.0, 100.0]  # sorted by x
    assert set(points["panel"]) == {"all"}


def test_frontier_frame_maximised_axis_and_ci_columns() -> None:
    cells = frame(
        [
            {"technique": "a", TOK: 10.0, TOK + ".ci_low": 9.0, TOK + ".ci_high": 11.0, MEM: 5.0},
            {"technique": "b", TOK: 20.0, TOK + ".ci_low": 19.0, TOK + ".ci_high": 21.0, MEM: 5.0},
        ]
    )
    points = frontier_frame(cells, MEM, TOK, D)
    assert dict(zip(points["technique"], points["on_front"], strict=True)) == {
        "a": False,
        "b": True,
    }
    assert points.set_index("technique").loc["b", ["y_low", "y_high"]].tolist() == [19.0, 21.0]
    assert points["x_low"].isna().all()


def test_frontier_frame_computed_per_facet_panel() -> None:
    cells = frame(
        [
            {"technique": "a", "model": "big", MEM: 100.0, PPL: 5.0},
            {"technique": "b", "model": "big", MEM: 200.0, PPL: 6.0},
            {"technique": "a", "model": "small", MEM: 10.0, PPL: 9.0},
            {"technique": "b", "model": "small", MEM: 20.0, PPL: 8.0},
        ]
    )
    faceted = frontier_frame(cells, MEM, PPL, D, facet="model")
    assert sorted(faceted["panel"].unique()) == ["big", "small"]
    assert faceted["on_front"].tolist() == [True, False, True, True]
    pooled = frontier_frame(cells, MEM, PPL, D)
    # Pooled: small/a (10, 9) and big/a (100, 5) and small/b (20, 8) survive; big/b loses.
    assert pooled.sort_values("x")["on_front"].tolist() == [True, True, True, False]


def test_frontier_frame_unknown_metric_and_empty() -> None:
    cells = frame([{"technique": "a", MEM: 1.0, "custom.x": 2.0}])
    with pytest.raises(KeyError, match=r"custom\.x"):
        frontier_frame(cells, MEM, "custom.x", D)
    assert frontier_frame(cells, MEM, PPL, D).empty


# --- comparison ------------------------------------------------------------------------------


def test_intervals_overlap() -> None:
    assert intervals_overlap(1.0, 2.0, 2.0, 3.0) is True  # touching counts as overlap
    assert intervals_overlap(1.0, 2.0, 2.1, 3.0) is False
    assert intervals_overlap(1.0, math.nan, 0.0, 3.0) is None


def test_compare_frames_significance_and_direction() -> None:
    a = frame(
        [
            {
                "technique": "x",
                TPOT: 0.020,
                TPOT + ".ci_low": 0.019,
                TPOT + ".ci_high": 0.021,
                MEM: 100.0,
                TOK: 50.0,
                TOK + ".ci_low": 45.0,
                TOK + ".ci_high": 55.0,
            },
            {"technique": "only-a", TPOT: 1.0},
        ]
    )
    b = frame(
        [
            {
                "technique": "x",
                TPOT: 0.025,
                TPOT + ".ci_low": 0.024,
                TPOT + ".ci_high": 0.026,
                MEM: 80.0,
                TOK: 52.0,
                TOK + ".ci_low": 47.0,
                TOK + ".ci_high": 57.0,
            },
        ]
    )
    table = compare_frames(a, b, ["model", "device", "technique", "workload"], D)
    rows = table.set_index("metric")
    assert list(rows.index) == [TPOT, MEM, TOK]  # only-a has no partner; sorted by metric
    assert rows.loc[TPOT, "change_%"] == pytest.approx(25.0)
    assert rows.loc[TPOT, "better"] is False and rows.loc[TPOT, "significant"] is True
    assert rows.loc[MEM, "change_%"] == pytest.approx(-20.0)
    assert rows.loc[MEM, "better"] is True and rows.loc[MEM, "significant"] is None  # no CI
    assert rows.loc[TOK, "better"] is True and rows.loc[TOK, "significant"] is False
    assert rows.loc[TOK, "unit"] == "tok/s"


def test_regression_frame_and_its_chart(tmp_path: Path) -> None:
    """The compare view's rows are ``bench compare``'s: one per cell and metric, with the
    ratio's interval; the chart draws each interval and the unchanged band."""
    demo = fill_demo_db(f"sqlite:///{tmp_path / 'bench.db'}", gpu_run=False)
    # each row at 95% on its own: the rows' own intervals (the correction is compare's)
    comparison = load_comparison(demo.url, [1], [2], Options(threshold=0.05, uncorrected=True))
    frame = regression_frame(comparison, metrics=[TPOT])
    assert list(frame.columns) == list(REGRESSION_COLUMNS)
    assert set(frame["metric"]) == {TPOT}
    base = frame[(frame["technique"] == "baseline") & (frame["model"] == "smollm2-135m")]
    (row,) = base.to_dict("records")
    assert row["ratio"] == pytest.approx(1.10)
    assert (row["ci_low"], row["ci_high"]) == (
        pytest.approx(1.1 * 0.98 / 1.02),
        pytest.approx(1.1 * 1.02 / 0.98),
    )
    assert (row["verdict"], row["method"]) == ("regressed", "intervals")
    same = frame[frame["technique"] == "kv-quant(bits=4)"]
    assert set(same["verdict"]) == {"unchanged"}  # [0.961, 1.041] inside ±5%
    spec = ratio_spec(frame, TPOT, 0.05)
    assert spec["height"] == 28 * len(frame)
    points = spec["data"]["values"]
    assert {p["verdict"] for p in points} == {"regressed", "unchanged"}
    band = spec["layer"][0]["data"]["values"][0]
    assert band == {"lo": pytest.approx(0.95), "hi": pytest.approx(1.05)}


# --- detail helpers --------------------------------------------------------------------------


def test_flatten_nested_environment() -> None:
    out = flatten({"python": "3.11", "libs": {"torch": "2.13", "x": None}, "flags": [1, 2]})
    assert out.values.tolist() == [
        ["flags", "[1, 2]"],
        ["libs.torch", "2.13"],
        ["libs.x", ""],
        ["python", "3.11"],
    ]


def test_status_summary_and_failed_cells() -> None:
    cells = frame(
        [
            {"technique": "a", "status": "error", "reason": "boom"},
            {"technique": "b"},
            {"technique": "c", "status": "skipped", "reason": "needs CUDA"},
            {"technique": "d"},
        ]
    )
    assert status_summary(cells).values.tolist() == [["ok", 2], ["skipped", 1], ["error", 1]]
    failed = failed_cells(cells)
    assert failed[["technique", "status", "reason"]].values.tolist() == [
        ["a", "error", "boom"],
        ["c", "skipped", "needs CUDA"],
    ]


# --- charts ----------------------------------------------------------------------------------


def test_display_units_and_formatting() -> None:
    assert display_unit("bytes") == ("MiB", 1.0 / 2**20)
    assert display_unit("s") == ("ms", 1e3)
    assert display_unit("tok/s") == ("tok/s", 1.0)
    assert format_value(0.0215, "s", 0.021, 0.022) == "21.5 ms [21, 22]"
    assert format_value(3 * 2**20, "bytes") == "3 MiB"
    assert format_value(None, "s") == "—"
    assert format_value(math.nan, "s") == "—"
    assert axis_title(TOK, D) == "throughput.decode_tok_s (tok/s, higher is better)"
    assert axis_title(PPL, D) == "accuracy.perplexity (lower is better)"


def demo_points(facet: str | None = None) -> pd.DataFrame:
    cells = frame(
        [
            {"technique": "baseline", "model": "m1", MEM: 2**30, PPL: 10.0},
            {"technique": "w(bits=4)+kv(bits=2)", "model": "m1", MEM: 2**28, PPL: 11.0},
            {"technique": "kv(bits=4)", "model": "m1", MEM: 2**30 + 1, PPL: 10.5},
            {"technique": "baseline", "model": "m2", MEM: 2**29, PPL: 12.0},
        ]
    )
    return frontier_frame(cells, MEM, PPL, D, facet=facet)


def test_frontier_spec_layers_and_data() -> None:
    spec = frontier_spec(demo_points(), MEM, PPL, D)
    assert spec["$schema"].endswith("vega-lite/v6.json")
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["rule", "rule", "line", "point"]
    assert spec["layer"][2]["transform"] == [{"filter": "datum.on_front"}]
    values = spec["data"]["values"]
    assert [v["x"] for v in values] == [256.0, 512.0, 1024.0, 1024.0 + 2**-20]  # MiB
    by_stack = {v["technique"]: v for v in values if v["model"] == "m1"}
    assert by_stack["kv(bits=4)"]["on_front"] is False
    assert by_stack["w(bits=4)+kv(bits=2)"]["family"] == "w+kv"
    point = spec["layer"][3]["encoding"]
    assert point["opacity"]["value"] == pytest.approx(0.3)
    assert {t["field"] for t in point["tooltip"]} >= {"technique", "x_text", "y_text"}
    assert spec["layer"][3]["encoding"]["x"]["title"].startswith(MEM + " (MiB")


def test_frontier_axis_turns_logarithmic_beyond_a_hundredfold_span() -> None:
    linear = frontier_spec(demo_points(), MEM, PPL, D)["layer"][3]["encoding"]
    assert linear["y"]["scale"] == {"zero": False}
    cells = frame(
        [
            {"technique": "baseline", MEM: 2**30, PPL: 10.0},
            {"technique": "w(bits=2)", MEM: 2**27, PPL: 1001.0},  # 100.1× the best
        ]
    )
    spec = frontier_spec(frontier_frame(cells, MEM, PPL, D), MEM, PPL, D)
    y = spec["layer"][3]["encoding"]["y"]
    assert y["scale"] == {"type": "log"} and y["title"].endswith("log scale")
    assert spec["layer"][3]["encoding"]["x"]["scale"] == {"zero": False}  # 8× only


def test_frontier_spec_facets() -> None:
    spec = frontier_spec(demo_points("model"), MEM, PPL, D, facet="model", columns=2)
    assert spec["facet"]["field"] == "panel" and spec["columns"] == 2
    assert "layer" in spec["spec"] and "layer" not in spec
    assert spec["resolve"]["scale"] == {"x": "independent", "y": "independent"}


def test_nice_ticks() -> None:
    assert nice_ticks(0.0, 10.0) == [0.0, 5.0, 10.0]
    assert nice_ticks(13.0, 47.0) == [20.0, 30.0, 40.0]
    assert nice_ticks(3.0, 3.0) == [3.0]


def test_frontier_svg_marks_front_and_tooltips() -> None:
    svg = frontier_svg(demo_points("model"), MEM, PPL, D, title="t")
    assert svg.count("<svg") == 2  # one panel per model
    assert svg.count('class="point front"') == 3
    assert svg.count('class="point"') == 1
    assert "w(bits=4)+kv(bits=2)" in svg and "dominated" in svg
    assert svg.count("<polyline") == 1  # m1 has a 2-point front; m2 a single point


# --- read-only loaders on a real database ----------------------------------------------------


def test_loaders_read_demo_db(tmp_path: Path) -> None:
    demo = fill_demo_db(f"sqlite:///{tmp_path / 'bench.db'}")
    digest = hashlib.sha256((tmp_path / "bench.db").read_bytes()).hexdigest()

    snapshot = load_snapshot(demo.url)
    assert snapshot.runs["id"].tolist() == demo.run_ids
    assert len(snapshot.cells) == 2 * 2 * 8  # latest of 2 machines × 2 models × 8 stacks
    assert set(snapshot.cells["run_id"]) == {2, 3}
    assert set(snapshot.cells["machine"]) == {"laptop", "gpu-node"}
    assert set(snapshot.defs) == {d.name for d in DEFS}
    assert isinstance(snapshot.defs[MEM], MetricDef)

    table = leaderboard(snapshot.cells, "smollm2-135m", "cpu", WORKLOAD_LABEL, [TPOT, MEM], defs=D)
    deltas = dict(zip(table["technique"], table[MEM + DELTA_SUFFIX], strict=True))
    assert deltas["weight-quant(bits=4)"] == pytest.approx(expected_delta("smollm2-135m", 3, MEM))

    run = run_detail(demo.url, 3)
    assert run["hostname"] == "gpu-node" and run["gpu"] == "NVIDIA H100 80GB HBM3"
    assert run["environment"]["libraries"]["torch"] == "2.13.0"
    assert run_detail(demo.url, 99) == {}

    key = snapshot.cells.loc[snapshot.cells["status"] == "skipped", "cell_key"].iloc[0]
    run_id = int(snapshot.cells.loc[snapshot.cells["cell_key"] == key, "run_id"].iloc[0])
    cell, metrics = cell_detail(demo.url, run_id, key)
    assert cell["status"] == "skipped" and cell["reason"].startswith("needs CUDA")
    assert metrics.empty

    ok_key = snapshot.cells.loc[snapshot.cells["technique"] == "baseline", "cell_key"].iloc[0]
    ok_run = int(snapshot.cells.loc[snapshot.cells["cell_key"] == ok_key, "run_id"].iloc[0])
    _, metrics = cell_detail(demo.url, ok_run, ok_key)
    rows = metrics.set_index("name")
    assert rows.loc["energy.j_per_token", "reason"].startswith("no energy meter")
    assert math.isnan(rows.loc["energy.j_per_token", "value"])
    assert rows.loc[TPOT, "n"] == 5 and rows.loc[TPOT, "source"] == "perf_counter"
    assert rows.loc[TPOT, "ci_low"] < rows.loc[TPOT, "value"] < rows.loc[TPOT, "ci_high"]

    # Nothing above wrote to the database.
    assert hashlib.sha256((tmp_path / "bench.db").read_bytes()).hexdigest() == digest


def test_dashboard_imports_neither_torch_nor_plugins() -> None:
    code = (
        "import sys\n"
        "import dashboard, dashboard.pareto, dashboard.queries, dashboard.charts, dashboard.svg\n"
        "import dashboard.data, dashboard.report, dashboard.launch\n"
        "import dashboard.views.common, dashboard.views.leaderboard, dashboard.views.frontier\n"
        "import dashboard.views.compare, dashboard.views.detail\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'plugins'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_leaderboard_deltas_match_bench_export(tmp_path: Path) -> None:
    """Δ% on the Leaderboard = (stack / baseline − 1) × 100, recomputed from `bench export`."""
    demo = fill_demo_db(f"sqlite:///{tmp_path / 'bench.db'}")
    snapshot = load_snapshot(demo.url)
    table = leaderboard(snapshot.cells, "smollm2-135m", "cpu", WORKLOAD_LABEL, [TPOT, MEM], defs=D)
    (run_id,) = set(table["run_id"])
    csv = tmp_path / "export.csv"
    bench = [sys.executable, "-m", "harness", "export", "--db", demo.url, "--format", "csv"]
    done = subprocess.run(
        [*bench, "--run", str(run_id), "-o", str(csv)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    exported = pd.read_csv(csv)
    exported = exported[(exported["model"] == "smollm2-135m") & (exported["device"] == "cpu")]
    exported = exported.set_index("technique")
    checked = 0
    for row in table.to_dict("records"):
        for metric in (TPOT, MEM):
            value, base = exported.loc[row["technique"], metric], exported.loc["baseline", metric]
            shown = row[metric + DELTA_SUFFIX]
            if math.isnan(value):
                assert math.isnan(shown)
                continue
            assert shown == pytest.approx((value / base - 1) * 100, rel=1e-9)
            checked += 1
    assert checked >= 10
