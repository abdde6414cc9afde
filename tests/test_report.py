"""Tests for dashboard.report: the static, self-contained HTML report."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dashboard_db import fill_demo_db
from headless_chromium import CHROMIUM, headless_flags

from dashboard import report
from dashboard.report import write_report
from harness.errors import BenchError, StoreError
from harness.store import Store

SPEC_RE = re.compile(r'<script type="application/json" id="spec-(\d+)">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fill_demo_db(f"sqlite:///{tmp_path_factory.mktemp('db') / 'bench.db'}").url


def has_vl_convert() -> bool:
    try:
        import vl_convert  # noqa: F401
    except ImportError:
        return False
    return True


def test_svg_report_is_self_contained(demo_url: str, tmp_path: Path) -> None:
    path = write_report(demo_url, tmp_path / "out" / "report.html", None, renderer="svg")
    assert path == tmp_path / "out" / "report.html"
    html = path.read_text()
    assert "<script" not in html and "<link" not in html and "src=" not in html
    # One workload, 2 default pairs (memory and TPOT vs perplexity), 4 model·device panels.
    assert html.count('<div class="svg-chart">') == 2
    assert html.count("<svg") == 2 * 4
    # Each panel draws its 6 ok stacks; 3 panels have kv-quant dominated on memory vs ppl.
    assert html.count("<circle") == 2 * 4 * 6
    assert "Leaderboard: smollm2-360m on cuda:0" in html
    assert html.count("<h3>Leaderboard") == 4
    assert "needs CUDA: offloading" in html  # skipped cells listed with their reason
    assert "accuracy.perplexity</td><td" in html  # metric definitions table
    assert 'class="better">(-71.6%)' in html  # weight-quant(bits=4) peak memory, 135m
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]  # no temp left


@pytest.mark.skipif(not has_vl_convert(), reason="vl-convert-python is not installed")
def test_vega_report_embeds_specs_and_libraries(demo_url: str, tmp_path: Path) -> None:
    html = write_report(demo_url, tmp_path / "report.html", None, renderer="vega").read_text()
    specs = {int(i): json.loads(text) for i, text in SPEC_RE.findall(html)}
    assert sorted(specs) == [1, 2]
    assert specs[1]["title"] == "Pareto frontier: accuracy.perplexity vs memory.peak_alloc_bytes"
    assert specs[1]["facet"]["title"] == "model · device"
    assert len(specs[1]["data"]["values"]) == 24
    assert html.count("vegaEmbed('#chart-") == 2
    assert html.count("<noscript>") == 2  # SVG fallback for viewers without scripts
    # The libraries are inline: the first script holds them; nothing outside it loads a URL.
    start = html.index("<script>")
    end = html.index("</script>", start)
    assert end - start > 500_000
    outside = html[:start] + html[end:]
    assert "src=" not in outside and "<link" not in outside


def test_report_of_one_run(demo_url: str, tmp_path: Path) -> None:
    html = write_report(demo_url, tmp_path / "r.html", 3, renderer="svg").read_text()
    assert "run #3 inference · gpu-node (NVIDIA H100 80GB HBM3)" in html
    assert "Leaderboard: smollm2-135m on cuda:0" in html
    assert "on cpu</h3>" not in html


def test_report_of_empty_database_names_the_fill_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store.open(url).close()
    with pytest.raises(BenchError, match=r"bench run suites/smoke\.yaml"):
        write_report(url, tmp_path / "r.html", None)
    assert not (tmp_path / "r.html").exists()


def test_report_of_unknown_run(demo_url: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no run with id 42"):
        write_report(demo_url, tmp_path / "r.html", 42)


def test_vega_renderer_without_vl_convert_is_an_error(
    demo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "vl_convert", None)  # import now raises ImportError
    report._vega_bundle.cache_clear()
    try:
        with pytest.raises(BenchError, match="vl-convert-python"):
            write_report(demo_url, tmp_path / "r.html", None, renderer="vega")
        html = write_report(demo_url, tmp_path / "r.html", None).read_text()  # auto → svg
        assert "<script" not in html and html.count("<svg") == 8
    finally:
        report._vega_bundle.cache_clear()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
@pytest.mark.skipif(not has_vl_convert(), reason="vl-convert-python is not installed")
def test_vega_report_renders_offline_in_chromium(demo_url: str, tmp_path: Path) -> None:
    path = write_report(demo_url, tmp_path / "report.html", None, renderer="vega")
    profile = tmp_path / "profile"
    out = subprocess.run(
        [
            str(CHROMIUM),
            *headless_flags(profile),
            "--virtual-time-budget=20000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    shutil.rmtree(profile, ignore_errors=True)
    dom = out.stdout
    assert out.returncode == 0, out.stderr[-2000:]
    # vega-embed replaced each empty chart div with a rendered SVG scene graph.
    assert dom.count('class="marks"') == 2, dom[:2000]
    assert "weight-quant+kv-quant" in dom  # legend entry drawn by Vega


def test_every_user_string_is_escaped_in_the_report(tmp_path: Path) -> None:
    """Suite, model, technique, reason, host name and environment carry markup: none of it
    reaches the page as markup (SVG renderer: the page has no script at all)."""
    from harness.results import CellResult, MetricDef, Value

    evil = "<script>alert(1)</script>"
    url = f"sqlite:///{tmp_path / 'evil.db'}"
    with Store.open(url) as store:
        store.save_metric_defs([MetricDef("latency.tpot_s", "s", False, "time per token")])
        machine = store.ensure_machine(
            "m", {"hostname": evil, "cpu": evil, "cpu_count": 2, "ram_bytes": 2**30}
        )
        run_id = store.start_run(
            suite_name=evil,
            suite_path=f"suites/{evil}.yaml",
            suite_hash="0" * 64,
            machine_id=machine,
            harness_version=evil,
            git_commit=evil,
            environment={"note": evil},
        )
        for status, reason in (("ok", evil), ("error", evil)):
            cell = CellResult(
                key=f"k-{status}",
                model=evil,
                device="cpu",
                technique=evil,
                stack=({"name": evil, "config": {"note": evil}},),
                workload={"name": "generate", "params": {"text": evil}},
                status=status,  # type: ignore[arg-type]
                reason=reason,
                started_at=1.0,
                duration_s=1.0,
                values=(Value("latency.tpot_s", 0.01, "s"),) if status == "ok" else (),
                reference=status == "ok",
            )
            store.record(run_id, cell)
        store.finish_run(run_id)
    html = write_report(url, tmp_path / "r.html", None, renderer="svg").read_text()
    assert "<script" not in html and "alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
