"""Page logic of the Streamlit app (dashboard/app.py), run by streamlit's AppTest against a
real SQLite database filled through Store.record."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from dashboard_db import WORKLOAD_LABEL, expected_delta, fill_demo_db
from streamlit.testing.v1 import AppTest

from dashboard.pareto import pareto_front
from harness.store import Store

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
TPOT, MEM, PPL = "latency.tpot_s", "memory.peak_alloc_bytes", "accuracy.perplexity"
TIMEOUT_S = 60  # first runs import pandas/sqlalchemy; generous for 2 slow cores


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fill_demo_db(f"sqlite:///{tmp_path_factory.mktemp('db') / 'bench.db'}").url


def run_app(monkeypatch: pytest.MonkeyPatch, url: str, **query: str) -> AppTest:
    monkeypatch.setenv("BENCH_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements: Any) -> str:
    return "\n".join(str(e.value) for e in elements)


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    """The page's Vega-Lite specs; Streamlit moves inline data to an Arrow table, which is
    put back here as ``data.values``."""
    specs = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        table = pa.ipc.open_stream(element.proto.data.data).read_all().to_pandas()
        spec["data"] = {"values": table.to_dict(orient="records")}
        specs.append(spec)
    return specs


def frames_by_columns(at: AppTest) -> dict[str, pd.DataFrame]:
    """The page's tables by their first column name."""
    return {str(e.value.columns[0]): e.value for e in at.dataframe}


def widget(elements: Any, label: str) -> Any:
    matches = [e for e in elements if e.label == label]
    assert len(matches) == 1, f"{label!r} in {[e.label for e in elements]}"
    return matches[0]


# --- empty and broken databases --------------------------------------------------------------


def test_empty_database_names_the_command_that_fills_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store.open(url).close()  # creates the schema, no runs
    for page in ("leaderboard", "frontier", "compare", "detail"):
        at = run_app(monkeypatch, url, page=page)
        assert "bench run suites/smoke.yaml" in texts(at.info)
        assert not at.dataframe


def test_missing_database_shows_error_and_fill_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.db"
    at = run_app(monkeypatch, f"sqlite:///{missing}")
    assert "nope.db" in texts(at.error)
    assert "bench run suites/smoke.yaml" in texts(at.info)
    assert not missing.exists()  # read-only: nothing was created


# --- leaderboard -----------------------------------------------------------------------------


def test_leaderboard_deltas_equal_independent_computation(
    monkeypatch: pytest.MonkeyPatch, demo_url: str
) -> None:
    at = run_app(monkeypatch, demo_url)
    assert [t.value for t in at.title] == ["Leaderboard"]
    assert widget(at.selectbox, "Model").value == "smollm2-135m"
    assert widget(at.selectbox, "Device").value == "cpu"
    page = at.dataframe[0].value.set_index("technique")

    with Store.open(demo_url, read_only=True) as store:
        cells = store.cells_frame()
    mine = cells[
        (cells["model"] == "smollm2-135m")
        & (cells["device"] == "cpu")
        & (cells["workload"] == WORKLOAD_LABEL)
    ].set_index("technique")
    assert sorted(page.index) == sorted(mine.index)
    for metric in (TPOT, MEM, PPL, "throughput.decode_tok_s"):
        base = mine.loc["baseline", metric]
        for technique, row in mine.iterrows():
            expected = 100.0 * (row[metric] - base) / base
            shown = page.loc[technique, f"{metric} Δ%"]
            if math.isnan(expected):
                assert math.isnan(shown), (technique, metric)
            else:
                assert shown == pytest.approx(expected, rel=1e-12), (technique, metric)
    # Values are shown in display units; the generating formula agrees too.
    assert page.loc["baseline", f"{TPOT} (ms)"] == pytest.approx(mine.loc["baseline", TPOT] * 1e3)
    assert page.loc["weight-quant(bits=4)", f"{MEM} Δ%"] == pytest.approx(
        expected_delta("smollm2-135m", 3, MEM)
    )
    assert page.loc["offload(target=cpu)", "status"] == "skipped"


