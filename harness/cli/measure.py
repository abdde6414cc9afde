"""``bench run`` and ``bench check``: measure a suite, or validate it without loading a model."""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harness.cli.app import db_option, load_registry, open_store
from harness.errors import EXIT_CELLS_FAILED, SuiteError

if TYPE_CHECKING:
    from harness.preflight import Estimate


def max_cells_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--max-cells N``: the largest matrix accepted (default 10,000)."""
    return click.option(
        "--max-cells",
        type=click.IntRange(min=1),
        default=None,
        help="refuse a suite that expands into more cells than this (default 10,000)",
    )(f)


def load_checked(suite: Path, db: str | None, max_cells: int | None) -> tuple[Any, Any, Estimate]:
    """Load and validate SUITE exactly as ``bench check`` does; print its warnings.

    Returns:
        The registry, the suite and its wall-time estimate.

    Raises:
        SuiteError: the suite, its models or texts are invalid, or the matrix is larger
            than ``max_cells`` (the message then carries the estimate).
    """
    from harness.preflight import cells_per_model, estimate, load_history, preflight
    from harness.suite import MAX_CELLS, TooManyCells, load_suite

    registry = load_registry()
    try:
        spec = load_suite(suite, registry, max_cells=max_cells or MAX_CELLS)
    except TooManyCells as exc:
        history, where_from = load_history(db)
        models = [m if isinstance(m, str) else m.id for m in exc.spec.models]
        guess = estimate(exc.spec, cells_per_model(models, exc.cells), history, where_from)
        raise SuiteError(exc.message(str(guess))) from exc
    for line in preflight(spec, registry):
        click.echo(line, err=True)
    history, where_from = load_history(db)
    guess = estimate(spec.file, Counter(c.model.id for c in spec.cells), history, where_from)
    return registry, spec, guess


@click.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.option("--rerun", is_flag=True, help="measure cells again even if they have results")
@click.option("--dry-run", is_flag=True, help="print the matrix of cells and exit")
@max_cells_option
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="where cells run: worker processes here, or Ray actors (pip install 'bench[ray]')",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster: auto, ray://host:port or host:port (default: a local cluster)",
)
@click.option(
    "--lease",
    "lease_s",
    type=click.FloatRange(min=1),
    default=60,
    show_default=True,
    help="seconds a claimed cell stays claimed without a heartbeat (concurrent runners)",
)
@click.option(
    "--no-preflight",
    is_flag=True,
    help="run cells the estimate predicts will not fit (and those it skipped before)",
)
def run(
    suite: Path,
    db: str | None,
    rerun: bool,
    dry_run: bool,
    max_cells: int | None,
    executor: str,
    address: str | None,
    lease_s: float,
    no_preflight: bool,
) -> None:
    """Measure every cell of SUITE; resume where an interrupted run stopped.

    SUITE is validated exactly as 'bench check' validates it before anything is written.
    Several runs of the same suite against the same database (from this machine or
    others) split the cells between them; see docs/scale-out.md.
    """
    from harness import report
    from harness.executors import make_executor
    from harness.runner import run_suite
    from harness.suite import MAX_CELLS, load_suite, without_preflight

    registry, spec, guess = load_checked(suite, db, max_cells)
    if no_preflight:
        spec = without_preflight(spec)
    if dry_run:
        report.print_matrix(spec)
        click.echo(f"{_cells(len(spec.cells))}, {guess}.")
        return
    where = make_executor(executor, address=address)
    try:
        devices = where.devices()
        if devices is not None:  # expanded against the cluster's devices
            spec = load_suite(suite, registry, devices=devices, max_cells=max_cells or MAX_CELLS)
            if no_preflight:
                spec = without_preflight(spec)
        store = open_store(db)
    except BaseException:
        where.close()
        raise
    with report.Progress(len(spec.cells)) as progress:
        summary = run_suite(
            spec,
            store,
            registry,
            rerun=rerun,
            on_result=progress.update,
            executor=where,
            lease_s=lease_s,
        )
    if summary.by_others:
        click.echo(f"{summary.by_others} cell(s) were measured by other runners of this suite.")
    if summary.run_id is None and not summary.by_others:
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
@db_option
@max_cells_option
def check(suite: Path, db: str | None, max_cells: int | None) -> None:
    """Validate SUITE (schema, techniques, parameters, models, texts) without loading any
    model; print its cell count and an estimate of its wall time (from earlier results in
    the database, when there are some)."""
    _, spec, guess = load_checked(suite, db, max_cells)
    cells = _cells(len(spec.cells))
    click.echo(f"{suite}: ok, {cells}, {guess}. 'bench run {suite}' measures them.")


def _cells(count: int) -> str:
    return f"{count} cell" if count == 1 else f"{count} cells"


COMMANDS = [run, check]
