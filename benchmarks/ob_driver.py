"""Run one optimum-benchmark inference measurement; executed by ``parity_optimum.py`` with the
Python of optimum-benchmark's own virtual environment (it imports nothing from bench).

optimum-benchmark 0.6 generates random token ids from the input shapes; here its input
generator is replaced by the prompt bench measured (read from ``--ids``), so both tools run
the same tokens. Everything else is optimum-benchmark's own: the pytorch backend on CPU,
the inline launcher, ``min_new_tokens = max_new_tokens``, its per-token latency tracker
(prefill = start to the first logits-processor call, decode = from there to the end) and
its memory tracker (the process's RSS polled by a child process).

Writes a JSON file: per-iteration prefill and decode latencies (s), ``max_ram`` (MB of
10^6 bytes, as optimum-benchmark reports it), and the wall time of the whole benchmark.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder of the model (config.json)")
    parser.add_argument("--ids", required=True, type=Path, help="JSON list of prompt rows")
    parser.add_argument("--new-tokens", type=int, required=True)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--duration", type=int, default=0, help="minimum seconds measured")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    import torch
    from optimum_benchmark import (
        Benchmark,
        BenchmarkConfig,
        InferenceConfig,
        InlineConfig,
        PyTorchConfig,
    )
    from optimum_benchmark.scenarios.inference import scenario

    rows = json.loads(args.ids.read_text())
    ids = torch.tensor(rows, dtype=torch.long)

    class SamePrompt:
        """Stands in for optimum-benchmark's random InputGenerator: bench's prompt."""

        def __init__(self, **kwargs: Any) -> None:
            pass

        def __call__(self) -> dict[str, Any]:
            return {"input_ids": ids.clone(), "attention_mask": torch.ones_like(ids)}

    scenario.InputGenerator = SamePrompt

    config = BenchmarkConfig(
        name="bench-parity",
        launcher=InlineConfig(device_isolation=False),
        scenario=InferenceConfig(
            latency=True,
            memory=True,
            iterations=args.iterations,
            duration=args.duration,
            warmup_runs=args.warmup,
            input_shapes={"batch_size": ids.shape[0], "sequence_length": ids.shape[1]},
            generate_kwargs={"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens},
        ),
        backend=PyTorchConfig(
            model=args.model,
            device="cpu",
            torch_dtype="float32",
            task="text-generation",
            library="transformers",
            model_type="llama",
        ),
    )
    started = time.perf_counter()
    report = Benchmark.launch(config)
    wall = time.perf_counter() - started
    out = {
        "prefill_s": list(report.prefill.latency.values),
        "decode_s": list(report.decode.latency.values),
        "generate_s": list(report.generate.latency.values),
        "max_ram_mb": report.decode.memory.max_ram,
        "prefill_max_ram_mb": report.prefill.memory.max_ram,
        "load_s": report.load_model.latency.values[0] if report.load_model.latency else None,
        "wall_s": wall,
        "threads": torch.get_num_threads(),
    }
    args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