def test_leaderboard_sort_filter_and_hide_failed(
    monkeypatch: pytest.MonkeyPatch, demo_url: str
) -> None:
    at = run_app(monkeypatch, demo_url)
    widget(at.selectbox, "Sort by").set_value(MEM)
    at.run()
    order = at.dataframe[0].value["technique"].tolist()
    assert order[:2] == ["weight-quant(bits=4)+kv-quant(bits=2)", "weight-quant(bits=4)"]
    assert order[-2:] == ["h2o(heavy_ratio=0.1)", "offload(target=cpu)"]  # no value: last
    widget(at.text_input, "Filter techniques").set_value("QUANT")
    widget(at.checkbox, "Failed and skipped").uncheck()
    at.run()
    table = at.dataframe[0].value
    assert set(table["status"]) == {"ok"}
    assert all("quant" in t for t in table["technique"])
    assert len(table) == 4
    assert widget(at.get("download_button"), "Download CSV")


def test_sidebar_run_filter_shows_that_run(monkeypatch: pytest.MonkeyPatch, demo_url: str) -> None:
    at = run_app(monkeypatch, demo_url)
    widget(at.sidebar.selectbox, "Results").set_value("1")
    at.run()
    table = at.dataframe[0].value.set_index("technique")
    assert set(table["run_id"]) == {1}
    # Run 1 has the unslowed baseline: kv-quant's TPOT is 12% above it.
    assert table.loc["kv-quant(bits=4)", f"{TPOT} Δ%"] == pytest.approx(12.0)


# --- frontier --------------------------------------------------------------------------------


def test_frontier_defaults_to_memory_and_tpot_vs_accuracy(
    monkeypatch: pytest.MonkeyPatch, demo_url: str
) -> None:
    at = run_app(monkeypatch, demo_url, page="frontier")
    assert [t.value for t in at.title] == ["Pareto frontier"]
    specs = chart_specs(at)
    assert len(specs) == 2
    assert specs[0]["title"] == f"{PPL} vs {MEM}"
    assert specs[1]["title"] == f"{PPL} vs {TPOT}"
    assert widget(at.radio, "Facet by").value == "model"  # two models in the data
    values = specs[0]["data"]["values"]
    assert len(values) == 2 * 2 * 6  # models × devices × ok stacks
    for panel in ("smollm2-135m", "smollm2-360m"):
        points = pd.DataFrame([v for v in values if v["panel"] == panel])
        expected = pareto_front(points, minimize=["x", "y"])
        assert points["on_front"].tolist() == expected.tolist()
        dominated = set(points.loc[~points["on_front"], "technique"])
        assert dominated == {"kv-quant(bits=4)"}
    assert specs[0]["spec"]["layer"][3]["encoding"]["opacity"]["value"] == pytest.approx(0.3)


def test_frontier_custom_axes_and_no_facet(monkeypatch: pytest.MonkeyPatch, demo_url: str) -> None:
    at = run_app(monkeypatch, demo_url, page="frontier")
    widget(at.radio, "Facet by").set_value("none")
    at.selectbox(key="pf_x0").set_value("throughput.decode_tok_s")
    at.selectbox(key="pf_y0").set_value(MEM)
    at.run()
    spec = chart_specs(at)[0]
    assert "facet" not in spec
    assert spec["layer"][3]["encoding"]["x"]["title"].endswith("higher is better)")
    front = {(v["technique"], v["device"]) for v in spec["data"]["values"] if v["on_front"]}
    # Fastest decoding (GPU baselines) and smallest memory (4-bit weights + 2-bit KV) survive.
    assert ("baseline", "cuda:0") in front
    assert ("weight-quant(bits=4)+kv-quant(bits=2)", "cuda:0") in front
    assert all(device == "cuda:0" for _, device in front)


