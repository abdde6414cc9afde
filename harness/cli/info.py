"""What is installed and possible here: ``bench plugins``, ``doctor`` and ``schema``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from harness.cli.app import load_registry


@click.command()
@click.argument("name", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: the same facts for tools",
)
def plugins(name: str | None, fmt: str) -> None:
    """List installed plugins, what each registers, and every parameter.

    With NAME (a technique, workload, accuracy task, probe, metric or source), show that
    one in full: its plugin and version, what it is, and each parameter's type, range,
    default and description.
    """
    import json

    from harness import plugin_info

    registry = load_registry()
    items = plugin_info.describe(registry)
    if name is not None:
        items = plugin_info.find(items, name)
    if fmt == "json":
        click.echo(json.dumps(plugin_info.as_json(registry, items), indent=2))
        return
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    if name is not None:
        for item in items:
            _print_item(console, item)
        return
    console.print(_plugins_table(registry))
    for kind in ("technique", "workload", "accuracy task"):
        console.print(_parameters_table(kind, [i for i in items if i.kind == kind]))
    console.print(
        "'bench plugins NAME' shows one in full (metrics too: unit, direction, kind); "
        "'bench plugins --format json' gives everything to tools."
    )


def _plugins_table(registry: Any) -> Any:
    from rich.table import Table

    from harness import plugin_info
    from harness.pluginapi import PLUGIN_API_VERSION

    api = {row.name: row.api for row in plugin_info.plugins(registry)}
    grouped: dict[tuple[str, str], dict[str, list[str]]] = {}
    for row in registry.registrations():
        grouped.setdefault((row.plugin, row.version), {}).setdefault(row.kind, []).append(row.name)
    table = Table(
        "plugin", "version", "API", "registers", title=f"plugins (plugin API {PLUGIN_API_VERSION})"
    )
    for (plugin, version), kinds in grouped.items():
        parts = [f"{kind}s: {', '.join(names)}" for kind, names in kinds.items()]
        table.add_row(*_cells(plugin, version, api.get(plugin) or "-", "\n".join(parts)))
    return table


def _parameters_table(kind: str, items: list[Any]) -> Any:
    from rich.table import Table

    table = Table(kind, "parameter", "type", "default", "range", "description")
    table.title = f"{kind} parameters"
    for item in items:
        if not item.parameters:
            table.add_row(*_cells(item.name, "-", "", "", "", item.summary))
        for i, p in enumerate(item.parameters):
            table.add_row(
                *_cells(
                    item.name if i == 0 else "",
                    p.name,
                    p.type,
                    "(required)" if p.required else _shown(p.default),
                    p.range or "",
                    p.description or "",
                )
            )
    return table


def _print_item(console: Any, item: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    console.print(
        Text.assemble(
            (f"{item.kind} {item.name}", "bold"), f": plugin {item.plugin} ({item.version})"
        )
    )
    if item.summary:
        console.print(item.summary, markup=False)
    for key, value in item.details.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        console.print(f"  {key.replace('_', ' ')}: {shown if shown != '' else '-'}", markup=False)
    if item.parameters:
        table = Table("parameter", "type", "default", "range", "description")
        for p in item.parameters:
            default = "(required)" if p.required else _shown(p.default)
            table.add_row(*_cells(p.name, p.type, default, p.range or "", p.description or ""))
        console.print(table)
    elif item.kind in ("technique", "workload", "accuracy task"):
        console.print("  parameters: none")


def _cells(*texts: str) -> list[Any]:
    """Table cells shown as they are: ``list[int]`` is not rich markup."""
    from rich.text import Text

    return [Text(text) for text in texts]


def _shown(value: Any) -> str:
    import json

    return json.dumps(value)


@click.command()
@click.option(
    "--bandwidth",
    is_flag=True,
    help="measure memory bandwidth and matmul peaks; stored for this machine's roofline",
)
@click.option("--device", default="cpu", show_default=True, help="device for --bandwidth")
def doctor(bandwidth: bool, device: str) -> None:
    """Show what this machine can measure: devices, probes (and why one cannot), libraries."""
    from harness.doctor import diagnose, render
    from harness.report import console

    render(diagnose(load_registry()), console)
    if bandwidth:
        from harness.estimate import probe

        console.print(f"\nMeasuring {device} (a few seconds) ...", markup=False)
        result = probe.measure(device)
        path = probe.store(result)
        peaks = ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in result.peak_flops.items())
        console.print(
            f"Roofline   {device}: bandwidth {result.bandwidth_bytes_s / 1e9:.1f} GB/s; {peaks}"
            f"\n           stored in {path}; bench estimate and every run's prediction use it",
            markup=False,
        )
        return
    from harness.estimate.probe import measured

    found = measured("cpu")
    if found is None:
        console.print(
            "Roofline   cpu: not measured; 'bench doctor --bandwidth' measures this machine's "
            "bandwidth and peaks for the estimate",
            markup=False,
        )
    else:
        console.print(
            f"Roofline   cpu: bandwidth {found.bandwidth_bytes_s / 1e9:.1f} GB/s, measured "
            f"{found.when} ('bench doctor --bandwidth' measures again)",
            markup=False,
        )


@click.command()
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


COMMANDS = [plugins, doctor, schema]
