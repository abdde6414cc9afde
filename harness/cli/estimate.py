"""``bench estimate``: roofline times and memory of a stack on a device, offline, in a second."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from harness.cli.app import load_registry
from harness.errors import BenchError

DTYPES = ("auto", "fp32", "bf16", "fp16", "float32", "bfloat16", "float16")


def _technique(text: str) -> Any:
    """A ``--technique`` value: a name, or YAML ``name: {param: value}``."""
    import yaml

    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BenchError(
            f"--technique {text!r}: not YAML ({exc}). Write it as in a suite, e.g. "
            "-t 'weight-quant: {bits: 4}'."
        ) from exc
    return parsed


@click.command("estimate")
@click.option(
    "--model", "-m", default=None, help="built-in name, model folder, config.json or cached hub id"
)
@click.option(
    "--device", "-d", default="cpu", show_default=True, help="device table entry (--list-devices)"
)
@click.option(
    "--workload", type=click.Choice(["generate", "train"]), default="generate", show_default=True
)
@click.option(
    "--prompt-tokens",
    type=click.IntRange(1),
    default=2048,
    show_default=True,
    help="prompt (train: sequence) tokens",
)
@click.option(
    "--new-tokens",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="generated tokens; decode is timed at KV length prompt + new − 1",
)
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default="auto",
    show_default=True,
    help="auto: the checkpoint's",
)
@click.option(
    "--technique",
    "-t",
    "techniques",
    multiple=True,
    help="a stack entry, repeated in order: -t 'weight-quant: {bits: 4}' -t 'kv-quant: {bits: 2}'",
)
@click.option(
    "--acceptance-rate",
    type=click.FloatRange(0, 1),
    default=None,
    help="speculative decoding: assumed share of drafts accepted",
)
@click.option(
    "--memory-gib",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="capacity to check the peak against (default: the device's)",
)
@click.option(
    "--attention",
    type=click.Choice(["fused", "unfused"]),
    default="fused",
    show_default=True,
    help="fused: one kernel (SDPA, FlashAttention); unfused: Q·Kᵀ, softmax, S·V stored "
    "(seed 003's Table 1)",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option("--list-devices", is_flag=True, help="print the device table and exit")
def estimate_cmd(
    model: str | None,
    device: str,
    workload: str,
    prompt_tokens: int,
    new_tokens: int,
    batch_size: int,
    dtype: str,
    techniques: tuple[str, ...],
    acceptance_rate: float | None,
    memory_gib: float | None,
    attention: str,
    fmt: str,
    list_devices: bool,
) -> None:
    """Predict roofline times and memory before renting the card (docs/estimate.md).

    \b
    Per layer: operations, bytes moved, arithmetic intensity, bound and time at the
    roofline, for prefill and one decode step; memory: weights, KV cache, activations,
    optimizer state (train), predicted peak and whether it fits.

    \b
      bench estimate -m path/to/config.json -d a6000 --prompt-tokens 2048 --dtype fp16
      bench estimate -m config.json -d a6000 --prompt-tokens 32768 \\
          -t 'weight-quant: {bits: 4}' -t 'kv-quant: {bits: 2}' \\
          -t 'kv-evict: {policy: h2o, budget_ratio: 0.2}' --format json
    """
    from harness.estimate import Shape, estimate, load_devices
    from harness.estimate.render import render_devices, render_estimate
    from harness.report import console

    if list_devices:
        if fmt == "json":
            click.echo(json.dumps({n: d.as_dict() for n, d in load_devices().items()}, indent=2))
        else:
            render_devices(load_devices(), console)
        return
    if not model:
        raise BenchError(
            "bench estimate needs --model (a config.json, model folder or built-in name)."
        )
    stack = [_technique(t) for t in techniques]
    registry = load_registry() if stack else None
    shape = Shape(
        "train" if workload == "train" else "generate",
        prompt_tokens,
        new_tokens if workload == "generate" else 1,
        batch_size,
        acceptance_rate,
    )
    result = estimate(
        model,
        device,
        shape,
        dtype=None if dtype == "auto" else dtype,
        stack=stack,
        registry=registry,
        capacity_bytes=memory_gib * 2**30 if memory_gib else None,
        attention="unfused" if attention == "unfused" else "fused",
    )
    if fmt == "json":
        json.dump(result.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_estimate(result, console)


COMMANDS = [estimate_cmd]