def test_frontier_without_accuracy_falls_back_to_memory_vs_tpot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = fill_demo_db(f"sqlite:///{tmp_path / 'b.db'}", with_accuracy=False, gpu_run=False).url
    at = run_app(monkeypatch, url, page="frontier")
    specs = chart_specs(at)
    assert [s["title"] for s in specs] == [f"{TPOT} vs {MEM}"]
    assert "No accuracy metric" in texts(at.caption)


# --- compare ---------------------------------------------------------------------------------


def test_compare_two_runs_gives_verdicts(monkeypatch: pytest.MonkeyPatch, demo_url: str) -> None:
    at = run_app(monkeypatch, demo_url, page="compare")
    widget(at.multiselect, "Base runs").set_value([1])
    widget(at.multiselect, "Candidate runs").set_value([2])
    at.run()
    table = at.dataframe[0].value
    tpot = table[(table["metric"] == TPOT) & (table["model"] == "smollm2-135m")]
    rows = tpot.set_index("technique")
    # Run 2's baseline TPOT is 10% slower; both sides hold ±2% intervals (no samples), so
    # the ratio's 95% interval is [1.1·0.98/1.02, 1.1·1.02/0.98]: entirely beyond +2%. As
    # one of the rows beyond the band, it is judged again at the corrected level, its log
    # half-widths widened by z(level) / z(95%): still beyond.
    assert rows.loc["baseline", "ratio"] == pytest.approx(1.10)
    beyond, noisy = (
        int(n)
        for n in re.findall(r"The (\d+) rows beyond .* \(of (\d+) with", texts(at.caption))[0]
    )
    level = 1 - beyond * 0.05 / noisy
    widen = NormalDist().inv_cdf(0.5 + level / 2) / NormalDist().inv_cdf(0.975)
    assert rows.loc["baseline", "ci_low"] == pytest.approx(1.1 * (0.98 / 1.02) ** widen)
    assert rows.loc["baseline", "verdict"] == "regressed"
    # Unchanged stacks: ratio 1 with [0.98/1.02, 1.02/0.98] straddling ±2%: inconclusive.
    assert rows.loc["kv-quant(bits=4)", "ratio"] == pytest.approx(1.0)
    assert rows.loc["kv-quant(bits=4)", "verdict"] == "inconclusive"
    memory = table[(table["metric"] == MEM) & (table["technique"] == "baseline")]
    assert set(memory["verdict"]) == {"unchanged"}  # exact byte counts, equal
    summary = texts(at.markdown)
    # Both models' baseline TPOT and decode throughput got worse beyond the band.
    assert "**4** regressed" in summary
    assert "git commit" not in summary  # the demo runs share their commit
    (chart,) = chart_specs(at)
    assert chart["title"].startswith(f"{TPOT}: candidate / base")
    widget(at.multiselect, "Verdicts").set_value(["regressed"])
    at.run()
    assert set(at.dataframe[0].value["verdict"]) == {"regressed"}


def test_compare_asks_for_each_run_on_one_side(
    monkeypatch: pytest.MonkeyPatch, demo_url: str
) -> None:
    at = run_app(monkeypatch, demo_url, page="compare")
    widget(at.multiselect, "Base runs").set_value([1, 2])
    widget(at.multiselect, "Candidate runs").set_value([2])
    at.run()
    assert "pick each run for one side only" in texts(at.warning)
    assert not at.dataframe
    widget(at.multiselect, "Candidate runs").set_value([])
    at.run()
    assert "at least one run a side" in texts(at.info)


