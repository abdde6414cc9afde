"""``bench compare BASE CANDIDATE``: did a change make each cell faster, smaller or worse?"""

from __future__ import annotations

import json
import re
import sys

import click

from harness.cli.app import db_option, open_store
from harness.errors import EXIT_CELLS_FAILED, BenchError

_PERCENT = re.compile(r"^\s*(\d+(\.\d+)?)\s*%\s*$")


@click.command()
@click.argument("base")
@click.argument("candidate")
@db_option
@click.option(
    "--base-db",
    default=None,
    help="read BASE from this database (URL or SQLite path; default: --db)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
)
@click.option(
    "--fail-on",
    default=None,
    metavar="METRIC:+X%,...",
    help="exit 1 when one of these metrics regressed beyond X% with 95% confidence "
    "(e.g. 'latency.tpot_s:+5%,memory.peak_alloc_bytes:+1%'; globs: 'latency.*:+5%')",
)
@click.option(
    "--threshold",
    default="2%",
    show_default=True,
    help="the unchanged band ±X% for metrics no --fail-on entry names",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="only these metrics (names or globs, repeatable); default: all but stats.*",
)
@click.option("--across-devices", is_flag=True, help="pair cells measured on different devices")
@click.option("--only-changes", is_flag=True, help="leave unchanged rows out of the table")
@click.option(
    "--machine-relative",
    is_flag=True,
    help="judge timings relative to the machine's calibration, not as measured (each "
    "cell's worker times a fixed workload; a slower machine slows it too)",
)
@click.option(
    "--uncorrected",
    is_flag=True,
    help="judge every row at 95% on its own; by default the rows beyond the band are "
    "judged again at the level that keeps the false coverage rate over all rows at 5%",
)
@click.option(
    "--no-history",
    is_flag=True,
    help="leave out the database's other runs of the same suite, machine and software, "
    "which otherwise tell how far each value moves from run to run",
)
@click.option("--seed", type=int, default=0, show_default=True, help="bootstrap seed")
@click.option(
    "--resamples",
    type=click.IntRange(min=100),
    default=10_000,
    show_default=True,
    help="bootstrap resamples per ratio",
)
def compare(
    base: str,
    candidate: str,
    db: str | None,
    base_db: str | None,
    fmt: str,
    fail_on: str | None,
    threshold: str,
    metrics: tuple[str, ...],
    across_devices: bool,
    only_changes: bool,
    machine_relative: bool,
    uncorrected: bool,
    no_history: bool,
    seed: int,
    resamples: int,
) -> None:
    """Compare CANDIDATE with BASE, cell by cell and metric by metric.

    \b
    Each side is a run id (7), a suite name (its latest run; smoke~1 is the run before),
    latest, commit:SHA, an environment entry (transformers=5.24.0) or a bench version;
    several, comma-separated (smoke~1,smoke~2), make a side of several runs, whose spread
    shows the noise between runs (one run a side sees only the noise within it).
    Every matched cell and metric gets base, candidate, their ratio with a 95% CI (from
    the stored repeats) and a verdict: improved, regressed, unchanged (CI inside the
    ±threshold band) or inconclusive (with the repeats that would settle it). The other
    runs of the suite on the same software tell how far a value moves between runs, and
    the rows beyond the band are judged again for their number (false coverage rate 5%).
    Exit 0, 1 when --fail-on caught a regression, 2 on bad input. docs/compare.md
    """
    from harness.compare import Options, parse_fail_on
    from harness.compare import compare as compare_sides
    from harness.compare_render import print_table, to_json, to_markdown
    from harness.compare_sides import load_history, load_side, resolve_runs

    band = _percent(threshold, "--threshold")
    with open_store(db, read_only=True) as store_c:
        base_store = open_store(base_db, read_only=True) if base_db else store_c
        try:
            base_runs = resolve_runs(base_store.run_records(), base, "BASE")
            candidate_runs = resolve_runs(store_c.run_records(), candidate, "CANDIDATE")
            base_side = load_side(base_store, *base_runs)
            candidate_side = load_side(store_c, *candidate_runs)
            named = candidate_runs + (base_runs if base_store is store_c else [])
            history = [] if no_history else load_history(store_c, named)
            defs = {**base_store.metric_defs(), **store_c.metric_defs()}
        finally:
            if base_store is not store_c:
                base_store.close()
    known = set(base_side.metrics["name"]) | set(candidate_side.metrics["name"])
    gates = tuple(parse_fail_on(fail_on, defs, known)) if fail_on else ()
    options = Options(
        threshold=band,
        gates=gates,
        metrics=metrics,
        across_devices=across_devices,
        resamples=resamples,
        seed=seed,
        machine_relative=machine_relative,
        uncorrected=uncorrected,
    )
    result = compare_sides(base_side, candidate_side, defs, options, history)
    if fmt == "json":
        click.echo(json.dumps(to_json(result), indent=2, allow_nan=False))
    elif fmt == "markdown":
        click.echo(to_markdown(result, only_changes=only_changes))
    else:
        print_table(result, only_changes=only_changes)
    if not result.pairs:
        hint = (
            " Add --across-devices to pair cells of different devices."
            if not across_devices
            else ""
        )
        raise BenchError(
            f"{result.base} and {result.candidate} have no comparable cell in common "
            f"({len(result.mismatched)} with other inputs, {len(result.only_base)} only in the "
            f"base, {len(result.only_candidate)} only in the candidate).{hint}"
        )
    failures = result.failures()
    broken = list(result.broken) if gates else []  # a cell that stopped working fails a gate
    for row in failures:
        ratio = row.ratio
        interval = f" [{ratio.low:.3f}, {ratio.high:.3f}]" if ratio else ""
        point = f"{ratio.ratio:.3f}" if ratio else "-"
        click.echo(
            f"FAIL: {row.metric} regressed in {row.pair.label}: ratio {point}{interval}, "
            f"beyond ±{row.threshold:.3g}",
            err=True,
        )
    for pair in broken:
        reason = f": {pair.candidate_reason}" if pair.candidate_reason else ""
        click.echo(
            f"FAIL: {pair.label} was ok and is now {pair.candidate_status}{reason}", err=True
        )
    if failures or broken:
        sys.exit(EXIT_CELLS_FAILED)


def _percent(text: str, option: str) -> float:
    found = _PERCENT.match(text)
    if not found:
        raise BenchError(f"{option}: {text!r} is not a percentage such as '2%'.")
    return float(found[1]) / 100.0


COMMANDS = [compare]
