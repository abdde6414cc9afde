"""Terminal output: the progress of a run, the matrix of a suite, the results table."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Collection
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from harness.results import CellResult

if TYPE_CHECKING:
    from harness.store import Store
    from harness.suite import Suite

# (metric, column title, scale, format): the key numbers of the terminal table.
COLUMNS = (
    ("latency.ttft_s", "TTFT ms", 1e3, "{:.1f}"),
    ("latency.tpot_s", "TPOT ms", 1e3, "{:.2f}"),
    ("latency.speedup", "speedup", 1, "{:.2f}×"),
    ("memory.peak_alloc_bytes", "peak MiB", 2**-20, "{:.1f}"),
    ("memory.weights_bytes", "weights MiB", 2**-20, "{:.1f}"),
    ("memory.kv_cache_bytes", "KV MiB", 2**-20, "{:.2f}"),
    ("accuracy.perplexity", "PPL", 1, "{:.3f}"),
    ("accuracy.passkey", "passkey", 1, "{:.2f}"),
    ("quality.token_agreement", "tok agree", 1, "{:.2f}"),
    ("energy.j_per_token", "J/token", 1, "{:.3f}"),
    # training (a suite shows the columns its cells measured)
    ("latency.step_s", "step s", 1, "{:.3f}"),
    ("memory.optimizer_state_bytes", "optim MiB", 2**-20, "{:.1f}"),
    ("memory.activation_peak_bytes", "activ. MiB", 2**-20, "{:.1f}"),
    ("train.loss_final", "loss", 1, "{:.3f}"),
)

# Off a terminal rich assumes 80 columns; a results table needs more to stay readable.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class Progress:
    """A progress bar with ETA on a terminal, plain lines otherwise; a line per cell."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stdout.isatty()
        self._bar: RichProgress | None = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.tty:
            self._bar = RichProgress(
                TextColumn("[bold]cells"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeRemainingColumn(),
                console=console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("cells", total=self.total, failed=0)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(t, e, tb)

    def update(self, result: CellResult, done: int, total: int) -> None:
        tpot = result.metric("latency.tpot_s")
        ok = tpot is not None and result.status == "ok"
        detail = f"TPOT {tpot * 1e3:.2f} ms" if tpot is not None and ok else (result.reason or "")
        workload = _params(result.workload.get("params", {}))
        line = (
            f"[{done}/{total}] {result.status:<8} {result.technique}  {workload}  "
            f"{detail}  ({result.duration_s:.1f} s)"
        )
        if self._bar is not None:
            failed = self._bar.tasks[0].fields["failed"] + (result.status not in ("ok", "skipped"))
            self._bar.update(self._task, completed=done, failed=failed)
            self._bar.console.print(line, markup=False)
        else:
            print(line, flush=True)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def print_matrix(suite: Suite) -> None:
    table = Table("#", "key", "model", "device", "technique", "workload", title=suite.name)
    for i, cell in enumerate(suite.cells, start=1):
        table.add_row(
            str(i),
            cell.key[:10],
            cell.model.id,
            cell.device,
            cell.label,
            f"{cell.workload.name} {_params(dict(cell.workload.params))}",
        )
    console.print(table)
    console.print(f"{len(suite.cells)} cells. 'bench run {suite.path}' measures them.")


def _fmt(row: Any, metric: str, scale: float, fmt: str) -> str:
    value = row.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = fmt.format(value * scale)
    lo, hi = row.get(f"{metric}.ci_low"), row.get(f"{metric}.ci_high")
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)) and hi > lo:
        text += f" ±{fmt.format((hi - lo) * scale / 2)}"
    return text


def _varying_params(labels: list[str]) -> list[str]:
    """Shorten ``generate(a=1,b=2)`` labels to the parameters that differ between rows."""
    parsed = [dict(re.findall(r"(\w+)=(\[[^\]]*\]|[^,()]+)", label)) for label in labels]
    keys = [
        k
        for k in dict.fromkeys(k for p in parsed for k in p)
        if len({p.get(k) for p in parsed}) > 1
    ]
    if not keys:
        return labels
    return [" ".join(f"{k}={p.get(k, '-')}" for k in keys) for p in parsed]