def test_compare_two_runs_on_different_devices(
    monkeypatch: pytest.MonkeyPatch, demo_url: str
) -> None:
    at = run_app(monkeypatch, demo_url, page="compare")  # defaults: the last two runs (2, 3)
    assert "different devices" in texts(at.caption)
    table = at.dataframe[0].value
    assert set(table["model"]) == {"smollm2-135m", "smollm2-360m"}
    ttft = table[(table["metric"] == "latency.ttft_s") & (table["technique"] == "baseline")]
    assert ttft["ratio"].tolist() == pytest.approx([0.15, 0.15])  # GPU run: 0.15×
    assert "machine laptop → gpu-node" in texts(at.markdown)


def test_compare_two_stacks(monkeypatch: pytest.MonkeyPatch, demo_url: str) -> None:
    at = run_app(monkeypatch, demo_url, page="compare")
    widget(at.radio, "Compare").set_value("Two stacks")
    at.run()
    assert widget(at.selectbox, "Stack A").value == "baseline"
    widget(at.selectbox, "Stack B").set_value("weight-quant(bits=4)")
    at.run()
    rows = at.dataframe[0].value.set_index("metric")
    assert rows.loc[MEM, "change_%"] == pytest.approx(expected_delta("smollm2-135m", 3, MEM))
    assert rows.loc[MEM, "better"] == True  # noqa: E712
    assert rows.loc[MEM, "significant"] is None or pd.isna(rows.loc[MEM, "significant"])


# --- run and cell detail ---------------------------------------------------------------------


def test_detail_shows_run_failures_and_cell_metrics(
    monkeypatch: pytest.MonkeyPatch, demo_url: str
) -> None:
    with Store.open(demo_url, read_only=True) as store:
        cells = store.cells_frame(run_id=2)
    base = cells[(cells["technique"] == "baseline") & (cells["model"] == "smollm2-360m")]
    key = base["cell_key"].iloc[0]
    at = run_app(monkeypatch, demo_url, page="detail", run="2", cell=key)
    assert [t.value for t in at.title] == ["Run and cell detail"]
    frames = frames_by_columns(at)
    assert frames["status"].values.tolist() == [["ok", 12], ["skipped", 2], ["error", 2]]
    failed = frames["model"]
    assert sorted(failed["status"]) == ["error", "error", "skipped", "skipped"]
    assert "needs CUDA" in " ".join(failed["reason"])
    metrics = frames["name"].set_index("name")
    assert metrics.loc[TPOT, "value [95% CI]"] == "52.8 ms [51.74, 53.86]"
    assert metrics.loc["energy.j_per_token", "reason"].startswith("no energy meter")
    assert "status `ok`" in texts(at.success)
    env = frames["key"].set_index("key")
    assert env.loc["libraries.torch", "value"] == "2.13.0"

    skipped = cells[(cells["status"] == "skipped")]["cell_key"].iloc[0]
    at.selectbox(key="cd_cell").set_value(skipped)
    at.run()
    assert "needs CUDA" in texts(at.warning)


def test_page_follows_sidebar_and_query_parameter(
    monkeypatch: pytest.MonkeyPatch, demo_url: str
) -> None:
    at = run_app(monkeypatch, demo_url, page="compare")
    assert [t.value for t in at.title] == ["Compare"]
    at.sidebar.radio(key="page").set_value("frontier")
    at.run()
    assert [t.value for t in at.title] == ["Pareto frontier"]
    assert at.query_params["page"] == "frontier"
    bogus = run_app(monkeypatch, demo_url, page="nonsense")
    assert [t.value for t in bogus.title] == ["Leaderboard"]


def test_importing_the_app_renders_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only Streamlit's run (the file as ``__main__``) renders; an import has no side effect."""
    import importlib
    import sys

    import streamlit as st

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(st, "set_page_config", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("BENCH_DB", f"sqlite:///{tmp_path / 'never-opened.db'}")
    monkeypatch.delitem(sys.modules, "dashboard.app", raising=False)
    app = importlib.import_module("dashboard.app")
    assert callable(app.main)
    assert calls == []
    assert not (tmp_path / "never-opened.db").exists()
