"""``bench compare`` end to end on stored results: sides, formats and exit codes."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from harness.calibration import PARTS
from harness.cli import main
from harness.compare_sides import resolve_run, resolve_runs
from harness.errors import BenchError
from harness.results import CellResult, MetricDef, Value
from harness.store import Store

TPOT, PEAK = "latency.tpot_s", "memory.peak_alloc_bytes"
DEFS = [
    MetricDef(TPOT, "s", False, "time per output token"),
    MetricDef(PEAK, "bytes", False, "allocator peak"),
    MetricDef("throughput.decode_tok_s", "tok/s", True, "decode throughput"),
]
WORKLOAD = {"name": "generate", "params": {"prompt_tokens": 64, "new_tokens": 16}}


def fingerprint(transformers: str, text_sha: str = "2" * 64) -> dict[str, Any]:
    return {
        "version": 1,
        "model": {"id": "smollm2-135m", "dtype": "auto", "sha256": "1" * 64},
        "workload": {
            **WORKLOAD,
            "texts": {"shakespeare": {"prompt": {"sha256": text_sha}}},
            "inputs": {"prompt_ids_sha256": text_sha},
        },
        "stack": [{"name": "baseline", "config": {}}],
        "device": {"name": "cpu", "kind": "cpu"},
        "software": {"transformers": transformers},
    }


def cell(
    tpots: list[float],
    peak: float,
    fp: dict[str, Any],
    key: str = "k1",
    technique: str = "baseline",
) -> CellResult:
    ordered = sorted(tpots)
    median = statistics.median(tpots)
    values = (
        Value(
            TPOT, median, "s", ordered[0], ordered[-1], len(tpots), "clock", samples=tuple(tpots)
        ),
        Value(PEAK, peak, "bytes", source="weights+torch-profiler"),
    )
    return CellResult(
        key=key,
        model="smollm2-135m",
        device="cpu",
        technique=technique,
        stack=({"name": technique, "config": {}},),
        workload=WORKLOAD,
        status="ok",
        reason=None,
        started_at=1_750_000_000.0,
        duration_s=3.0,
        values=values,
        reference=True,
        fingerprint=fp,
    )


def record(url: str, suite: str, commit: str, transformers: str, *cells: CellResult) -> int:
    with Store.open(url) as store:
        store.save_metric_defs(DEFS)
        machine = store.ensure_machine(
            "fp", {"hostname": "vm", "cpu": "EPYC", "cpu_count": 2, "ram_bytes": 2**33}
        )
        run = store.start_run(
            suite_name=suite,
            suite_path=f"suites/{suite}.yaml",
            suite_hash="0" * 64,
            machine_id=machine,
            harness_version="0.1.0",
            git_commit=commit,
            environment={"python": "3.11.7", "transformers": transformers},
        )
        for c in cells:
            store.record(run, c)
        store.finish_run(run)
    return run


@pytest.fixture
def url(tmp_path: Path) -> str:
    """Runs 1-3 of suite ``smoke``: 2 is 1 again on transformers 5.24.0, 3 is 10% slower
    in TPOT and 0.5% larger in peak memory; run 4 (suite ``other``) used another text."""
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    steady = [0.0500, 0.0502, 0.0498, 0.0501, 0.0499, 0.0500]
    record(url, "smoke", "aaaa111", "5.23.0", cell(steady, 1000.0, fingerprint("5.23.0")))
    record(url, "smoke", "bbbb222", "5.24.0", cell(steady, 1000.0, fingerprint("5.24.0")))
    slower = [t * 1.10 for t in steady]
    record(url, "smoke", "cccc333", "5.24.0", cell(slower, 1005.0, fingerprint("5.24.0")))
    other = fingerprint("5.24.0", text_sha="9" * 64)
    record(url, "other", "cccc333", "5.24.0", cell(steady, 1000.0, other, key="k9"))
    return url


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(["compare", *args])
    out = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 0), out.out, out.err


def test_unchanged_run_exits_0_and_names_what_differs(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out, _ = bench(capsys, "1", "2", "--db", url, "--fail-on", f"{TPOT}:+5%,{PEAK}:+1%")
    assert code == 0
    assert "transformers 5.23.0 → 5.24.0" in out
    assert "git commit aaaa111 → bbbb222" in out
    assert "2 unchanged" in out


def test_regression_beyond_the_gate_exits_1(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = bench(capsys, "smoke~1", "smoke", "--db", url, "--fail-on", f"{TPOT}:+5%")
    assert code == 1
    assert f"FAIL: {TPOT} regressed" in err
    assert "1.100" in err
    assert "regressed" in out


def test_regression_within_the_gate_exits_0(capsys: pytest.CaptureFixture[str], url: str) -> None:
    # TPOT +10% is inside a ±15% band (unchanged), peak +0.5% inside ±1%.
    code, _, err = bench(capsys, "2", "3", "--db", url, "--fail-on", f"{TPOT}:+15%,{PEAK}:+1%")
    assert (code, err) == (0, "")
    # ... and the peak's +0.5% fails a tighter gate: an exact count changed beyond it
    code, _, err = bench(capsys, "2", "3", "--db", url, "--fail-on", f"{PEAK}:+0.2%")
    assert code == 1 and f"FAIL: {PEAK} regressed" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1", "99"], "CANDIDATE '99': no run 99."),
        (["1", "nosuch"], "CANDIDATE 'nosuch': no run matches"),
        (["smoke~5", "smoke"], "only 3 run(s) match 'smoke'"),
        (["1", "2", "--fail-on", "latency.tpot_ms:+5%"], "Did you mean 'latency.tpot_s'?"),
        (["1", "2", "--fail-on", "throughput.decode_tok_s:+5%"], "write throughput.decode"),
        (["1", "2", "--threshold", "5"], "--threshold: '5' is not a percentage"),
        (["1", "4"], "no comparable cell in common (1 with other inputs"),
    ],
)
def test_bad_input_exits_2_with_the_fix(
    capsys: pytest.CaptureFixture[str], url: str, args: list[str], message: str
) -> None:
    code, _, err = bench(capsys, *args, "--db", url)
    assert code == 2
    assert message in err
    assert err.startswith("ERROR: ")


def test_json_output(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = bench(capsys, "2", "3", "--db", url, "--format", "json", "--seed", "3")
    assert code == 0
    document = json.loads(out)
    rows = {r["metric"]: r for r in document["rows"]}
    assert rows[TPOT]["verdict"] == "regressed"
    assert rows[TPOT]["ratio"] == pytest.approx(1.10)
    assert rows[TPOT]["method"] == "bootstrap"
    assert 1.05 < rows[TPOT]["ci_low"] < 1.10 < rows[TPOT]["ci_high"] < 1.15
    assert rows[PEAK]["method"] == "exact" and rows[PEAK]["verdict"] == "unchanged"
    assert document["method"]["bootstrap"] == {"resamples": 10000, "seed": 3}
    assert document["counts"]["regressed"] == 1
    assert document["differences"] == [
        {
            "field": "software.git_commit",
            "name": "git commit",
            "base": "bbbb222",
            "candidate": "cccc333",
        }
    ]


def test_markdown_output_for_a_pull_request(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = bench(capsys, "1", "3", "--db", url, "--format", "markdown")
    assert code == 0
    assert out.startswith("### bench compare: run 1 (smoke")
    assert "| cell | metric | base | candidate | ratio | 95% CI | verdict |" in out
    assert "🔴 regressed" in out
    assert "<details><summary>1 unchanged</summary>" in out
    assert "transformers 5.23.0 → 5.24.0" in out


def test_one_sided_and_mismatched_cells_are_listed(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    extra = cell([0.05] * 6, 1000.0, fingerprint("5.24.0"), key="k2")
    extra = CellResult(**{**extra.__dict__, "technique": "precision(dtype=bf16)"})
    record(
        url, "smoke", "dddd444", "5.24.0", cell([0.05] * 6, 1000.0, fingerprint("5.24.0")), extra
    )
    code, out, _ = bench(capsys, "3", "5", "--db", url)
    assert code == 0
    assert "only in candidate: smollm2-135m · cpu · precision(dtype=bf16)" in out


def test_base_from_another_database(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    main_url = f"sqlite:///{tmp_path / 'main.db'}"
    record(main_url, "smoke", "eeee555", "5.23.0", cell([0.05] * 6, 1000.0, fingerprint("5.23.0")))
    code, out, _ = bench(capsys, "smoke", "3", "--base-db", main_url, "--db", url)
    assert code == 0
    assert "git commit eeee555 → cccc333" in out


def test_sides_by_commit_environment_and_version(url: str) -> None:
    with Store.open(url, read_only=True) as store:
        records = store.run_records()
    assert resolve_run(records, "commit:bbbb", "BASE")["id"] == 2
    assert resolve_run(records, "cccc333", "BASE")["id"] == 4  # the latest with that commit
    assert resolve_run(records, "transformers=5.23.0", "BASE")["id"] == 1
    assert resolve_run(records, "transformers=5.24.0~1", "BASE")["id"] == 3
    assert resolve_run(records, "latest", "BASE")["id"] == 4
    assert resolve_run(records, "suite:smoke", "BASE")["id"] == 3
    assert resolve_run(records, "0.1.0", "BASE")["id"] == 4
    assert resolve_run(records, "#2", "BASE")["id"] == 2
    with pytest.raises(BenchError, match="a side is a run id"):
        resolve_run(records, "transformers=9", "BASE")


def test_several_runs_a_side(capsys: pytest.CaptureFixture[str], url: str) -> None:
    # Runs 1 and 2 measured the same TPOT, 3 measured it 10% slower: with runs 1 and 2 as the
    # base, the spread between runs is tiny, so the slowdown is still a regression; with
    # runs 1 and 3 as the base (10% apart), run 2 against them is inconclusive.
    code, out, _ = bench(capsys, "1,2", "3", "--db", url, "--format", "json")
    rows = {r["metric"]: r for r in json.loads(out)["rows"]}
    assert rows[TPOT]["method"] == "runs" and rows[TPOT]["verdict"] == "regressed"
    assert rows[TPOT]["ratio"] == pytest.approx(1.10)
    assert rows[PEAK]["method"] == "exact"
    code, out, _ = bench(capsys, "1,3", "2", "--db", url, "--format", "json")
    base = {r["metric"]: r for r in json.loads(out)["rows"]}[TPOT]["base"]
    assert base["value"] == pytest.approx(math.sqrt(base["runs"][0] * base["runs"][1]))
    assert base["value"] != pytest.approx(base["runs"][0])  # the runs' mean, not run 1's
    code, out, _ = bench(capsys, "1,3", "2", "--db", url)
    assert code == 0 and "run 1 (smoke" in out and "and runs 3" in out
    assert "inconclusive" in out and "more runs" in out
    with Store.open(url, read_only=True) as store:
        records = store.run_records()
    assert [r["id"] for r in resolve_runs(records, "smoke,smoke~1", "BASE")] == [3, 2]
    with pytest.raises(BenchError, match="names run 3 twice"):
        resolve_runs(records, "3,smoke", "BASE")


def test_timings_relative_to_the_machine(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The candidate's machine was 10% slower (its calibration took ×1.1) and so was TPOT:
    # as measured (the default), TPOT regressed; relative to the machine nothing changed.
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    steady = [0.0500, 0.0502, 0.0498, 0.0501, 0.0499, 0.0500]
    for commit, slower in (("aaaa111", 1.0), ("bbbb222", 1.1)):
        fp = fingerprint("5.24.0")
        fp["host"] = {"calibration": dict.fromkeys(PARTS, 0.01 * slower)}
        tpots = [t * slower for t in steady]
        cells = [cell(tpots, 1000.0, fp, key=f"{commit}{i}", technique=f"s{i}") for i in range(2)]
        record(url, "smoke", commit, "5.24.0", *cells)
    gate = ("--fail-on", "latency.tpot_s:+5%")
    code, out, err = bench(capsys, "1", "2", "--db", url, *gate)
    assert code == 1 and "FAIL: latency.tpot_s regressed" in err  # as measured
    assert "calibration ×1.100" in out and "--machine-relative: relative to it" in out
    relative = ("--machine-relative",)
    code, out, _ = bench(capsys, "1", "2", "--db", url, *relative, *gate)
    assert code == 0 and "4 unchanged" in out and "ratio ÷ speed" in out
    code, out, _ = bench(capsys, "1", "2", "--db", url, *relative, "--format", "json")
    document = json.loads(out)
    assert document["calibration"]["ratio"] == pytest.approx(1.1)
    assert document["calibration"]["timings_relative"] is True
    rows = [r for r in document["rows"] if r["metric"] == TPOT]
    assert [r["relative_to_machine"] for r in rows] == [True, True]
    assert [r["ratio"] for r in rows] == [pytest.approx(1.0)] * 2