def print_results(
    store: Store,
    *,
    suite: str | None = None,
    run_id: int | None = None,
    keys: Collection[str] | None = None,
) -> None:
    """The results table: one row per cell, key metrics as median ± half the 95% CI."""
    frame = store.cells_frame(run_id=run_id, suite=suite, with_ci=True)
    if keys is not None:
        frame = frame[frame["cell_key"].isin(list(keys))]
    if frame.empty:
        console.print("No results yet. Fill the database with: bench run suites/smoke.yaml")
        return
    shown = [c for c in COLUMNS if c[0] in frame.columns]
    flips = sorted(c for c in frame.columns if c.startswith("flips.") and c.endswith(RW))
    gate_reasons = store.metric_reasons("gate.passed", run_id=run_id, suite=suite)
    # Columns that are the same on every row go into the title instead.
    fixed = [c for c in ("model", "device") if frame[c].nunique() == 1]
    varying = [c for c in ("model", "device", "technique") if c not in fixed]
    workloads = _varying_params(list(frame["workload"]))
    title = " · ".join(str(frame[c].iloc[0]) for c in fixed)
    flip_title = ["flips r→w/w→r"] if flips else []
    table = Table(*varying, "workload", "status", *(c[1] for c in shown), *flip_title, title=title)
    table.columns[varying.index("technique")].overflow = "fold"
    if flips:  # "passkey 12%/0%" stays on one line: narrower columns wrap first
        table.columns[-1].no_wrap = True
    reasons: dict[str, int] = {}  # a footnote per distinct reason, listed under the table
    for i, row in enumerate(frame.to_dict("records")):
        status = row["status"]
        if status != "ok":
            status += f" [{reasons.setdefault(str(row['reason']), len(reasons) + 1)}]"
        if row.get("stats.noisy") == 1.0:
            status += " ~"
        if row.get("gate.passed") == 0.0:
            reason = gate_reasons.get(row["cell_key"], "a quality gate failed")
            status += f" ✗gate [{reasons.setdefault(reason, len(reasons) + 1)}]"
        table.add_row(
            *(str(row[c]) for c in varying),
            workloads[i],
            status,
            *(_fmt(row, c[0], c[2], c[3]) for c in shown),
            *([_flips(row, flips)] if flips else []),
        )
    console.print(table)
    for reason, n in reasons.items():
        console.print(f"[{n}] {reason}", markup=False)
    console.print(
        "Numbers are medians over the measured repeats; ± is half the 95% confidence interval "
        "of the median; ~ after the status marks a noisy cell (TPOT's half-interval above 5% "
        "of its median, or its CV above 0.1); ✗gate marks a cell that failed a quality gate "
        "of its suite (gates:); flips are the samples right on the reference stack and wrong "
        "here / wrong there and right here. Metric definitions: docs/metrics.md"
    )


RW = "_right_to_wrong"


def _flips(row: Any, columns: list[str]) -> str:
    """``task r→w/w→r`` in percent for each task with flips, e.g. ``passkey 12%/0%``."""
    parts = []
    for column in columns:
        lost = row.get(column)
        won = row.get(column.removesuffix(RW) + "_wrong_to_right")
        if lost is None or (isinstance(lost, float) and math.isnan(lost)):
            continue
        task = column.removeprefix("flips.").removesuffix(RW)
        won_text = "-" if won is None or math.isnan(won) else f"{won:.0%}"
        parts.append(f"{task} {lost:.0%}/{won_text}")
    return " ".join(parts) or "-"


#: (column, measured metric, predicted metric, scale): measured vs predicted, in
#: ``bench results --predicted`` and the dashboard's estimate page.
PREDICTED = (
    ("peak MiB", "memory.peak_alloc_bytes", "estimate.peak_bytes", 2**-20),
    ("TTFT ms", "latency.ttft_s", "estimate.prefill_s", 1e3),
    ("TPOT ms", "latency.tpot_s", "estimate.decode_s", 1e3),
)
#: Predicted time at the roofline / measured time (``harness.derive``).
ROOFLINE_FRACTIONS = ("roofline.prefill_fraction", "roofline.decode_fraction")


def measured_cells(frame: Any) -> Any:
    """The ok measured cells of a ``cells_frame`` (boundary searches left out), or none when
    no cell carries an estimate at all; a cell whose stack has none is kept, to say so."""
    if not any(str(c).startswith("estimate.") for c in frame.columns):
        return frame.iloc[0:0]
    searches = frame["workload"].astype(str).str.startswith("boundary(")
    return frame[(frame["status"] == "ok") & ~searches]


def print_predicted(store: Store, *, suite: str | None = None, run_id: int | None = None) -> None:
    """Measured beside predicted, per ok measured cell: each of :data:`PREDICTED` as
    measured, predicted and measured / predicted, then the roofline fractions. A stack
    without an estimate says "no estimate" instead of a number."""
    frame = measured_cells(store.cells_frame(run_id=run_id, suite=suite))
    if frame.empty:
        console.print("No ok cell with an estimate yet. Fill the database with: bench run")
        return
    titles = [t for name, *_ in PREDICTED for t in (name, "pred.", "ratio")]
    table = Table("technique", "workload", *titles, "roof prefill", "roof decode")
    table.columns[0].overflow = "fold"
    workloads = _varying_params(list(frame["workload"]))
    for i, row in enumerate(frame.to_dict("records")):
        numbers: list[str] = []
        for _, measured, predicted, scale in PREDICTED:
            got, want = _number(row, measured), _number(row, predicted)
            numbers += [
                "-" if got is None else f"{got * scale:.4g}",
                "no estimate" if want is None else f"{want * scale:.4g}",
                "-" if got is None or not want else f"{got / want:.3f}",
            ]
        fractions = [_number(row, name) for name in ROOFLINE_FRACTIONS]
        shown = ["no estimate" if f is None else f"{f:.3f}" for f in fractions]
        table.add_row(str(row["technique"]), workloads[i], *numbers, *shown)
    console.print(table)
    console.print(
        "ratio = measured / predicted (the prediction each cell stored: docs/estimate.md); "
        "roof = predicted time at the roofline / measured time (1 = at the hardware's limit)."
    )


def _number(row: Any, metric: str) -> float | None:
    value = row.get(metric)
    return None if value is None or math.isnan(value) else float(value)


def print_runs(store: Store) -> None:
    frame = store.runs_frame()
    if frame.empty:
        console.print("No runs yet. Fill the database with: bench run suites/smoke.yaml")
        return
    table = Table(*map(str, frame.columns))
    for row in frame.itertuples(index=False):
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
