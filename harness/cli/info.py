"""What is installed and possible here: ``bench plugins``, ``doctor`` and ``schema``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from harness.cli.app import load_registry


@click.command()
def plugins() -> None:
    """List installed plugins, their versions, what each registers, and technique options."""
    from rich.console import Console
    from rich.table import Table

    registry = load_registry()
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
