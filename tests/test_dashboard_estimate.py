"""Measured vs predicted (issue 14): the dashboard's estimate page, its frames and charts,
``bench results --predicted``; and (issue 18) every user-supplied string shown as written
on every page.

The database is real (``Store.record``); the predictions are the ones a cell stores
(``estimate.*``), the roofline numbers come from ``harness.derive.roofline_values``.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from test_dashboard_app import APP, TIMEOUT_S, texts

from dashboard.data import load_snapshot
from dashboard.estimates import (
    attainable,
    boundary_frame,
    prediction_frame,
    roof_line,
    roofline_points,
    roofs,
)
from dashboard.views.common import plain
from dashboard.views.estimate import NO_ESTIMATE, shown
from harness import derive
from harness.metrics import register_metrics
from harness.results import CellResult, Value
from harness.store import Store

ROOT = Path(__file__).resolve().parent.parent
BENCH = str(ROOT / ".venv" / "bin" / "bench")
MiB = 2**20
GENERATE = {"name": "generate", "params": {"prompt_tokens": 128, "new_tokens": 16}}
BOUNDARY = {"name": "boundary", "params": {"axis": "max_batch_size", "up_to": 1024}}
EVIL = "<script>alert(1)</script>![x](http://evil.example/x.png)"

#: baseline's measured and predicted numbers
MEASURED = {"latency.ttft_s": 0.200, "latency.tpot_s": 0.050, "memory.peak_alloc_bytes": 500 * MiB}
PREDICTED = {
    "estimate.peak_bytes": 480 * MiB,
    "estimate.prefill_s": 0.1,
    "estimate.decode_s": 0.04,
    "estimate.prefill_ops": 4e10,
    "estimate.prefill_bytes": 1e9,
    "estimate.decode_ops": 3e8,
    "estimate.decode_bytes": 5e8,
    "estimate.roof_flops": 1e11,
    "estimate.roof_bytes_s": 1e10,
}


def _values(numbers: Mapping[str, float | None], reason: str | None = None) -> dict[str, Value]:
    out = {}
    for name, number in numbers.items():
        unit = "s" if name.endswith("_s") else "bytes"
        timed = name.startswith("latency.") and number is not None
        low, high = (number * 0.98, number * 1.02) if timed and number else (None, None)
        out[name] = Value(name, number, unit, low, high, n=5 if timed else 1, reason=reason)
    return out


def _cell(key: str, technique: str, workload: dict[str, Any], values: dict[str, Value]) -> Any:
    return CellResult(
        key=key,
        model="smollm2-135m",
        device="cpu",
        technique=technique,
        stack=({"name": technique, "config": {}},),
        workload=workload,
        status="ok",
        reason=None,
        started_at=1.75e9,
        duration_s=2.0,
        values=tuple(values.values()),
        reference=technique == "baseline",
    )


def fill(url: str, *, boundary: bool = True, name: str = "baseline") -> None:
    """A baseline with its prediction, a plugin stack without one, and a boundary search."""
    with Store.open(url) as store:
        store.save_metric_defs(register_metrics())
        machine = store.ensure_machine(
            "m", {"hostname": "h", "cpu": "c", "cpu_count": 2, "ram_bytes": 2**34}
        )
        run = store.start_run(
            suite_name="estimates",
            suite_path="s.yaml",
            suite_hash="0" * 64,
            machine_id=machine,
            harness_version="0",
            git_commit=None,
            environment={},
        )
        known = _values({**MEASURED, **PREDICTED})
        known.update(derive.roofline_values(known))
        store.record(run, _cell("a", name, GENERATE, known))
        unknown = _values(MEASURED)
        none = {k: None for k in PREDICTED}
        unknown.update(_values(none, "no estimate: magnitude-prune defines no estimate()"))
        store.record(run, _cell("b", "magnitude-prune", GENERATE, unknown))
        if boundary:
            found = {
                "boundary.max_batch_size": Value("boundary.max_batch_size", 237.0, "sequences"),
                "boundary.predicted_max_batch_size": Value(
                    "boundary.predicted_max_batch_size", 377.0, "sequences"
                ),
                "boundary.probes": Value("boundary.probes", 7.0, "runs"),
            }
            store.record(run, _cell("c", name, BOUNDARY, found))
        store.finish_run(run)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = f"sqlite:///{tmp_path_factory.mktemp('db') / 'bench.db'}"
    fill(out)
    return out


def run_page(monkeypatch: pytest.MonkeyPatch, url: str, page: str) -> AppTest:
    monkeypatch.setenv("BENCH_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params["page"] = page
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ---------------------------------------------------------------- frames


def test_prediction_frame_is_measured_over_predicted(url: str) -> None:
    cells = load_snapshot(url).cells
    table = prediction_frame(cells).set_index("technique")
    base = table.loc["baseline"]
    assert base["peak MiB"] == 500 and base["peak MiB predicted"] == 480
    assert base["peak MiB ratio"] == pytest.approx(500 / 480)
    assert base["TTFT ms ratio"] == pytest.approx(0.2 / 0.1)
    assert base["TPOT ms ratio"] == pytest.approx(0.05 / 0.04)
    assert base["roofline.prefill_fraction"] == pytest.approx(0.1 / 0.2)
    assert base["roofline.decode_fraction"] == pytest.approx(0.04 / 0.05)
    plugin = table.loc["magnitude-prune"]
    assert plugin["TPOT ms"] == pytest.approx(50)  # measured, but no prediction
    assert math.isnan(plugin["TPOT ms predicted"]) and math.isnan(plugin["TPOT ms ratio"])
    assert "boundary" not in " ".join(table["workload"])


def test_missing_numbers_are_said_never_zero(url: str) -> None:
    table = shown(prediction_frame(load_snapshot(url).cells)).set_index("technique")
    plugin = table.loc["magnitude-prune"]
    assert plugin["TPOT ms predicted"] == NO_ESTIMATE and plugin["TPOT ms ratio"] == NO_ESTIMATE
    assert plugin["roofline.decode_fraction"] == NO_ESTIMATE and plugin["TPOT ms"] == "50"


def test_roofline_points_and_roofs(url: str) -> None:
    cells = load_snapshot(url).cells
    points = roofline_points(cells).set_index("phase")
    assert len(points) == 2  # the plugin stack has no prediction: no point
    assert points.loc["prefill", "intensity"] == pytest.approx(4e10 / 1e9)
    assert points.loc["prefill", "flops"] == pytest.approx(4e10 / 0.2)
    assert points.loc["decode", "intensity"] == pytest.approx(3e8 / 5e8)
    assert points.loc["decode", "flops"] == pytest.approx(3e8 / 0.05)
    (roof,) = roofs(cells).itertuples(index=False)
    assert (roof.device, roof.roof_flops, roof.roof_bytes_s, roof.ridge) == ("cpu", 1e11, 1e10, 10)


def test_the_roof_is_the_lower_of_compute_and_bandwidth() -> None:
    assert attainable(1.0, 1e11, 1e10) == 1e10  # memory-bound: intensity × bandwidth
    assert attainable(10.0, 1e11, 1e10) == 1e11  # the ridge
    assert attainable(1000.0, 1e11, 1e10) == 1e11  # compute-bound: flat
    roof = type("Roof", (), {"roof_flops": 1e11, "roof_bytes_s": 1e10, "ridge": 10.0})()
    line = roof_line(roof, 0.1, 1000.0)
    assert line == [
        {"intensity": 0.1, "flops": 1e9},
        {"intensity": 10.0, "flops": 1e11},
        {"intensity": 1000.0, "flops": 1e11},
    ]


def test_boundary_frame(url: str) -> None:
    (row,) = boundary_frame(load_snapshot(url).cells).itertuples(index=False)
    assert (row.technique, row.axis, row.measured, row.predicted, row.probes) == (
        "baseline",
        "max_batch_size",
        237,
        377,
        7,
    )


# ---------------------------------------------------------------- the page


def test_estimate_page_shows_the_table_the_roofline_and_the_boundary(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    at = run_page(monkeypatch, url, "estimate")
    assert at.title[0].value == "Measured vs predicted"
    table, boundary = (e.value for e in at.dataframe)
    base = table.set_index("technique").loc["baseline"]
    assert base["peak MiB ratio"] == f"{500 / 480:.4g}"
    assert table.set_index("technique").loc["magnitude-prune", "TTFT ms predicted"] == NO_ESTIMATE
    assert list(boundary["measured"]) == ["237"] and list(boundary["predicted"]) == ["377"]
    roofline, bars = (json.loads(e.proto.spec) for e in at.get("vega_lite_chart"))
    line, dots = roofline["layer"]
    assert {"intensity": 10.0, "flops": 1e11, "device": "cpu"} in line["data"]["values"]
    assert sorted(p["phase"] for p in dots["data"]["values"]) == ["decode", "prefill"]
    assert bars["title"].startswith("max_batch_size: largest value that ran")


def test_without_a_search_the_page_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    fill(url, boundary=False)
    at = run_page(monkeypatch, url, "estimate")
    assert "search: {max_prompt_tokens: {up_to: 32768}}" in texts(at.info)


def test_bench_results_predicted(url: str) -> None:
    done = subprocess.run(
        [BENCH, "results", "--predicted", "--db", url], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "│" in line]
    base = next(line for line in lines if "baseline" in line)
    cells = [c.strip() for c in base.split("│")[1:-1]]
    assert cells[2:5] == ["500", "480", f"{500 / 480:.3f}"]  # peak MiB, predicted, ratio
    assert cells[5:8] == ["200", "100", "2.000"]  # TTFT ms
    assert cells[-2:] == ["0.500", "0.800"]  # roofline fractions
    assert done.stdout.count("no estimate") == 5  # the plugin: 3 predictions, 2 fractions


# ---------------------------------------------------------------- hostile strings


def test_plain_makes_markdown_literal() -> None:
    assert plain("<b>a_b</b> ![x](y) gpu-node") == r"\<b\>a\_b\</b\> !\[x\](y) gpu-node"


@pytest.mark.parametrize("page", ["leaderboard", "frontier", "compare", "estimate", "detail"])
def test_user_strings_are_shown_as_written_on_every_page(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, page: str
) -> None:
    url = f"sqlite:///{tmp_path / 'evil.db'}"
    fill(url, name=EVIL)
    with Store.open(url) as store:  # a second run, so the compare page has two
        run = store.start_run(
            suite_name=EVIL,
            suite_path=EVIL,
            suite_hash="1" * 64,
            machine_id=store.ensure_machine(
                EVIL, {"hostname": EVIL, "cpu": EVIL, "cpu_count": 2, "ram_bytes": 2**34}
            ),
            harness_version=EVIL,
            git_commit=EVIL,
            environment={"note": EVIL},
        )
        store.record(run, _cell("d", EVIL, GENERATE, _values(MEASURED)))
        store.finish_run(run)
    at = run_page(monkeypatch, url, page)
    markdown = [
        *at.markdown,
        *at.caption,
        *at.info,
        *at.warning,
        *at.error,
        *at.success,
        *at.title,
        *at.subheader,
    ]
    for element in markdown:  # raw markdown strings: user text only escaped
        assert EVIL not in str(element.value), (page, element.value)
        assert not re.search(r"(?<!\\)<script", str(element.value)), element.value
        assert "![x](" not in str(element.value)
    assert not any(getattr(e.proto, "allow_html", False) for e in at.markdown)
    for element in at.get("vega_lite_chart"):  # Vega-Lite draws data as text, never HTML
        assert "<script" not in json.dumps(json.loads(element.proto.spec).get("title", ""))
