"""Tests of harness/store: the results database on SQLite files and on PostgreSQL."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from harness.errors import StoreError
from harness.results import CellResult, MetricDef, Value
from harness.store import Store, workload_label
from harness.store.connect import alembic_config, known_revisions
from harness.store.schema import Base, Cell, Metric, Run
from harness.store.store import hardware_key

ROOT = Path(__file__).resolve().parent.parent
MACHINE = {"hostname": "node1", "cpu": "AMD EPYC 7R13", "cpu_count": 2, "ram_bytes": 24 << 30}
GPU_MACHINE = {
    **MACHINE,
    "hostname": "gpu1",
    "gpu": "NVIDIA H100 80GB HBM3",
    "gpu_count": 1,
    "driver": "550.54",
}
T0 = 1_700_000_000.25  # unix time, s; exactly representable
AWKWARD = (0.1 + 0.2, 1 / 3, 1e-300, 123456789.123456789, -2.5e17)


def cell(
    key: str,
    status: Any = "ok",
    values: tuple[Value, ...] = (),
    *,
    reason: str | None = None,
    model: str = "smollm2-135m",
    batch_size: int = 1,
) -> CellResult:
    return CellResult(
        key=key,
        model=model,
        device="cpu",
        technique="weight-quant(bits=4)",
        stack=({"name": "weight-quant", "config": {"bits": 4, "group": [32, 64]}},),
        workload={
            "name": "generate",
            "params": {"prompt_tokens": 128, "new_tokens": 32, "batch_size": batch_size},
        },
        status=status,
        reason=reason,
        started_at=T0,
        duration_s=1.75,
        values=values,
    )


def ttft(value: float | None, **kw: Any) -> Value:
    return Value("latency.ttft_s", value, "s", **kw)


def new_run(store: Store, machine_id: int, suite: str = "smoke") -> int:
    return store.start_run(
        suite_name=suite,
        suite_path=f"suites/{suite}.yaml",
        suite_hash="ab" * 32,
        machine_id=machine_id,
        harness_version="0.1.0",
        git_commit=None,
        environment={"torch": "2.13.0", "transformers": "5.23.0"},
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "results" / "bench.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{db_path}") as opened:
        yield opened


def samples_roundtrip(store: Store) -> None:
    """Samples come back in the order measured, NaN as NaN; a retried cell replaces them."""
    machine = store.ensure_machine("s" * 64, MACHINE)
    run = new_run(store, machine, suite="samples")
    repeats = (0.25, AWKWARD[0], float("nan"), 1e-9)
    store.record(run, cell("k-s", values=(ttft(0.25, n=4, samples=repeats),)))
    frame = store.samples_frame(run_id=run)
    assert frame[["cell_key", "name", "position"]].values.tolist() == [
        ["k-s", "latency.ttft_s", i] for i in range(4)
    ]
    got = frame["value"].tolist()
    assert got[:2] == [0.25, AWKWARD[0]] and math.isnan(got[2]) and got[3] == 1e-9
    store.record(run, cell("k-s", values=(ttft(0.5, samples=(0.5, 0.75)),)))
    assert store.samples_frame(run_id=run)["value"].tolist() == [0.5, 0.75]
    assert store.samples_frame(suite="samples")["value"].tolist() == [0.5, 0.75]


def test_samples_roundtrip_sqlite(store: Store) -> None:
    samples_roundtrip(store)


def test_compare_reads(store: Store) -> None:
    """Run records, long-format metrics and fingerprints: what ``bench compare`` reads."""
    machine = store.ensure_machine("c" * 64, GPU_MACHINE)
    run = new_run(store, machine, suite="cmp")
    fingerprint = {"model": {"id": "smollm2-135m"}, "software": {"torch": "2.13.0"}}
    values = (ttft(0.25, ci_low=0.2, ci_high=0.3, n=5, source="clock"), ttft(None, reason="x"))
    store.record(run, replace(cell("k-a", values=values[:1]), fingerprint=fingerprint))
    store.record(run, cell("k-b", "skipped", reason="needs CUDA"))
    store.finish_run(run)
    (record,) = store.run_records()
    assert (record["id"], record["suite_name"], record["cells"]) == (run, "cmp", 2)
    assert (record["machine"], record["gpu"]) == ("gpu1", "NVIDIA H100 80GB HBM3")
    assert record["environment"] == {"torch": "2.13.0", "transformers": "5.23.0"}
    assert record["ended_at"] is not None and record["harness_version"] == "0.1.0"
    metrics = store.metrics_frame(run_id=run)
    assert metrics.values.tolist() == [
        ["k-a", "latency.ttft_s", 0.25, "s", 0.2, 0.3, 5, "clock", None]
    ]
    assert store.fingerprints(run_id=run) == {"k-a": fingerprint, "k-b": None}
    with pytest.raises(StoreError, match="no run with id 99"):
        store.metrics_frame(run_id=99)


def roundtrip(store: Store) -> None:
    """Record cells with nulls, reasons and CIs; read every field back exactly."""
    machine = store.ensure_machine("f" * 64, GPU_MACHINE)
    run = new_run(store, machine)
    results = [
        cell(
            "k-ok",
            values=(
                ttft(AWKWARD[0], ci_low=AWKWARD[1], ci_high=AWKWARD[3], n=5, source="clock"),
                Value("energy.j_per_token", None, "J/token", reason="no energy meter on cpu"),
                Value("memory.peak_alloc_bytes", float(3 << 40), "bytes", source="torch"),
            ),
        ),
        cell("k-err", "error", reason="RuntimeError: boom"),
        cell("k-skip", "skipped", (ttft(float("nan")),), reason="needs CUDA"),
    ]
    ids = [store.record(run, result) for result in results]
    assert len(set(ids)) == 3
    store.finish_run(run)

    frame = store.cells_frame(run_id=run, with_ci=True)
    assert list(frame.columns) == [
        *("run_id", "suite", "cell_key", "model", "device", "technique", "workload"),
        *("status", "reason", "reference"),
        *("energy.j_per_token", "energy.j_per_token.ci_low", "energy.j_per_token.ci_high"),
        *("latency.ttft_s", "latency.ttft_s.ci_low", "latency.ttft_s.ci_high"),
        *("memory.peak_alloc_bytes",),
        *("memory.peak_alloc_bytes.ci_low", "memory.peak_alloc_bytes.ci_high"),
    ]
    assert frame["cell_key"].tolist() == ["k-ok", "k-err", "k-skip"]
    assert frame["status"].tolist() == ["ok", "error", "skipped"]
    assert frame["run_id"].tolist() == [run] * 3
    assert frame["suite"].tolist() == ["smoke"] * 3
    assert set(frame["workload"]) == {"generate(batch_size=1,new_tokens=32,prompt_tokens=128)"}
    assert pd.isna(frame["reason"][0])
    assert frame["reason"][1:].tolist() == ["RuntimeError: boom", "needs CUDA"]
    ok = frame.iloc[0]
    assert ok["latency.ttft_s"] == AWKWARD[0]
    assert ok["latency.ttft_s.ci_low"] == AWKWARD[1]
    assert ok["latency.ttft_s.ci_high"] == AWKWARD[3]
    assert ok["memory.peak_alloc_bytes"] == 3 << 40
    assert math.isnan(ok["memory.peak_alloc_bytes.ci_low"])
    assert math.isnan(ok["energy.j_per_token"])
    assert frame["latency.ttft_s"][1:].isna().all()

    with Session(store.engine) as session:
        row = session.get(Cell, ids[0])
        assert row is not None
        assert row.stack == [{"name": "weight-quant", "config": {"bits": 4, "group": [32, 64]}}]
        assert row.workload == {
            "name": "generate",
            "params": {"prompt_tokens": 128, "new_tokens": 32, "batch_size": 1},
        }
        assert row.started_at == datetime.fromtimestamp(T0, tz=timezone.utc)
        assert row.duration_s == 1.75
        metrics = {m.name: m for m in row.metrics}
        assert (metrics["latency.ttft_s"].n, metrics["latency.ttft_s"].source) == (5, "clock")
        energy = metrics["energy.j_per_token"]
        assert (energy.value, energy.unit, energy.reason) == (
            None,
            "J/token",
            "no energy meter on cpu",
        )
        nan_row = session.scalars(select(Metric).where(Metric.cell_id == ids[2])).one()
        assert (nan_row.value, nan_row.reason) == (None, "value was NaN")
        run_row = session.get(Run, run)
        assert run_row is not None and run_row.ended_at is not None
        assert run_row.ended_at.tzinfo == timezone.utc
        assert run_row.environment == {"torch": "2.13.0", "transformers": "5.23.0"}


def test_workload_label() -> None:
    assert (
        workload_label(
            {
                "name": "generate",
                "params": {"prompt_tokens": 128, "new_tokens": 32, "batch_size": 1},
            }
        )
        == "generate(batch_size=1,new_tokens=32,prompt_tokens=128)"
    )
    assert (
        workload_label({"name": "perplexity", "params": {"text": "shakespeare", "ctx": [1, 2]}})
        == 'perplexity(ctx=[1,2],text="shakespeare")'
    )
    assert workload_label({"name": "train", "params": {}}) == "train"


def test_roundtrip_sqlite(store: Store) -> None:
    roundtrip(store)


def test_record_replaces_same_key_in_run(store: Store) -> None:
    machine = store.ensure_machine("m1", MACHINE)
    run = new_run(store, machine)
    store.record(run, cell("k", "error", (ttft(9.0), Value("x.old", 1.0, "1")), reason="first"))
    new_id = store.record(run, cell("k", "ok", (ttft(0.5),)))
    frame = store.cells_frame(run_id=run)
    assert frame[["cell_key", "status", "latency.ttft_s"]].values.tolist() == [["k", "ok", 0.5]]
    assert "x.old" not in frame.columns
    with Session(store.engine) as session:
        assert session.scalars(select(Cell.id)).all() == [new_id]
        assert session.scalars(select(Metric.name)).all() == ["latency.ttft_s"]


def test_record_refuses_bad_input(store: Store) -> None:
    machine = store.ensure_machine("m1", MACHINE)
    run = new_run(store, machine)
    with pytest.raises(StoreError, match=r"latency\.ttft_s reported more than once"):
        store.record(run, cell("k", values=(ttft(1.0), ttft(2.0))))
    with pytest.raises(StoreError, match="unknown status 'great'"):
        store.record(run, cell("k", "great"))
    with pytest.raises(StoreError, match="no run with id 99"):
        store.record(99, cell("k"))
    with pytest.raises(StoreError, match="no machine with id 42"):
        new_run(store, 42)
    with pytest.raises(StoreError, match=r"unknown keys \['colour'\]"):
        store.ensure_machine("m2", {**MACHINE, "colour": "red"})
    assert store.cells_frame(run_id=run).empty


def test_ensure_machine_upserts(store: Store) -> None:
    first = store.ensure_machine("m1", MACHINE)
    assert store.ensure_machine("m1", {**MACHINE, "hostname": "renamed"}) == first
    assert store.ensure_machine("m2", GPU_MACHINE) != first
    run = new_run(store, first)
    store.record(run, cell("k"))
    runs = store.runs_frame()
    assert runs[["machine", "gpu"]].values.tolist() == [["renamed", None]]


def test_done_keys_across_runs_and_machines(store: Store) -> None:
    a = store.ensure_machine("a", MACHINE)
    b = store.ensure_machine("b", GPU_MACHINE)
    run1 = new_run(store, a)
    store.record(run1, cell("k1"))
    store.record(run1, cell("k2", "error", reason="x"))
    run2 = new_run(store, a)
    store.record(run2, cell("k2"))
    store.record(run2, cell("k3", "skipped", reason="needs CUDA"))
    store.record(run2, cell("k4", "timeout", reason="600 s"))
    run3 = new_run(store, b)
    store.record(run3, cell("k5"))
    store.record(run3, cell("k1", "oom", reason="CUDA out of memory"))
    wanted = ["k1", "k2", "k3", "k4", "k5", "k6"]
    assert store.done_keys(a, wanted) == {"k1", "k2", "k3"}
    assert store.done_keys(b, wanted) == {"k5"}
    assert store.done_keys(a, []) == set()
    many = [f"other{i}" for i in range(1200)] + ["k3"]  # more keys than one IN (...) chunk
    assert store.done_keys(a, many) == {"k3"}


def test_cells_frame_latest_per_key_and_run_selection(store: Store) -> None:
    a = store.ensure_machine("a", MACHINE)
    b = store.ensure_machine("b", GPU_MACHINE)
    run1 = new_run(store, a)
    store.record(run1, cell("k1", values=(ttft(1.0),)))
    store.record(run1, cell("k2", "crashed", reason="worker died"))
    run2 = new_run(store, a)  # the same suite resumed: k2 again
    store.record(run2, cell("k2", values=(ttft(2.0),)))
    run3 = new_run(store, a, suite="training")
    store.record(run3, cell("k9", values=(Value("memory.optimizer_state_bytes", 8.0, "bytes"),)))
    run4 = new_run(store, b)  # another machine: its own row for k1
    store.record(run4, cell("k1", values=(ttft(0.25),)))

    latest = store.cells_frame()
    assert latest[["run_id", "cell_key", "status"]].values.tolist() == [
        [run1, "k1", "ok"],
        [run2, "k2", "ok"],
        [run3, "k9", "ok"],
        [run4, "k1", "ok"],
    ]
    assert latest["latency.ttft_s"].tolist()[:2] == [1.0, 2.0]
    assert latest["latency.ttft_s"].tolist()[3] == 0.25
    assert math.isnan(latest["latency.ttft_s"][2])
    assert latest["memory.optimizer_state_bytes"].tolist()[2] == 8.0

    smoke = store.cells_frame(suite="smoke")
    assert smoke["cell_key"].tolist() == ["k1", "k2", "k1"]
    assert "memory.optimizer_state_bytes" not in smoke.columns
    first = store.cells_frame(run_id=run1)
    assert first[["cell_key", "status"]].values.tolist() == [["k1", "ok"], ["k2", "crashed"]]
    assert pd.isna(first["reason"][0]) and first["reason"][1] == "worker died"
    assert store.cells_frame(suite="nothing").columns.tolist()[:10] == [
        *("run_id", "suite", "cell_key", "model", "device", "technique", "workload"),
        *("status", "reason", "reference"),
    ]
    with pytest.raises(StoreError, match="no run with id 77"):
        store.cells_frame(run_id=77)


def test_runs_frame_counts(store: Store) -> None:
    machine = store.ensure_machine("g", GPU_MACHINE)
    run1 = new_run(store, machine)
    for key, status in [("a", "ok"), ("b", "ok"), ("c", "skipped"), ("d", "oom"), ("e", "error")]:
        store.record(run1, cell(key, status))
    store.finish_run(run1)
    run2 = new_run(store, machine, suite="training")
    runs = store.runs_frame()
    assert list(runs.columns) == [
        *("id", "suite_name", "started_at", "ended_at", "cells", "ok", "failed", "machine"),
        *("gpu", "origin"),
    ]
    counted = runs[["id", "suite_name", "cells", "ok", "failed", "machine", "gpu"]]
    assert counted.values.tolist() == [
        [run1, "smoke", 5, 2, 2, "gpu1", "NVIDIA H100 80GB HBM3"],
        [run2, "training", 0, 0, 0, "gpu1", "NVIDIA H100 80GB HBM3"],
    ]
    assert str(runs["started_at"].dt.tz) == "UTC"
    assert runs["ended_at"].notna().tolist() == [True, False]
    with pytest.raises(StoreError, match="no run with id 5"):
        store.finish_run(5)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_reads_back_exactly(store: Store, tmp_path: Path, fmt: str) -> None:
    machine = store.ensure_machine("m", MACHINE)
    run = new_run(store, machine)
    for i, number in enumerate(AWKWARD):
        store.record(run, cell(f"k{i}", values=(ttft(number), Value("n.tokens", float(i), "1"))))
    store.record(run, cell("k-none", "error", (ttft(None, reason="crashed"),), reason="boom"))
    other = new_run(store, machine)
    store.record(other, cell("k-other", values=(ttft(7.0),)))

    target = tmp_path / "out" / f"cells.{fmt}"
    assert store.export(fmt, target, run_id=run) == len(AWKWARD) + 1  # type: ignore[arg-type]
    if fmt == "csv":
        back = pd.read_csv(target)
        records = back.astype(object).where(back.notna(), None).to_dict(orient="records")
    elif fmt == "parquet":
        back = pd.read_parquet(target)
        records = back.astype(object).where(back.notna(), None).to_dict(orient="records")
    else:
        records = json.loads(target.read_text())
    assert [r["cell_key"] for r in records] == [f"k{i}" for i in range(len(AWKWARD))] + ["k-none"]
    assert [r["latency.ttft_s"] for r in records] == [*AWKWARD, None]
    assert [r["n.tokens"] for r in records] == [float(i) for i in range(len(AWKWARD))] + [None]
    assert records[-1]["reason"] == "boom" and records[0]["reason"] is None
    assert records[0]["run_id"] == run
    assert records[0]["workload"] == "generate(batch_size=1,new_tokens=32,prompt_tokens=128)"
    assert list(records[0]) == [
        *("run_id", "suite", "cell_key", "model", "device", "technique", "workload"),
        *("status", "reason", "reference", "latency.ttft_s", "n.tokens"),
    ]
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_export_failure_leaves_no_file(store: Store, tmp_path: Path) -> None:
    machine = store.ensure_machine("m", MACHINE)
    store.record(new_run(store, machine), cell("k", values=(ttft(1.0),)))
    blocker = tmp_path / "cells.csv"
    blocker.mkdir()  # a folder where the file should go: the final rename fails
    with pytest.raises(StoreError, match=r"cells\.csv: cannot write"):
        store.export("csv", blocker)
    assert [p.name for p in tmp_path.iterdir() if p.name != "results"] == ["cells.csv"]
    assert list(blocker.iterdir()) == []
    with pytest.raises(StoreError, match="unknown format 'xlsx'"):
        store.export("xlsx", tmp_path / "x.xlsx")  # type: ignore[arg-type]


def test_empty_store(store: Store, tmp_path: Path) -> None:
    assert store.runs_frame().columns.tolist() == [
        *("id", "suite_name", "started_at", "ended_at", "cells", "ok", "failed", "machine"),
        *("gpu", "origin"),
    ]
    assert store.runs_frame().empty
    assert store.cells_frame(with_ci=True).columns.tolist() == [
        *("run_id", "suite", "cell_key", "model", "device", "technique", "workload"),
        *("status", "reason", "reference"),
    ]
    assert store.export("json", tmp_path / "empty.json") == 0
    assert json.loads((tmp_path / "empty.json").read_text()) == []


def test_metric_defs_upsert(store: Store) -> None:
    assert store.metric_defs() == {}
    ttft_def = MetricDef("latency.ttft_s", "s", False, "time to first token")
    tok_def = MetricDef("throughput.decode_tok_s", "tok/s", True, "decode tokens per second")
    store.save_metric_defs([ttft_def, tok_def])
    changed = MetricDef("latency.ttft_s", "s", False, "prefill plus first token")
    kv_def = MetricDef("memory.kv_cache_bytes", "bytes", False, "KV cache size")
    store.save_metric_defs([changed, kv_def])
    assert store.metric_defs() == {
        "latency.ttft_s": changed,
        "memory.kv_cache_bytes": kv_def,
        "throughput.decode_tok_s": tok_def,
    }


def test_metric_defs_keep_their_kind(store: Store) -> None:
    greedy = MetricDef("greedy.token_match", "fraction", True, "greedy match", kind="accuracy")
    odd = MetricDef("accuracy.tokens_read", "tokens", True, "tokens read", kind="other")
    store.save_metric_defs([greedy, odd])
    defs = store.metric_defs()
    assert (defs["greedy.token_match"].kind, defs["accuracy.tokens_read"].kind) == (
        "accuracy",
        "other",
    )


def test_migration_0007_gives_stored_definitions_the_kind_of_their_name(store: Store) -> None:
    """Definitions stored before metric kinds existed read back as the dashboard read them."""
    store.save_metric_defs(
        [
            MetricDef("accuracy.passkey", "fraction", True, "passkey", kind="other"),
            MetricDef("power.avg_w", "W", False, "mean power", kind="other"),
            MetricDef("prune.sparsity", "fraction", True, "zeros", kind="accuracy"),
        ]
    )
    with store.engine.connect() as connection:
        with connection.begin():
            command.downgrade(alembic_config(connection), "0003")
        assert "kind" not in {c["name"] for c in inspect(connection).get_columns("metric_defs")}
        connection.rollback()
        with connection.begin():
            command.upgrade(alembic_config(connection), "0007")
    kinds = {name: d.kind for name, d in store.metric_defs().items()}
    assert kinds == {
        "accuracy.passkey": "accuracy",
        "power.avg_w": "energy",
        "prune.sparsity": "other",
    }


def assert_migration_matches_orm(store: Store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        tables = set(inspect(connection).get_table_names())
    assert tables == {*Base.metadata.tables, "alembic_version"}


def test_migration_matches_orm(store: Store) -> None:
    assert_migration_matches_orm(store)
    _known, head = known_revisions()
    with store.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_heads() == (head,)
        connection.rollback()
        with connection.begin():
            command.downgrade(alembic_config(connection), "base")
        assert set(inspect(connection).get_table_names()) == {"alembic_version"}
    store.close()
    with Store.open(store.url) as again:  # opening migrates back up to head
        assert_migration_matches_orm(again)


def test_open_twice_is_idempotent(db_path: Path) -> None:
    for _ in range(2):
        with Store.open(f"sqlite:///{db_path}") as opened:
            machine = opened.ensure_machine("m", MACHINE)
            opened.record(new_run(opened, machine), cell("k"))
    with Store.open(str(db_path)) as opened:  # a bare path works too
        assert len(opened.cells_frame()) == 1
        assert len(opened.runs_frame()) == 2
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_newer_database_is_refused_untouched(db_path: Path) -> None:
    Store.open(str(db_path)).close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999_future'")
    raw.close()
    before = db_path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(StoreError) as info:
            Store.open(str(db_path), read_only=read_only)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{db_path}: this database was written by a newer bench")
        assert "9999_future" in message
        assert "pip install -U bench" in message and "--db" in message
    assert db_path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [b"name,value\nx,1\n" * 50, b"SQLite format 3\x00" + b"\xde\xad\xbe\xef" * 1024],
    ids=["text", "bad-sqlite-body"],
)
def test_garbage_file_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bench.db"
    path.write_bytes(content)
    for read_only in (False, True):
        with pytest.raises(StoreError) as info:
            Store.open(f"sqlite:///{path}", read_only=read_only)
        message = str(info.value)
        assert message.startswith(f"{path}: not a")
        assert "--db" in message and "\n" not in message
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.db"]


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE notes (body TEXT)")
    raw.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"not a bench results database \(it holds tables notes"):
        Store.open(str(path))
    assert path.read_bytes() == before


def test_folder_and_bad_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=re.escape(f"{tmp_path}: not a file. Pass --db")):
        Store.open(str(tmp_path))
    with pytest.raises(StoreError, match=r"no database driver .* pass --db"):
        Store.open("nosuchdialect://host/db")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    url = f"postgresql+psycopg2://bench:secret@127.0.0.1:{port}/bench"
    with pytest.raises(StoreError) as info:
        Store.open(url)
    message = str(info.value)
    assert message.startswith(f"postgresql+psycopg2://bench:***@127.0.0.1:{port}/bench: cannot")
    assert "secret" not in message and "--db" in message and "\n" not in message


def test_read_only(db_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        Store.open(f"sqlite:///{db_path}", read_only=True)
    assert str(info.value).startswith(f"{db_path}: no results database here")
    assert "bench run suites/smoke.yaml" in str(info.value)
    assert not db_path.parent.exists()

    with Store.open(f"sqlite:///{db_path}") as writer:
        machine = writer.ensure_machine("m", MACHINE)
        run = new_run(writer, machine)
        writer.record(run, cell("k", values=(ttft(1.5),)))
    with Store.open(f"sqlite:///{db_path}", read_only=True) as reader:
        assert reader.cells_frame()["latency.ttft_s"].tolist() == [1.5]
        assert reader.done_keys(machine, ["k"]) == {"k"}
        writes = [
            lambda: reader.ensure_machine("m", MACHINE),
            lambda: new_run(reader, machine),
            lambda: reader.finish_run(run),
            lambda: reader.record(run, cell("k2")),
            lambda: reader.save_metric_defs([MetricDef("a", "s", False, "a")]),
        ]
        for write in writes:
            with pytest.raises(StoreError, match="open read-only"):
                write()
        # The connection itself is read-only too (file opened with mode=ro).
        with pytest.raises(DBAPIError, match="readonly"), reader.engine.begin() as connection:
            connection.execute(text("DELETE FROM cells"))
    with Store.open(f"sqlite:///{db_path}", read_only=True) as reader:
        assert len(reader.cells_frame()) == 1


def test_empty_file_read_only_says_how_to_fill(tmp_path: Path) -> None:
    path = tmp_path / "bench.db"
    path.touch()
    with pytest.raises(StoreError, match=r"no results yet\. Run 'bench run suites/smoke\.yaml'"):
        Store.open(str(path), read_only=True)
    assert path.read_bytes() == b""


def test_default_url_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_DB", raising=False)
    with Store.open() as default:
        assert default.url == "sqlite:///results/bench.db"
    assert (tmp_path / "results" / "bench.db").is_file()
    monkeypatch.setenv("BENCH_DB", f"sqlite:///{tmp_path / 'env.db'}")
    with Store.open() as from_env:
        assert from_env.url == f"sqlite:///{tmp_path / 'env.db'}"
    assert (tmp_path / "env.db").is_file()


def test_store_does_not_import_torch() -> None:
    code = "import sys, harness.store; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


WRITER = textwrap.dedent(
    """
    import sys
    from harness.results import CellResult, Value
    from harness.store import Store

    url, name = sys.argv[1], sys.argv[2]
    machine = {"hostname": "h", "cpu": "c", "cpu_count": 2, "ram_bytes": 1}
    with Store.open(url) as store:
        machine_id = store.ensure_machine("shared-fingerprint", machine)
        run = store.start_run(
            suite_name=name, suite_path="s.yaml", suite_hash="0" * 64, machine_id=machine_id,
            harness_version="0", git_commit=None, environment={},
        )
        for i in range(50):
            values = (Value("latency.ttft_s", i / 10, "s"), Value("n.tokens", 32.0, "1"))
            store.record(run, CellResult(
                f"{name}-{i}", "m", "cpu", "baseline", (), {"name": "generate", "params": {}},
                "ok", None, 0.0, 0.01, values,
            ))
        store.finish_run(run)
    """
)


def test_concurrent_writers(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("w1", "w2")
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert "database is locked" not in err
        assert proc.returncode == 0, err
    with Store.open(url, read_only=True) as store:
        frame = store.cells_frame()
        assert len(frame) == 100
        expected = sorted(f"{w}-{i}" for w in ("w1", "w2") for i in range(50))
        assert sorted(frame["cell_key"]) == expected
        runs = store.runs_frame()
        assert runs["cells"].tolist() == [50, 50]
        assert runs["machine"].tolist() == ["h", "h"]  # one machine row, shared
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT count(*) FROM metrics").fetchone() == (200,)
        assert raw.execute("SELECT count(*) FROM machines").fetchone() == (1,)


# -- PostgreSQL: a private throwaway cluster (tests/conftest.py) -----------------------------


def test_postgresql_roundtrip_and_migration(pg_url: str) -> None:
    with Store.open(pg_url) as store:
        assert_migration_matches_orm(store)
        roundtrip(store)
        machine = store.ensure_machine("f" * 64, GPU_MACHINE)
        assert store.done_keys(machine, ["k-ok", "k-err", "k-skip"]) == {"k-ok", "k-skip"}
    with Store.open(pg_url, read_only=True) as reader:
        assert len(reader.cells_frame()) == 3
        with pytest.raises(DBAPIError, match="read-only transaction"), reader.engine.begin() as c:
            c.execute(text("DELETE FROM metrics"))
    with Store.open(pg_url) as store:
        samples_roundtrip(store)
    # The psycopg (3) driver reads and writes the same database.
    psycopg3 = pg_url.replace("+psycopg2://", "+psycopg://")
    with Store.open(psycopg3) as store:
        assert store.engine.dialect.driver == "psycopg"
        assert len(store.cells_frame()) == 4
        machine = store.ensure_machine("f" * 64, GPU_MACHINE)
        assert store.done_keys(machine, ["k-ok", "k-s"]) == {"k-ok"}  # k-s: other hardware


def test_migration_0004_fills_hardware_and_run_ids(db_path: Path) -> None:
    """Machines and runs stored before 0004 get their hardware hash and a run uid."""
    url = f"sqlite:///{db_path}"
    with Store.open(url) as store:
        machine = store.ensure_machine("a", MACHINE)
        new_run(store, machine)
        new_run(store, machine)
        with store.engine.connect() as connection, connection.begin():
            command.downgrade(alembic_config(connection), "0003")
    with Store.open(url) as store:  # migrates 0003 -> head
        assert_migration_matches_orm(store)
        with store.engine.connect() as connection:
            hardware = connection.execute(text("SELECT hardware FROM machines")).scalars().all()
            uids = connection.execute(text("SELECT uid FROM runs")).scalars().all()
    assert hardware == [hardware_key(MACHINE)]
    assert len(set(uids)) == 2 and all(len(uid) == 36 for uid in uids)


def test_identical_hardware_shares_results(store: Store) -> None:
    """Resume is per hardware: a node with another hostname but the same facts shares."""
    a = store.ensure_machine("a", MACHINE)
    twin = store.ensure_machine("twin", {**MACHINE, "hostname": "node2", "ram_bytes": 1})
    other = store.ensure_machine("b", GPU_MACHINE)
    store.record(new_run(store, a), cell("k1"))
    assert store.done_keys(twin, ["k1"]) == {"k1"}
    assert store.done_keys(other, ["k1"]) == set()
