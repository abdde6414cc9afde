"""The ``bench`` command group, its shared options, and the entry point.

Each command lives in a module of this package by what it is for (``measure``,
``results``, ``info``); ``harness.cli`` adds them all to the group.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from harness.errors import EXIT_INTERNAL, EXIT_OK, BenchError

DB_HELP = "results database URL (default: $BENCH_DB or sqlite:///results/bench.db)"


def load_registry() -> Any:
    """The installed plugins, validated (``PluginError`` names a broken one)."""
    from harness.plugins import get_plugin_manager
    from harness.registry import Registry

    return Registry(get_plugin_manager())


def db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--db URL`` (or ``$BENCH_DB``)."""
    return click.option("--db", "db", envvar="BENCH_DB", default=None, help=DB_HELP)(f)


def open_store(db: str | None, read_only: bool = False) -> Any:
    from harness.store import Store

    return Store.open(db, read_only=read_only)


def resolve_url(db: str | None) -> str:
    from harness.store import Store

    store = Store.open(db, read_only=True)
    try:
        return store.url
    finally:
        store.close()


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
