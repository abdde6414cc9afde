"""``bench run`` and ``bench check``: measure a suite, or validate it without loading a model."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from harness.cli.app import db_option, load_registry, open_store
from harness.errors import EXIT_CELLS_FAILED, BenchError


@click.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.option("--rerun", is_flag=True, help="measure cells again even if they have results")
@click.option("--dry-run", is_flag=True, help="print the matrix of cells and exit")
@click.option(
    "--no-preflight",
    is_flag=True,
    help="run cells the estimate predicts will not fit (and those it skipped before)",
)
def run(suite: Path, db: str | None, rerun: bool, dry_run: bool, no_preflight: bool) -> None:
    """Measure every cell of SUITE; resume where an interrupted run stopped."""
    from harness import report
    from harness.runner import run_suite
    from harness.suite import load_suite, without_preflight

    registry = load_registry()
    spec = load_suite(suite, registry)
    if no_preflight:
        spec = without_preflight(spec)
    if dry_run:
        report.print_matrix(spec)
        return
    store = open_store(db)
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


@click.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
def check(suite: Path) -> None:
    """Validate SUITE (schema, techniques, parameters) without loading any model."""
    from harness.models import resolve_source
    from harness.suite import load_suite

    registry = load_registry()
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


COMMANDS = [run, check]
