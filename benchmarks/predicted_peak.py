"""How close the predicted peak is to the measured one, cell by cell (issue 14: within 15%).

``python benchmarks/predicted_peak.py [--db URL] [--run N] [--suite inference]``

Reads a results database (by default the latest cell of every suite cell) and prints, for
every ok cell that has both, the estimate's ``estimate.peak_bytes`` (``harness.estimate``:
weights, KV cache and the largest working set) against the measured allocator peak
``memory.peak_alloc_bytes`` (CPU: weights + the torch profiler's window peak; CUDA:
``torch.cuda.max_memory_allocated``), their ratio, and the worst cell. Cells whose stack
has no estimate (the prediction is null with its reason) are counted apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.store import Store

PREDICTED, MEASURED = "estimate.peak_bytes", "memory.peak_alloc_bytes"
TOLERANCE = 0.15


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite:///results/bench.db")
    parser.add_argument("--run", type=int, default=None, help="one run (default: latest cells)")
    parser.add_argument("--suite", default="inference")
    args = parser.parse_args(argv)
    with Store.open(args.db, read_only=True) as store:
        cells = store.cells_frame(run_id=args.run, suite=args.suite)
    ok = cells[(cells["status"] == "ok") & (cells["workload"].str.startswith("generate"))]
    if PREDICTED not in ok or MEASURED not in ok:
        print(f"no cell has both {PREDICTED} and {MEASURED}")
        return 1
    both = ok.dropna(subset=[PREDICTED, MEASURED])
    ratios = (both[PREDICTED] / both[MEASURED]).rename("ratio")
    table = both.assign(ratio=ratios)[["technique", "workload", PREDICTED, MEASURED, "ratio"]]
    table = table.sort_values("ratio", key=lambda r: (r - 1).abs(), ascending=False)
    mib = 2**20
    print(f"{'technique':48} {'workload':44} {'pred MiB':>9} {'meas MiB':>9} {'ratio':>6}")
    for row in table.itertuples(index=False):
        print(
            f"{row[0][:48]:48} {row[1][:44]:44} {row[2] / mib:9.1f} {row[3] / mib:9.1f} "
            f"{row[4]:6.3f}"
        )
    within = int(((ratios - 1).abs() <= TOLERANCE).sum())
    print(
        f"\n{within} of {len(table)} cells within ±{TOLERANCE:.0%}; "
        f"{len(ok) - len(both)} ok cells without both numbers (no estimate for the stack)."
    )
    if len(table):
        worst = table.iloc[0]
        print(
            f"worst: {worst['technique']} {worst['workload']}: predicted "
            f"{worst[PREDICTED] / mib:.1f} MiB, measured {worst[MEASURED] / mib:.1f} MiB "
            f"(ratio {worst['ratio']:.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
