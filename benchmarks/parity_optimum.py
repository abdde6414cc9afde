"""TTFT, TPOT and peak memory of bench against optimum-benchmark, run alternately.

    python benchmarks/parity_optimum.py [--rounds 6] [--prompt-tokens 128] [--new-tokens 32]

Both tools measure the same model (the converted built-in ``smollm2-135m`` folder), the same
prompt tokens (bench's, cut from the built-in text; optimum-benchmark's random input
generator is replaced by them, see ``ob_driver.py``), greedy decoding of exactly
``new_tokens`` tokens, batch 1, float32, on the CPU, offline. optimum-benchmark 0.6 runs in
its own virtual environment (``--venv``, default ``.venv-ob``; created on first use with the
CPU torch first, then optimum-benchmark, then the transformers 4 and datasets 4 it works
with: 0.6.0 imports names transformers 5 removed), so its pins never touch bench's.

Each round runs one bench cell (``warmup`` + ``repeats`` runs) and one optimum-benchmark
benchmark (``warmup`` + ``--ob-iterations`` iterations), alternating which goes first.
Printed per metric: the median over rounds of bench / optimum-benchmark with its 95%
distribution-free CI (``harness.meter.summarize``; 6 rounds or more for 95%):

- TTFT: bench ``latency.ttft_s`` / optimum-benchmark's per-token prefill latency (start of
  ``generate`` to its first logits-processor call);
- TPOT: bench ``latency.tpot_s`` / optimum-benchmark decode latency / (new_tokens − 1);
- peak memory: bench ``memory.peak_rss_bytes`` (VmHWM over the generation) /
  optimum-benchmark ``max_ram`` (the process's RSS polled over a generation).

Then the wall time each tool needs for a 95% CI of TPOT within ±2% (``--target-ci``): bench
runs one cell with ``policy.target_ci`` (adaptive repeats); optimum-benchmark runs a fixed
``--ob-ci-iterations`` and the script finds the first iteration count whose interval (same
method) is that narrow, and the wall time spent up to it. ``--rounds 0`` runs only this
phase. Timings depend on the machine's load: the load averages are printed at the start,
after the rounds and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DRIVER = Path(__file__).resolve().parent / "ob_driver.py"
OB_REQUIREMENTS = (
    ["torch==2.13.0"],  # the CPU build (this machine's wheel) before anything pulls CUDA
    ["optimum-benchmark==0.6.*"],
    ["transformers<5", "datasets>=4,<5"],  # what optimum-benchmark 0.6.0 imports from
)
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def ensure_venv(venv: Path) -> Path:
    """The Python of optimum-benchmark's own virtual environment, created on first use."""
    python = venv / "bin" / "python"
    if python.exists() and _imports(python):
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for requirement in OB_REQUIREMENTS:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirement], check=True)
    if not _imports(python):
        raise SystemExit(f"{venv}: optimum-benchmark does not import; remove the folder")
    return python


def _imports(python: Path) -> bool:
    probe = "import optimum_benchmark.scenarios.inference.scenario"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, env=_env())
    return done.returncode == 0


def _env() -> dict[str, str]:
    return {**os.environ, **OFFLINE, "TOKENIZERS_PARALLELISM": "false"}


