"""The ``train`` workload on the tiny model: byte accounting, activation peak, losses."""

from __future__ import annotations

from typing import Any

import pytest

from harness.results import CellResult
from harness.suite import suite_from_data
from harness.worker import Worker
from harness.workloads.train import lr_factor, token_windows

WORKLOAD = {"seq_len": 32, "batch_size": 1, "steps": 2, "warmup_steps": 1, "eval_tokens": 64}
PARAMS = 3_219_776  # tiny-random-llama: 49152×64 tied embedding + 2 layers + final norm
TENSORS = 20  # parameter tensors: embedding, 2 × (7 linear + 2 norms), final norm
#: |loss_final − AdamW's| allowed after the same steps from the same seed (tiny model, nats).
LOSS_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def worker() -> Worker:
    return Worker("cpu")


def run(worker: Worker, technique: Any, **workload: Any) -> dict[str, float | None]:
    data = {
        "name": "t",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"train": {**WORKLOAD, **workload}},
        "techniques": [[technique]],
        "policy": {"warmup": 0, "repeats": 1, "timeout_s": 600},
    }
    (cell,) = suite_from_data(data, worker.registry, devices=["cpu"]).cells
    result: CellResult = worker.run(cell)
    assert result.status == "ok", result.reason
    return {v.name: v.value for v in result.values}


@pytest.fixture(scope="module")
def baseline(worker: Worker) -> dict[str, float | None]:
    return run(worker, "baseline")


def test_lr_schedule() -> None:
    assert lr_factor("constant", 7, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10) == pytest.approx(0.0)


def test_token_windows_cycle_a_short_text() -> None:
    class Chars:
        def __call__(self, text: str, add_special_tokens: bool) -> dict[str, list[int]]:
            return {"input_ids": [ord(c) for c in text]}

    ids = token_windows(Chars(), "abcdefg", 4, 3)  # 7 tokens → 6 usable, cycled
    assert ids.tolist() == [[97, 98, 99], [100, 101, 102], [97, 98, 99], [100, 101, 102]]


def test_baseline_byte_accounting(baseline: dict[str, float | None]) -> None:
    assert baseline["memory.grad_bytes"] == 4 * PARAMS
    assert baseline["memory.adamw_state_bytes"] == 2 * 4 * PARAMS
    # torch AdamW: two fp32 moments per parameter plus a 0-d fp32 step per tensor.
    assert baseline["memory.optimizer_state_bytes"] == 2 * 4 * PARAMS + 4 * TENSORS
    assert baseline["memory.optimizer_state_reduction"] == pytest.approx(
        -4 * TENSORS / (2 * 4 * PARAMS)
    )
    assert baseline["train.trainable_params"] == PARAMS
    weights, state = baseline["memory.weights_bytes"], baseline["memory.optimizer_state_bytes"]
    assert weights is not None and state is not None
    assert baseline["memory.peak_alloc_bytes"] == weights + state + (
        baseline["memory.window_peak_bytes"] or 0
    )
    activation = baseline["memory.activation_peak_bytes"]
    # the logits alone: batch × seq_len × vocab fp32.
    assert activation is not None and activation > 1 * 32 * 49152 * 4


def test_training_leaves_the_pristine_model_alone(worker: Worker) -> None:
    from harness.suite import ModelSpec

    pristine = worker.load(ModelSpec(id="tiny-random-llama")).model
    before = {k: v.clone() for k, v in pristine.state_dict().items()}
    result = run(worker, "baseline", steps=1)
    assert result["train.loss_final"] is not None
    after = pristine.state_dict()
    assert all(before[k].equal(after[k]) for k in before)
    assert not any(p.grad is not None for p in pristine.parameters())


@pytest.mark.slow
def test_same_seed_same_loss(worker: Worker, baseline: dict[str, float | None]) -> None:
    again = run(worker, "baseline")
    assert again["train.loss_final"] == baseline["train.loss_final"]
    assert again["train.eval_perplexity"] == baseline["train.eval_perplexity"]


def test_checkpointing_lowers_the_activation_peak(
    worker: Worker, baseline: dict[str, float | None]
) -> None:
    ckpt = run(worker, "activation-checkpointing")
    assert ckpt["memory.activation_peak_bytes"] < baseline["memory.activation_peak_bytes"]  # type: ignore[operator]
    # recomputation gives the same gradients: the same loss trajectory.
    assert ckpt["train.loss_final"] == pytest.approx(baseline["train.loss_final"], abs=1e-5)
    assert ckpt["latency.step_s"] is not None  # reported, never asserted (shared CPU)


@pytest.mark.slow
@pytest.mark.parametrize(
    "technique",
    [
        {"galore": {"rank": 16}},
        {"apollo": {"rank": 8}},
        "apollo-mini",
        "adam-8bit",
        "lora",
        "qlora",
        "mixed-precision",
    ],
)
def test_final_loss_close_to_adamw(
    worker: Worker, baseline: dict[str, float | None], technique: Any
) -> None:
    result = run(worker, technique)
    loss, reference = result["train.loss_final"], baseline["train.loss_final"]
    assert loss is not None and reference is not None
    assert abs(loss - reference) <= LOSS_TOLERANCE
