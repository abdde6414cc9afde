"""Bundles (harness/bundle.py): results exported from one database merge into another."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from harness.bundle import export_bundle, import_bundle, read_bundle
from harness.errors import StoreError
from harness.results import CellResult, MetricDef, Value
from harness.store import Store

ROOT = Path(__file__).resolve().parent.parent
MACHINE = {"hostname": "lab-gpu", "cpu": "EPYC", "cpu_count": 64, "ram_bytes": 1 << 40}
GPU = {**MACHINE, "gpu": "NVIDIA L40S", "gpu_count": 1, "driver": "550.54"}
AWKWARD = 0.1 + 0.2


def result(key: str, technique: str, tpot: float, *, reference: bool = False) -> CellResult:
    return CellResult(
        key=key,
        model="smollm2-135m",
        device="cuda:0",
        technique=technique,
        stack=({"name": technique, "config": {}},),
        workload={"name": "generate", "params": {"prompt_tokens": 128, "new_tokens": 32}},
        status="ok",
        reason=None,
        started_at=1_700_000_000.5,
        duration_s=2.25,
        values=(
            Value(
                "latency.tpot_s",
                tpot,
                "s",
                0.9 * tpot,
                1.1 * tpot,
                3,
                "clock",
                samples=(tpot, AWKWARD, float("nan")),
            ),
            Value("memory.weights_bytes", float(269_060_352), "bytes", source="tensors"),
            Value("energy.j_per_token", None, "J/token", reason="no energy meter"),
        ),
        reference=reference,
    )


def fill(url: str) -> None:
    """Two runs on a GPU machine: a reference and a quantized stack, then a failure."""
    with Store.open(url) as store:
        store.save_metric_defs([MetricDef("latency.tpot_s", "s", False, "time per token")])
        machine = store.ensure_machine("lab-fingerprint", GPU)
        for i, rows in enumerate(
            [
                [
                    result("k1", "baseline", 0.02, reference=True),
                    result("k2", "weight-quant", 0.01),
                ],
                [
                    CellResult(
                        "k3",
                        "smollm2-135m",
                        "cuda:0",
                        "kv-quant",
                        (),
                        {"name": "generate"},
                        "oom",
                        "CUDA out of memory",
                        1_700_000_100.0,
                        0.5,
                    )
                ],
            ]
        ):
            run = store.start_run(
                suite_name="inference",
                suite_path="suites/inference.yaml",
                suite_hash=f"{i}" * 64,
                machine_id=machine,
                harness_version="0.1.0",
                git_commit="abc123",
                environment={"torch": "2.13.0", "cuda": "12.8"},
            )
            for row in rows:
                store.record(run, row)
            store.finish_run(run)


def frames(url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store.open(url, read_only=True) as store:
        cells = store.cells_frame(with_ci=True).drop(columns=["run_id"])
        samples = store.samples_frame().drop(columns=["run_id"])
    return cells, samples


def bundle_roundtrip(source: str, target: str, tmp_path: Path) -> None:
    fill(source)
    path = tmp_path / "lab.tar.gz"
    with Store.open(source, read_only=True) as store:
        written = export_bundle(store, path, origin="lab-a")
    assert (written.runs, written.cells) == (2, 3)
    with Store.open(target) as store:
        first = import_bundle(store, path)
        second = import_bundle(store, path)
    assert (first.runs, first.cells, first.present) == (2, 3, 0)
    assert (second.runs, second.cells, second.present) == (0, 0, 3)  # twice adds nothing
    cells, samples = frames(target)
    want_cells, want_samples = frames(source)
    pd.testing.assert_frame_equal(cells, want_cells)  # every field, floats exact
    pd.testing.assert_frame_equal(samples, want_samples)
    assert samples["value"].tolist()[:2] == [0.02, AWKWARD] and math.isnan(samples["value"][2])
    with Store.open(target, read_only=True) as store:
        runs = store.runs_frame()
        assert runs["origin"].tolist() == ["lab-a", "lab-a"]
        assert runs["machine"].tolist() == ["lab-gpu", "lab-gpu"]
        assert runs["ended_at"].notna().all()
        assert store.metric_defs()["latency.tpot_s"].description == "time per token"
    # Results that came from the source go back without adding anything.
    back = tmp_path / "back.tar.gz"
    with Store.open(target, read_only=True) as store:
        export_bundle(store, back)
    with Store.open(source) as store:
        assert import_bundle(store, back).cells == 0
        assert store.runs_frame()["origin"].isna().all()  # measured there: no origin


def test_bundle_from_sqlite_into_postgresql_twice(db_url: str, pg_url: str, tmp_path: Path) -> None:
    bundle_roundtrip(db_url, pg_url, tmp_path)


def test_bundle_between_sqlite_files(db_url: str, tmp_path: Path) -> None:
    bundle_roundtrip(db_url, f"sqlite:///{tmp_path / 'team.db'}", tmp_path)


def test_bundle_documents(db_url: str, tmp_path: Path) -> None:
    fill(db_url)
    path = tmp_path / "one.tar.gz"
    with Store.open(db_url, read_only=True) as store:
        export_bundle(store, path, run_id=1, origin="one run")
        with pytest.raises(StoreError, match="no run with id 9"):
            export_bundle(store, tmp_path / "none.tar.gz", run_id=9)
    documents = read_bundle(path)
    manifest = documents["manifest"]
    assert manifest["format"] == "bench-bundle" and manifest["version"] == 1
    assert (manifest["runs"], manifest["cells"], manifest["origin"]) == (1, 2, "one run")
    run = documents["runs"][0]
    assert run["machine"]["fingerprint"] == "lab-fingerprint"
    assert run["environment"] == {"torch": "2.13.0", "cuda": "12.8"}
    assert len(run["uid"]) == 36
    metric = documents["cells"][0]["metrics"][1]
    assert metric["name"] == "latency.tpot_s" and metric["samples"][2] is None


def test_bad_bundles_are_refused(tmp_path: Path, db_url: str) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(StoreError, match=r"not a bench bundle.*bench export --bundle"):
        read_bundle(junk)
    newer = tmp_path / "newer.tar.gz"
    with tarfile.open(newer, "w:gz") as tar:
        for name, body in {
            "manifest.json": json.dumps({"format": "bench-bundle", "version": 99}),
            "metric_defs.json": "[]",
            "runs.jsonl": "",
            "cells.jsonl": "",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body.encode()))
    with pytest.raises(StoreError, match=r"newer than this bench's.*pip install -U bench"):
        read_bundle(newer)
    with Store.open(db_url) as store, pytest.raises(StoreError):
        import_bundle(store, newer)


def test_cli_export_bundle_and_import(db_url: str, tmp_path: Path) -> None:
    fill(db_url)
    target = f"sqlite:///{tmp_path / 'team.db'}"
    path = tmp_path / "out.tar.gz"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def bench(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env
        )

    done = bench("export", "--db", db_url, "--bundle", str(path), "--origin", "lab-a")
    assert done.returncode == 0, done.stderr
    assert "wrote 2 runs, 3 cells" in done.stdout
    for added in (3, 0):
        done = bench("import", str(path), "--db", target)
        assert done.returncode == 0, done.stderr
        assert f"imported {added} cells" in done.stdout
    done = bench("import", str(tmp_path / "missing.tar.gz"), "--db", target)
    assert done.returncode == 2 and done.stderr.startswith("ERROR: ")