class Bench:
    """bench's side: one worker (model loaded once), one generate cell per call."""

    def __init__(self, prompt_tokens: int, new_tokens: int) -> None:
        from harness.testing import registry_with
        from harness.worker import Worker

        self.worker = Worker("cpu", registry_with())
        self.workload = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens}

    def prompt(self) -> list[list[int]]:
        """The prompt rows bench's generate workload measures."""
        from harness.workloads.generate import prompt_ids

        tokenizer = self.worker.load(self._cell({}).model).tokenizer
        text = self.worker.text("shakespeare", "prompt")
        ids = prompt_ids(tokenizer, text, 1, self.workload["prompt_tokens"])
        rows: list[list[int]] = ids.tolist()
        return rows

    def _cell(self, policy: dict[str, Any]) -> Any:
        from harness.suite import suite_from_data

        data = {
            "name": "parity",
            "models": ["smollm2-135m"],
            "devices": ["cpu"],
            "workload": {"generate": self.workload},
            "techniques": ["baseline"],
            "policy": {"timeout_s": 3600, **policy},
        }
        (cell,) = suite_from_data(data, self.worker.registry, devices=["cpu"]).cells
        return cell

    def run(self, policy: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """The cell's values by name, and its wall time (s, the model already loaded)."""
        cell = self._cell(policy)
        self.worker.load(cell.model)
        started = time.perf_counter()
        result = self.worker.run(cell)
        wall = time.perf_counter() - started
        if result.status != "ok":
            raise SystemExit(f"bench cell {result.status}: {result.reason}")
        return {v.name: v for v in result.values}, wall


def run_ob(
    python: Path, model: Path, ids: Path, new_tokens: int, iterations: int, warmup: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ob.json"
        command = [str(python), str(DRIVER), "--model", str(model), "--ids", str(ids)]
        command += ["--new-tokens", str(new_tokens), "--iterations", str(iterations)]
        command += ["--warmup", str(warmup), "--out", str(out)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=_env())
        if done.returncode != 0:
            raise SystemExit(f"optimum-benchmark failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        result["process_s"] = time.perf_counter() - started
        return result


def ratio_line(name: str, ratios: list[float]) -> str:
    from harness.meter import median_ci_coverage, summarize

    s = summarize(ratios)
    return (
        f"{name:<12} bench/optimum-benchmark = {s.median:.3f} "
        f"[{s.ci_low:.3f}, {s.ci_high:.3f}] ({median_ci_coverage(s.n):.0%} CI, {s.n} rounds)"
    )


def first_narrow(samples: list[float], target: float) -> int | None:
    """The fewest leading samples whose median's 95% CI half-width is ≤ target × median."""
    from harness.meter import MIN_N_FOR_95, summarize

    for n in range(MIN_N_FOR_95, len(samples) + 1):
        s = summarize(samples[:n])
        if (s.ci_high - s.ci_low) / 2 <= target * s.median:
            return n
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="alternating rounds (≥ 6 for 95%%; 0: only the CI phase)",
    )
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs, both tools")
    parser.add_argument("--repeats", type=int, default=5, help="bench's measured runs per round")
    parser.add_argument("--ob-iterations", type=int, default=5, help="per round")
    parser.add_argument("--target-ci", type=float, default=0.02, help="CI half-width / median")
    parser.add_argument("--ob-ci-iterations", type=int, default=30, help="fixed, CI phase")
    parser.add_argument("--max-repeats", type=int, default=60, help="bench's cap, CI phase")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-ob")
    args = parser.parse_args(argv)

    os.environ.update(OFFLINE)
    from harness.assets import provision

    python = ensure_venv(args.venv)
    model = provision("smollm2-135m")
    bench = Bench(args.prompt_tokens, args.new_tokens)
    policy = {"warmup": args.warmup, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        ids = Path(tmp) / "ids.json"
        ids.write_text(json.dumps(bench.prompt()))
        print(f"load average {_load()} at the start", flush=True)
        if args.rounds:
            ratio_rounds(bench, python, model, ids, policy, args)
        ci_phase(bench, python, model, ids, policy, args)
    return 0


def ratio_rounds(
    bench: Bench,
    python: Path,
    model: Path,
    ids: Path,
    policy: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    """The alternating rounds and the ratio of each metric, bench / optimum-benchmark."""
    ratios: dict[str, list[float]] = {"TTFT": [], "TPOT": [], "peak memory": []}
    for i in range(args.rounds):
        order = ("bench", "ob") if i % 2 == 0 else ("ob", "bench")
        got: dict[str, Any] = {}
        for tool in order:
            if tool == "bench":
                got["bench"], _ = bench.run(policy)
            else:
                got["ob"] = run_ob(
                    python, model, ids, args.new_tokens, args.ob_iterations, args.warmup
                )
        ours, theirs = got["bench"], got["ob"]
        ob_ttft = _median(theirs["prefill_s"])
        ob_tpot = _median(theirs["decode_s"]) / (args.new_tokens - 1)
        ratios["TTFT"].append(ours["latency.ttft_s"].value / ob_ttft)
        ratios["TPOT"].append(ours["latency.tpot_s"].value / ob_tpot)
        ratios["peak memory"].append(
            ours["memory.peak_rss_bytes"].value / (theirs["max_ram_mb"] * 1e6)
        )
        print(
            f"round {i + 1} ({'→'.join(order)}): bench TTFT "
            f"{ours['latency.ttft_s'].value * 1e3:.1f} ms, TPOT "
            f"{ours['latency.tpot_s'].value * 1e3:.2f} ms, peak RSS "
            f"{ours['memory.peak_rss_bytes'].value / 1e6:.0f} MB | optimum-benchmark "
            f"TTFT {ob_ttft * 1e3:.1f} ms, TPOT {ob_tpot * 1e3:.2f} ms, max_ram "
            f"{theirs['max_ram_mb']:.0f} MB",
            flush=True,
        )
    print(f"\nload average {_load()}; {args.rounds} rounds")
    for name, samples in ratios.items():
        print(ratio_line(name, samples))


def ci_phase(
    bench: Bench,
    python: Path,
    model: Path,
    ids: Path,
    policy: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    """Wall time each tool spends until TPOT's 95% CI half-width is ≤ target × median."""
    from harness.meter import summarize

    adaptive = {**policy, "target_ci": args.target_ci, "max_repeats": args.max_repeats}
    values, wall = bench.run(adaptive)
    tpot = values["latency.tpot_s"]
    half = (tpot.ci_high - tpot.ci_low) / 2 / tpot.value
    reached = "reached" if values["stats.converged"].value else "NOT reached"
    print(
        f"\nbench (target_ci {args.target_ci}, max_repeats {args.max_repeats}): {reached}; "
        f"{tpot.n} repeats, TPOT {tpot.value * 1e3:.2f} ms, CI ±{half:.1%}, CV "
        f"{values['stats.tpot_cv'].value:.1%}; {values['stats.converge_s'].value:.1f} s of "
        f"timed runs, {wall:.1f} s cell wall (warm-up and memory run included, model "
        f"already loaded)",
        flush=True,
    )
    ob = run_ob(python, model, ids, args.new_tokens, args.ob_ci_iterations, args.warmup)
    per_iteration = [d / (args.new_tokens - 1) for d in ob["decode_s"]]
    needed = first_narrow(per_iteration, args.target_ci)
    spent = ob["generate_s"]
    setup = ob["process_s"] - sum(spent)  # start, load, warm-up, memory run
    whole = summarize(per_iteration)
    print(
        f"optimum-benchmark ({args.ob_ci_iterations} fixed iterations): TPOT "
        f"{whole.median * 1e3:.2f} ms, CI ±{(whole.ci_high - whole.ci_low) / 2 / whole.median:.1%}"
        f" over all, CV {whole.cv:.1%}; {ob['process_s']:.1f} s process wall "
        f"({sum(spent):.1f} s measured generation, {setup:.1f} s start, load, warm-up and "
        f"memory run)"
    )
    if needed is None:
        print(f"optimum-benchmark: TPOT CI never within ±{args.target_ci:.0%}")
    else:
        print(
            f"optimum-benchmark: the first {needed} iterations reach ±{args.target_ci:.0%}: "
            f"{sum(spent[:needed]):.1f} s of measured generation"
        )
    print(f"load average {_load()} at the end")


def _load() -> str:
    """The 1, 5 and 15 minute load averages (runnable processes; 2 = both cores busy)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _median(values: list[float]) -> float:
    from statistics import median

    return float(median(values))


if __name__ == "__main__":
    raise SystemExit(main())
