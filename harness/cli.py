"""The ``bench`` command."""

from __future__ import annotations

import os
import shutil
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
    click.echo(
        f"\nResults are in {store.url}. Open the dashboard: {_command()} dashboard{_db_arg(db)}"
    )
    if summary.failed:
        click.echo(f"{summary.failed} cell(s) failed; see the status and reason columns.")
        sys.exit(EXIT_CELLS_FAILED)


def _command() -> str:
    """How to call bench again: ``bench`` when that is on PATH, else the path it ran from
    (``.venv/bin/bench`` after ``make run``)."""
    ran = Path(sys.argv[0])
    on_path = shutil.which("bench")
    if ran.name != "bench" or (on_path and Path(on_path).resolve() == ran.resolve()):
        return "bench"
    relative = os.path.relpath(ran)
    return str(ran) if relative.startswith("..") else relative


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
    _validate_models(spec, registry)
    click.echo(f"{suite}: ok, {len(spec.cells)} cells. 'bench run {suite}' measures them.")


def _validate_models(spec: Any, registry: Any) -> None:
    """Ask each technique whether its config fits each model (``Technique.validate_model``).

    Models whose config.json cannot be read without loading or network are left to the
    worker, where ``prepare`` makes the same check.
    """
    import json

    from harness.errors import SuiteError

    configs: dict[str, dict[str, Any] | None] = {}
    done: set[tuple[str, str, str]] = set()
    for cell in spec.cells:
        model_id = cell.model.id
        if model_id not in configs:
            configs[model_id] = _model_config(model_id)
        model_config = configs[model_id]
        if model_config is None:
            continue
        for entry in cell.stack:
            key = (
                model_id,
                entry.name,
                json.dumps(dict(entry.config), sort_keys=True, default=str),
            )
            if key in done:
                continue
            done.add(key)
            try:
                registry.techniques[entry.name].validate_model(entry.config, model_config)
            except BenchError as exc:
                raise SuiteError(f"{spec.path}: model {model_id}: {exc}") from exc


def _model_config(model_id: str) -> dict[str, Any] | None:
    """A model's config.json as a dict, read from disk only: built-in cache, folder, hub cache."""
    import json

    from harness.assets import BUILTIN_MODELS, cache_dir

    folder = Path(model_id).expanduser()
    if model_id in BUILTIN_MODELS:
        path: Path | None = cache_dir() / "models" / model_id / "config.json"
    elif (folder / "config.json").is_file():
        path = folder / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model_id, "config.json")
        except ValueError:  # not a hub id
            return None
        path = Path(found) if isinstance(found, str) else None
    if path is None or not path.is_file():
        return None
    config: dict[str, Any] = json.loads(path.read_text())
    return config


@cli.command()
def plugins() -> None:
    """List installed plugins, their versions, what each registers, and technique options."""
    from rich.console import Console
    from rich.table import Table

    registry = _registry()
    grouped: dict[tuple[str, str], dict[str, list[str]]] = {}
    for row in registry.registrations():
        grouped.setdefault((row.plugin, row.version), {}).setdefault(row.kind, []).append(row.name)
    table = Table("plugin", "version", "registers", title="plugins")
    for (plugin, version), kinds in grouped.items():
        parts = [f"{kind}s: {', '.join(names)}" for kind, names in kinds.items()]
        table.add_row(plugin, version, "\n".join(parts))
    options = Table("technique", "kind", "parameters", title="technique options")
    for name, cls in sorted(registry.techniques.items()):
        params = [
            f"{field}: {str(info.annotation).replace('typing.', '')}"
            + ("" if info.is_required() else f" = {info.get_default(call_default_factory=True)!r}")
            for field, info in cls.Config.model_fields.items()
        ]
        options.add_row(name, ", ".join(sorted(cls.kind)), "\n".join(params) or "-")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(options)


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
    rows = _store(db, read_only=True).export(fmt, output, run_id=run_id)
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
def doctor() -> None:
    """Show what this machine can measure: devices, probes (and why one cannot), libraries."""
    from harness.doctor import diagnose, render
    from harness.report import console

    render(diagnose(_registry()), console)


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
