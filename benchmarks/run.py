"""Fidelity benchmarks of the harness: ``make bench`` (or ``python benchmarks/run.py``).

Prints one line per check (overhead, kv-bytes, alloc-peak, repeatability) with its
measured value and its target; see ``benchmarks/fidelity.py`` for what each measures.
Timings depend on the machine and its load: run on a quiet machine. Exits 0 whatever the
outcome (these are measurements, not tests); ``--strict`` exits 1 if a check misses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fidelity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checks",
        default="overhead,kv-bytes,alloc-peak,repeatability",
        help="comma-separated checks to run (default: all)",
    )
    parser.add_argument("--model", default=fidelity.DEFAULT_MODEL, help="model of timed checks")
    parser.add_argument("--pairs", type=int, default=10, help="ABAB pairs of the overhead check")
    parser.add_argument("--cells", type=int, default=5, help="cells of the repeatability check")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a check misses")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    runs: dict[str, Callable[[], fidelity.Check]] = {
        "overhead": lambda: fidelity.overhead(args.model, pairs=args.pairs),
        "kv-bytes": fidelity.kv_bytes,
        "alloc-peak": fidelity.alloc_peak,
        "repeatability": lambda: fidelity.repeatability(args.model, cells=args.cells),
    }
    names = [n.strip() for n in args.checks.split(",") if n.strip()]
    unknown = sorted(set(names) - set(runs))
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(runs)}")

    print(
        f"bench fidelity: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    checks = []
    for name in names:
        began = time.perf_counter()
        check = runs[name]()
        checks.append(check)
        print(
            f"  {name}: {check.measured} (target {check.target}) in "
            f"{time.perf_counter() - began:.0f} s",
            flush=True,
        )

    w = max(len(c.measured) for c in checks)
    t = max(len(c.target) for c in checks)
    print(f"\n{'check':<14} {'measured':<{w}}  {'target':<{t}}  ok")
    for c in checks:
        print(f"{c.name:<14} {c.measured:<{w}}  {c.target:<{t}}  {'yes' if c.ok else 'NO'}")
    print()
    for c in checks:
        print(f"{c.name}: {c.detail}")
    return 1 if args.strict and not all(c.ok for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
