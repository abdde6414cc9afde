"""Terminal tables of ``bench estimate``: per-layer rows, stage totals, memory, devices."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from harness.estimate.result import Estimate, StageEstimate

if TYPE_CHECKING:
    from rich.console import Console

    from harness.estimate.devices import Device

GiB = 2**30
_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def si(value: float | None, unit: str = "") -> str:
    """``68.7G``-style numbers, as in seed 003's Table 1; ``-`` for None."""
    if value is None:
        return "-"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}{unit}"
    return f"{value:.3g}{unit}"


def seconds(value: float | None) -> str:
    """A time in s, ms or µs; ``-`` for None."""
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def _stage_table(stage: StageEstimate) -> object:
    from rich.table import Table

    title = f"{stage.stage}: {seconds(stage.time_s)}"
    if stage.stage == "decode":
        title += f" per token at KV length {stage.kv_tokens}"
        if stage.tokens_per_step not in (None, 1.0) and stage.step_s is not None:
            title += f" ({seconds(stage.step_s)} per step of {stage.tokens_per_step:.2f} tokens)"
    if stage.reason:
        title += f" (unknown: {stage.reason})"
    table = Table(
        "layer",
        "×",
        "OPs",
        "memory access",
        "intensity",
        "bound",
        "time (all ×)",
        title=title,
        title_justify="left",
    )
    for r in stage.rows:
        table.add_row(
            r.row.name,
            str(r.row.count),
            si(r.row.ops),
            si(r.row.memory_access, "B"),
            f"{r.intensity:.4g}",
            r.bound,
            seconds(r.total_time_s if stage.reason is None else None),
        )
    table.add_row(
        "total",
        "",
        si(stage.ops),
        si(stage.bytes, "B"),
        f"{stage.intensity:.4g}",
        stage.bound,
        seconds(stage.step_s),
        style="bold",
    )
    return table


def render_estimate(e: Estimate, console: Console) -> None:
    """Print an estimate: header, notes, a table per stage, the memory breakdown."""
    from rich.table import Table

    s = e.shape
    console.print(
        f"[bold]{e.arch.name}[/bold] ({e.arch.n_params / 1e9:.3g}B params, {e.arch.num_layers} "
        f"layers) on [bold]{e.device.title}[/bold] · {s.kind} prompt {s.prompt_tokens} new "
        f"{s.new_tokens} batch {s.batch_size} · {e.dtype} · stack {' + '.join(e.stack) or 'none'}"
    )
    console.print(
        f"roof: {si(e.device.peak(e.dtype), 'FLOP/s')}, {si(e.device.bandwidth_bytes_s, 'B/s')} "
        f"({e.device.source})",
        markup=False,
    )
    if e.no_estimate:
        console.print(
            f"no estimate: {', '.join(e.no_estimate)} implement(s) no Technique.estimate; "
            "without it any number would leave the technique out.",
            markup=False,
        )
        return
    for note in e.notes:
        console.print(f"  {note}", markup=False)
    for quantity, reason in e.unknown.items():
        console.print(f"  {quantity}: unknown ({reason})", markup=False)
    for stage in e.stages:
        console.print(_stage_table(stage))
    m = e.memory
    if m is None:
        return
    table = Table("memory", "GiB", title="memory", title_justify="left")
    parts = [
        ("weights", m.weights_bytes),
        ("  of which quantization metadata", m.quant_meta_bytes),
        ("weights offloaded to host", m.offloaded_bytes),
        ("other models (draft)", m.extra_weights_bytes),
        ("KV cache", m.kv_cache_bytes),
        ("activations (transient)", m.activations_bytes),
        ("gradients", m.gradient_bytes),
        ("optimizer state", m.optimizer_state_bytes),
        ("framework overhead", m.overhead_bytes),
    ]
    for name, value in parts:
        if value:
            table.add_row(name, f"{value / GiB:.3f}")
    table.add_row("predicted peak", f"{m.peak_bytes / GiB:.3f}", style="bold")
    if e.capacity_bytes:
        verdict = "fits" if e.fits else "does not fit"
        table.add_row(f"device memory: {verdict}", f"{e.capacity_bytes / GiB:.3f}")
    console.print(table)


def render_devices(devices: Mapping[str, Device], console: Console) -> None:
    """The device table."""
    from rich.table import Table

    table = Table(
        "name", "device", "memory GiB", "bandwidth", "fp32", "fp16/bf16", "int8", "host link"
    )
    for name, d in devices.items():
        table.add_row(
            name,
            d.title,
            f"{d.memory_bytes / GiB:.1f}" if d.memory_bytes else "this machine",
            si(d.bandwidth_bytes_s, "B/s"),
            si(d.peak("float32"), "FLOP/s"),
            si(d.peak("bfloat16") or d.peak("float16"), "FLOP/s"),
            si(d.peak("int8"), "OP/s"),
            si(d.host_link_bytes_s, "B/s"),
        )
    console.print(table)
