"""The train workload's memory breakdown against torch's own tracker.

``torch.distributed._tools.mem_tracker.MemTracker`` follows every storage through a
dispatch mode and sorts it by role (parameter, buffer, gradient, activation, temporary,
optimizer state). On the same model, batch shape and optimizer, bench's numbers — counted
from the tensors (weights, gradients, optimizer state) and from the CPU allocator's
profiler events (activation and step peaks) — must be the same bytes.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from harness.models import BuiltinSource
from harness.suite import suite_from_data
from harness.testing import registry_with
from harness.worker import Worker

SEQ_LEN, BATCH = 64, 2


@pytest.fixture(scope="module")
def bench_numbers() -> dict[str, float | None]:
    worker = Worker("cpu", registry_with())
    params = {"seq_len": SEQ_LEN, "batch_size": BATCH, "steps": 1, "warmup_steps": 0}
    data = {
        "name": "train-memory",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"train": {**params, "eval_tokens": SEQ_LEN}},
        "techniques": ["baseline"],
        "policy": {"warmup": 0, "repeats": 1},
    }
    (cell,) = suite_from_data(data, worker.registry, devices=["cpu"]).cells
    result = worker.run(cell)
    assert result.status == "ok", result.reason
    return {v.name: v.value for v in result.values}


@pytest.fixture(scope="module")
def torch_numbers() -> dict[str, int]:
    """MemTracker's breakdown of the same training step: AdamW over every parameter, one
    step to create the optimizer state, then the tracked forward and step.

    With the ``kernels`` package installed (transformers >= 5.25 pulls it), rotary embedding
    runs as a global ``Func`` module calling a per-layer one of the same class name; MemTracker
    warns that its module hierarchy "maybe be messed up" (it names modules by class), which
    changes no byte count: the warning is ignored here, not turned into an error."""
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    model: Any = BuiltinSource().load("tiny-random-llama").model
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 1000, (BATCH, SEQ_LEN))

    def loss() -> Any:
        return model(input_ids=ids, labels=ids, use_cache=False).loss

    loss().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The module hierarchy tracking maybe be messed up")
        forward = MemTracker()
        forward.track_external(model, optimizer)
        with forward:
            kept = loss()  # the graph stays alive until the snapshot, as in bench's window
            peak = forward.get_tracker_snapshot("peak")[torch.device("cpu")]
        del kept

        step = MemTracker()
        step.track_external(model, optimizer)
        with step:
            loss().backward()
            after_backward = step.get_tracker_snapshot("current")[torch.device("cpu")]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_peak = step.get_tracker_snapshot("peak")[torch.device("cpu")]
    return {
        "weights": after_backward[_MemRefType.PARAM] + after_backward[_MemRefType.BUFFER],
        "grads": after_backward[_MemRefType.GRAD],
        "optimizer": after_backward[_MemRefType.OPT],
        "activation_peak": peak[_MemRefType.ACT] + peak[_MemRefType.TEMP],
        "step_peak": step_peak["Total"],
    }


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("memory.weights_bytes", "weights"),
        ("memory.grad_bytes", "grads"),
        ("memory.optimizer_state_bytes", "optimizer"),
        ("memory.activation_peak_bytes", "activation_peak"),
        ("memory.peak_alloc_bytes", "step_peak"),
    ],
)
def test_breakdown_matches_torch_mem_tracker(
    ours: str, theirs: str, bench_numbers: dict[str, float | None], torch_numbers: dict[str, int]
) -> None:
    assert bench_numbers[ours] == torch_numbers[theirs]
