"""Reading results: ``bench results``, ``runs``, ``export``, ``report`` and ``dashboard``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from harness.cli.app import db_option, open_store, resolve_url


@click.command()
@db_option
@click.option("--run", "run_id", type=int, default=None, help="one run's cells (bench runs)")
@click.option("--suite", default=None, help="only this suite's cells (its name)")
@click.option(
    "--predicted",
    is_flag=True,
    help="measured beside predicted: peak, TTFT and TPOT against the estimate each cell "
    "stored, and the roofline fractions (docs/estimate.md)",
)
def results(db: str | None, run_id: int | None, suite: str | None, predicted: bool) -> None:
    """Print results: the latest of each cell, with medians and 95% CIs."""
    from harness import report

    store = open_store(db, read_only=True)
    show = report.print_predicted if predicted else report.print_results
    show(store, suite=suite, run_id=run_id)


@click.command()
@db_option
def runs(db: str | None) -> None:
    """List runs with their cell counts."""
    from harness import report

    report.print_runs(open_store(db, read_only=True))


@click.command()
@db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "parquet"]), default="csv")
@click.option("--run", "run_id", type=int, default=None, help="export only this run")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write a bundle instead (.tar.gz: runs, cells, samples, environment) for 'bench import'",
)
@click.option("--origin", default=None, help="the bundle's provenance label (default host:db)")
def export(
    db: str | None,
    fmt: str,
    run_id: int | None,
    output: Path | None,
    bundle: Path | None,
    origin: str | None,
) -> None:
    """Write one row per cell (metrics as columns) as CSV, JSON or Parquet, or a bundle."""
    if bundle is not None:
        from harness.bundle import export_bundle

        done = export_bundle(open_store(db, read_only=True), bundle, run_id=run_id, origin=origin)
        click.echo(
            f"wrote {done.runs} runs, {done.cells} cells to {bundle} (origin {done.origin!r}); "
            f"'bench import {bundle}' merges it into another database"
        )
        return
    output = output or Path("results") / f"export.{fmt}"
    rows = open_store(db, read_only=True).export(fmt, output, run_id=run_id)
    click.echo(f"wrote {rows} rows to {output}")


@click.command()
@db_option
@click.option("--port", type=int, default=8501, show_default=True)
def dashboard(db: str | None, port: int) -> None:
    """Open the leaderboard and Pareto frontiers (Streamlit, on 127.0.0.1)."""
    from dashboard.launch import run_dashboard

    open_store(db, read_only=True).close()  # fail fast, with the fix, on a bad database
    sys.exit(run_dashboard(resolve_url(db), port))


@click.command("report")
@db_option
@click.option("--run", "run_id", type=int, default=None, help="report this run (default: latest)")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def report_cmd(db: str | None, run_id: int | None, output: Path | None) -> None:
    """Write the leaderboard and frontier charts into one static HTML file."""
    from dashboard.report import write_report

    path = write_report(resolve_url(db), output or Path("results/report.html"), run_id)
    click.echo(f"wrote {path}")


COMMANDS = [results, runs, export, dashboard, report_cmd]
