"""How long ``bench estimate`` takes for a 70B model at 128k context (issue 14: "in a second").

``python benchmarks/estimate.py [--repeats 7] [--prompt-tokens 131072] [--device h100-sxm]``

The model is a Llama-3-70B architecture written as a bare ``config.json`` into a temporary
folder (hidden 8192, MLP 28672, 80 layers, 64 heads, 8 KV heads, vocabulary 128256, bf16),
the workload a prompt of ``--prompt-tokens`` tokens, one new token, batch 1. Timed:

- ``api``: ``harness.estimate.estimate(config, device, shape)`` in this process, the median
  of ``--repeats`` calls after one untimed call (the first reads the config.json and the
  device table; later calls read the config again, the table is cached);
- ``api + stack``: the same with the stack of the issue's example (``weight-quant`` 4 bits,
  ``kv-quant`` 2 bits, ``kv-evict`` H2O at 20%), after the installed plugins were loaded;
- ``plugin load``: loading the installed plugins, once per process (it is what the first
  estimate with a stack pays: some plugin modules import torch and transformers);
- ``cli``: ``bench estimate ... --format json`` as a subprocess, ``--cli-runs`` times, the
  whole process (interpreter start, imports, estimate, JSON on stdout), without and with
  the stack.

Each line says whether it is under one second. Timings depend on the machine and its load:
run on a quiet machine. Exits 0 whatever the outcome (these are measurements, not tests);
``--strict`` exits 1 when an estimate without a stack (``api``, ``cli``) takes a second or
more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Llama-3-70B's shape (meta-llama/Meta-Llama-3-70B's config.json, the fields that matter).
LLAMA3_70B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
#: The stack of issue 14's example: 4-bit weights, a 2-bit KV cache and H2O.
STACK: list[dict[str, Any]] = [
    {"weight-quant": {"bits": 4}},
    {"kv-quant": {"bits": 2}},
    {"kv-evict": {"policy": "h2o", "budget_ratio": 0.2}},
]
TARGET_S = 1.0


@dataclass(frozen=True)
class Timing:
    """One timed thing: its runs (s), and whether it counts for ``--strict``."""

    name: str
    runs: tuple[float, ...]
    strict: bool

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs)

    @property
    def ok(self) -> bool:
        return self.median_s < TARGET_S


def write_config(folder: Path) -> Path:
    """The Llama-3-70B ``config.json`` in ``folder``; its path."""
    path = folder / "config.json"
    path.write_text(json.dumps(LLAMA3_70B, indent=2) + "\n")
    return path


def timed(call: Callable[[], object], repeats: int) -> tuple[float, ...]:
    """Wall time of ``repeats`` calls, s (``time.perf_counter``)."""
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        out.append(time.perf_counter() - began)
    return tuple(out)


def cli_args(config: Path, device: str, prompt_tokens: int, stack: bool) -> list[str]:
    """The ``bench estimate`` command line (the ``bench`` script beside this interpreter)."""
    script = Path(sys.executable).with_name("bench")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "harness.cli"]
    args = [*head, "estimate", "-m", str(config), "-d", device]
    args += ["--prompt-tokens", str(prompt_tokens), "--batch-size", "1", "--format", "json"]
    for entry in STACK if stack else []:
        args += ["-t", json.dumps(entry)]  # JSON is YAML: the CLI reads it
    return args


def run_cli(args: list[str]) -> dict[str, Any]:
    """Run ``bench estimate``; its JSON object."""
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return dict(json.loads(done.stdout))


def measure(
    device: str = "h100-sxm", prompt_tokens: int = 131072, repeats: int = 7, cli_runs: int = 1
) -> tuple[list[Timing], dict[str, Any]]:
    """Time the estimate (see module docstring).

    Returns:
        The timings, and facts about the estimate itself (its times and memory, whether
        torch was imported before and after the plugins loaded).
    """
    from harness.estimate import Shape, estimate
    from harness.estimate.predict import build_techniques

    shape = Shape("generate", prompt_tokens, 1, 1)
    facts: dict[str, Any] = {"torch_before_plugins": "torch" in sys.modules}
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp))
        model = str(config)
        plain = estimate(model, device, shape)  # untimed: first read of the device table
        api = timed(lambda: estimate(model, device, shape), repeats)

        load = timed(lambda: build_techniques(STACK), 1)  # loads the installed plugins once
        facts["torch_after_plugins"] = "torch" in sys.modules
        stacked = estimate(model, device, shape, stack=STACK)
        api_stack = timed(lambda: estimate(model, device, shape, stack=STACK), repeats)

        cli: list[float] = []
        cli_stack: list[float] = []
        for _ in range(cli_runs):
            cli += timed(lambda: run_cli(cli_args(config, device, prompt_tokens, False)), 1)
            cli_stack += timed(lambda: run_cli(cli_args(config, device, prompt_tokens, True)), 1)
        printed = run_cli(cli_args(config, device, prompt_tokens, False))

    for label, e in (("plain", plain), ("stack", stacked)):
        assert e.prefill is not None and e.decode is not None and e.memory is not None
        facts[label] = {
            "prefill_s": e.prefill.time_s,
            "decode_s": e.decode.time_s,
            "peak_gib": e.memory.peak_bytes / 2**30,
            "weights_gib": e.memory.weights_bytes / 2**30,
            "kv_cache_gib": e.memory.kv_cache_bytes / 2**30,
            "fits": e.fits,
            "rows": len(e.prefill.rows) + len(e.decode.rows),
        }
    facts["cli_agrees"] = printed["prefill"]["time_s"] == facts["plain"]["prefill_s"]
    timings = [
        Timing("api", api, True),
        Timing("api + stack", api_stack, False),
        Timing("plugin load", load, False),
        Timing("cli", tuple(cli), True),
        Timing("cli + stack", tuple(cli_stack), False),
    ]
    return timings, facts


def check() -> Any:
    """The estimate's time as a ``fidelity.Check`` (the shape ``benchmarks/run.py`` prints)."""
    timings, _ = measure()
    from fidelity import Check  # after measuring: it imports torch, which the plugin load times

    by = {t.name: t for t in timings}
    api, cli = by["api"], by["cli"]
    return Check(
        "estimate",
        f"{api.median_s * 1e3:.1f} ms api, {cli.median_s:.2f} s cli",
        f"< {TARGET_S:g} s",
        api.ok and cli.ok,
        "Llama-3-70B at 131072 tokens on h100-sxm (benchmarks/estimate.py); with a technique "
        f"stack: {by['api + stack'].median_s * 1e3:.1f} ms api, {by['cli + stack'].median_s:.2f}"
        f" s cli (plugin load {by['plugin load'].median_s:.2f} s)",
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="h100-sxm", help="device table entry")
    parser.add_argument("--prompt-tokens", type=int, default=131072)
    parser.add_argument("--repeats", type=int, default=7, help="timed in-process calls")
    parser.add_argument("--cli-runs", type=int, default=1, help="timed subprocess runs each")
    parser.add_argument("--strict", action="store_true", help="exit 1 when api or cli ≥ 1 s")
    args = parser.parse_args(argv)

    print(
        f"bench estimate: Llama-3-70B, prompt {args.prompt_tokens}, batch 1, {args.device}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    timings, facts = measure(args.device, args.prompt_tokens, args.repeats, args.cli_runs)
    print(f"\n{'timed':<12} {'median':>9} {'min':>9} {'max':>9} {'runs':>4}  under 1 s")
    for t in timings:
        print(
            f"{t.name:<12} {_ms(t.median_s):>9} {_ms(min(t.runs)):>9} {_ms(max(t.runs)):>9} "
            f"{len(t.runs):>4}  {'yes' if t.ok else 'NO'}"
        )
    print()
    for label in ("plain", "stack"):
        f = facts[label]
        print(
            f"{label}: prefill {f['prefill_s']:.3g} s, decode {f['decode_s'] * 1e3:.3g} ms per "
            f"token, peak {f['peak_gib']:.1f} GiB (weights {f['weights_gib']:.1f}, KV cache "
            f"{f['kv_cache_gib']:.1f}), fits: {f['fits']}, {f['rows']} rows"
        )
    print(
        f"torch imported: before the plugins {facts['torch_before_plugins']}, after "
        f"{facts['torch_after_plugins']}; the CLI's JSON agrees with the API: {facts['cli_agrees']}"
    )
    missed = [t.name for t in timings if t.strict and not t.ok]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
