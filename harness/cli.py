"""The ``bench`` command."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from harness.errors import EXIT_CELLS_FAILED, EXIT_INTERNAL, EXIT_OK, BenchError

DB_HELP = "results database URL (default: $BENCH_DB or sqlite:///results/bench.db)"


def _registry() -> Any:
    from harness.plugins import get_plugin_manager
    from harness.registry import Registry

    return Registry(get_plugin_manager())


def _db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--db", "db", envvar="BENCH_DB", default=None, help=DB_HELP)(f)


def _store(db: str | None, read_only: bool = False) -> Any:
    from harness.store import Store

    return Store.open(db, read_only=read_only)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="show tracebacks for errors")
@click.version_option(package_name="bench")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """bench: measure what LLM memory and efficiency techniques save and cost.

    \b
    Typical use:
      bench check suites/inference.yaml     validate a suite, load nothing
      bench run suites/inference.yaml       measure every cell into results/bench.db
      bench results                         print the latest results
      bench dashboard                       leaderboard and Pareto frontiers in a browser
    """
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@_db_option
@click.option("--rerun", is_flag=True, help="measure cells again even if they have results")
@click.option("--dry-run", is_flag=True, help="print the matrix of cells and exit")
def run(suite: Path, db: str | None, rerun: bool, dry_run: bool) -> None:
    """Measure every cell of SUITE; resume where an interrupted run stopped."""
    from harness import report
    from harness.runner import run_suite
    from harness.suite import load_suite

    registry = _registry()
    spec = load_suite(suite, registry)
    if dry_run:
        report.print_matrix(spec)
        return
    store = _store(db)
    with report.Progress(len(spec.cells)) as progress:
        summary = run_suite(spec, store, registry, rerun=rerun, on_result=progress.update)
    if summary.run_id is None:
        click.echo(
            f"All {summary.total} cells of '{spec.name}' already have results on this machine; "
            "'--rerun' measures them again."
        )
    report.print_results(store, suite=spec.name, keys={c.key for c in spec.cells})
    click.echo(f"\nResults are in {store.url}. Open the dashboard: bench dashboard{_db_arg(db)}")
    if summary.failed:
        click.echo(f"{summary.failed} cell(s) failed; see the status and reason columns.")
        sys.exit(EXIT_CELLS_FAILED)


def _db_arg(db: str | None) -> str:
    return f" --db {db}" if db else ""


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
def check(suite: Path) -> None:
    """Validate SUITE (schema, techniques, parameters) without loading any model."""
    from harness.models import resolve_source
    from harness.suite import load_suite

    registry = _registry()
    spec = load_suite(suite, registry)
    for model in {c.model.id for c in spec.cells}:
        resolve_source(model, registry.model_sources).check(model)
    click.echo(f"{suite}: ok, {len(spec.cells)} cells. 'bench run {suite}' measures them.")


@cli.command()
def plugins() -> None:
    """List installed plugins, their versions and what each registers."""
    from rich.console import Console
    from rich.table import Table

    table = Table("plugin", "version", "kind", "name")
    for row in _registry().registrations():
        table.add_row(row.plugin, row.version, row.kind, row.name)
    Console().print(table)


@cli.command()
@_db_option
@click.option("--run", "run_id", type=int, default=None, help="one run's cells (bench runs)")
@click.option("--suite", default=None, help="only this suite's cells (its name)")
def results(db: str | None, run_id: int | None, suite: str | None) -> None:
    """Print results: the latest of each cell, with medians and 95% CIs."""
    from harness import report

    report.print_results(_store(db, read_only=True), suite=suite, run_id=run_id)


@cli.command()
@_db_option
def runs(db: str | None) -> None:
    """List runs with their cell counts."""
    from harness import report

    report.print_runs(_store(db, read_only=True))


@cli.command()
@_db_option
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "parquet"]), default="csv")
@click.option("--run", "run_id", type=int, default=None, help="export only this run")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export(db: str | None, fmt: str, run_id: int | None, output: Path | None) -> None:
    """Write one row per cell (metrics as columns) as CSV, JSON or Parquet."""
    output = output or Path("results") / f"export.{fmt}"
    rows = _store(db, read_only=True).export(fmt, output, run_id=run_id)  # type: ignore[arg-type]
    click.echo(f"wrote {rows} rows to {output}")


@cli.command()
@_db_option
@click.option("--port", type=int, default=8501, show_default=True)
def dashboard(db: str | None, port: int) -> None:
    """Open the leaderboard and Pareto frontiers (Streamlit, on 127.0.0.1)."""
    from dashboard.launch import run_dashboard

    _store(db, read_only=True).close()  # fail fast, with the fix, on a bad database
    sys.exit(run_dashboard(_resolve_url(db), port))


@cli.command("report")
@_db_option
@click.option("--run", "run_id", type=int, default=None, help="report this run (default: latest)")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def report_cmd(db: str | None, run_id: int | None, output: Path | None) -> None:
    """Write the leaderboard and frontier charts into one static HTML file."""
    from dashboard.report import write_report

    path = write_report(_resolve_url(db), output or Path("results/report.html"), run_id)
    click.echo(f"wrote {path}")


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def schema(output: Path | None) -> None:
    """Print (or write) the JSON schema of the suite format."""
    import json

    from harness.suite import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        click.echo(text, nl=False)


def _resolve_url(db: str | None) -> str:
    from harness.store import Store

    store = Store.open(db, read_only=True)
    try:
        return store.url
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point: one ``ERROR:`` line and a documented exit code for every failure."""
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        code = cli.main(args=argv, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else EXIT_OK)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BenchError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"ERROR: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; 'bench run' again resumes where this stopped.", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        click.echo(
            f"ERROR: internal error: {type(exc).__name__}: {exc}. "
            "Run again with --debug and report the traceback.",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
