"""``bench import``: merge a bundle written by ``bench export --bundle`` into a database."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.app import db_option, open_store


@click.command("import")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@db_option
def import_cmd(bundle: Path, db: str | None) -> None:
    """Merge BUNDLE's runs and cells into the database; importing twice adds nothing."""
    from harness.bundle import import_bundle

    with open_store(db) as store:
        done = import_bundle(store, bundle)
        click.echo(
            f"imported {done.cells} cells in {done.runs} new runs from {bundle} "
            f"(origin {done.origin!r}) into {store.where}; {done.present} already there."
        )


COMMANDS = [import_cmd]
