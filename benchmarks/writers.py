"""Concurrent writers: results stored per second by N runners sharing one database.

``python benchmarks/writers.py [--writers 1,2,4,8] [--cells 400] [--backends sqlite,postgresql]``

Each writer is a process doing what ``bench run`` does per cell, minus the measuring: it
reads the keys already done (``Store.done_keys``, after noting the database's clock),
claims each other cell (``Store.claim``), then records a result of 12 metrics with 5 samples each
together with its claim (``Store.record(..., claim=...)``), each a transaction of its own.
All N writers go over the same ``--cells`` keys (each from another starting point), so
the claims decide who writes which; after they finish the benchmark counts the stored
cells: ``lost`` (keys with no cell) and ``duplicated`` (keys with more than one) must be 0.
Throughput is cells stored / wall time from the common start to the last writer's end.

SQLite is a file in a temporary folder (WAL, ``BEGIN IMMEDIATE``); PostgreSQL is a private
cluster started for the benchmark (``harness.postgres``, fsync off), a fresh database per
configuration. The numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.results import CellResult, Value
from harness.store import Store
from harness.store.claims import ClaimRef

MACHINE = {"hostname": "bench-writer", "cpu": "cpu", "cpu_count": 2, "ram_bytes": 1 << 30}


def result(key: str) -> CellResult:
    values = tuple(
        Value(
            f"metric.m{i}_s",
            0.001 * i,
            "s",
            0.0009 * i,
            0.0011 * i,
            5,
            "clock",
            samples=tuple(0.001 * i + 1e-6 * j for j in range(5)),
        )
        for i in range(12)
    )
    workload = {"name": "generate", "params": {"prompt_tokens": 128, "new_tokens": 32}}
    return CellResult(key, "m", "cpu", "baseline", (), workload, "ok", None, 0.0, 0.1, values)


def writer(url: str, index: int, keys: list[str], start: Any, done: Any) -> None:
    with Store.open(url) as store:
        machine = store.ensure_machine("bench-writers", MACHINE)
        run = store.start_run(
            suite_name="writers",
            suite_path="-",
            suite_hash="0" * 64,
            machine_id=machine,
            harness_version="0",
            git_commit=None,
            environment={},
        )
        holder = f"writer-{index}"
        order = keys[index * len(keys) // 8 :] + keys[: index * len(keys) // 8]
        start.wait()
        since = store.clock()  # then resume, as the runner does: see harness/runner.py
        finished = store.done_keys(machine, keys)
        for key in order:
            if key in finished:
                continue
            ref = ClaimRef("bench", key, holder)
            if store.claim([ref], since=since, lease_s=60)[key] == "taken":
                store.record(run, result(key), claim=ref)
        store.finish_run(run)
    done.put(time.perf_counter())


def measure(url: str, writers: int, cells: int) -> dict[str, float]:
    Store.open(url).close()  # migrate once, before the clock starts
    keys = [f"cell-{i:05d}" for i in range(cells)]
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(writers + 1), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(url, i, keys, start, done)) for i in range(writers)]
    for proc in procs:
        proc.start()
    start.wait()
    began = time.perf_counter()
    ends = [done.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0, f"a writer failed (exit {proc.exitcode})"
    wall = max(ends) - began
    with Store.open(url, read_only=True) as store:
        frame = store.cells_frame()
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT key, count(*) FROM cells GROUP BY key"))
        per_key = {str(key): int(n) for key, n in rows}
    engine.dispose()
    lost = sum(key not in per_key for key in keys)
    duplicated = sum(n - 1 for n in per_key.values() if n > 1)
    return {
        "stored": len(frame),
        "wall_s": wall,
        "per_s": len(per_key) / wall,
        "lost": lost,
        "duplicated": duplicated,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="1,2,4,8", help="comma-separated writer counts")
    parser.add_argument("--cells", type=int, default=400, help="cells per configuration")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.writers.split(",")]
    backends = args.backends.split(",")
    print(
        f"{'backend':<11} {'writers':>7} {'cells':>6} {'wall s':>7} {'cells/s':>8} "
        f"{'lost':>5} {'dup':>4}"
    )
    with tempfile.TemporaryDirectory() as folder:
        server = None
        cluster = None
        if "postgresql" in backends:
            from harness.postgres import ClusterUnavailable, private_cluster

            try:
                cluster = private_cluster()
                server = cluster.__enter__()
            except ClusterUnavailable as exc:
                print(f"postgresql: skipped ({exc})")
        try:
            for backend in backends:
                for n in counts:
                    if backend == "sqlite":
                        url = f"sqlite:///{folder}/w{n}.db"
                    elif server is not None:
                        from harness.postgres import create_database

                        url = create_database(server, f"writers_{n}")
                    else:
                        continue
                    got = measure(url, n, args.cells)
                    print(
                        f"{backend:<11} {n:>7} {got['stored']:>6} {got['wall_s']:>7.2f} "
                        f"{got['per_s']:>8.1f} {got['lost']:>5} {got['duplicated']:>4}",
                        flush=True,
                    )
        finally:
            if cluster is not None:
                cluster.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
