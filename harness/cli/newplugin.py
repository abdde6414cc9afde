"""``bench new-plugin``: start a plugin package from bench's template."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.app import load_registry
from harness.errors import BenchError


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "-d",
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where to create the package (default: ./NAME)",
)
def new_plugin(name: str, directory: Path | None) -> None:
    """Create a ready plugin package NAME (e.g. bench-prune): pyproject.toml with the bench
    entry point, one technique, one accuracy task, tests using harness.testing, a README.

    \b
    Then:
      cd NAME && pip install -e . && pytest
    """
    from harness.scaffold import Names, render

    names = Names.of(name)
    registry = load_registry()
    taken = [
        (kind, item)
        for kind, item, known in (
            ("technique", names.short, registry.techniques),
            ("accuracy task", f"{names.short}-match", registry.workloads),
        )
        if item in known
    ]
    if taken:
        kind, item = taken[0]
        raise BenchError(
            f"the new plugin's {kind} would be named '{item}', which an installed plugin "
            "registers already; choose another NAME ('bench plugins' lists the names taken)."
        )
    target = directory if directory is not None else Path(names.dist)
    files = render(names, target)
    click.echo(f"Created {target}/ ({len(files)} files):")
    for path in files:
        click.echo(f"  {path}")
    click.echo(
        f"Next: cd {target} && pip install -e . && pytest; then 'bench plugins {names.short}'."
    )


COMMANDS = [new_plugin]
