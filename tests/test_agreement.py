"""``agreement``: exact KL and top-1 arithmetic, its reference cache, the model it compares with."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from harness import Context, Prepared, Technique, hookimpl
from harness.cell import REFERENCE_ENTRIES
from harness.models import BuiltinSource
from harness.testing import registry_with, run_task, run_technique, workload_context
from harness.worker import Worker
from harness.workloads.agreement import Agreement, AgreementParams, compare, windows

TASK = {"agreement": {"tokens": 96, "window": 64}}


@pytest.fixture(scope="module")
def tiny() -> Any:
    return BuiltinSource().load("tiny-random-llama")


def test_compare_is_exact_on_known_distributions() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0 + 1e-30], [0.9, 0.05, 0.05]]).log()
    q = torch.tensor([[0.25, 0.75, 1e-30], [0.8, 0.1, 0.1]]).log()
    agree, kl = compare(p, q)
    assert agree == [False, True]  # row 0: argmax p = 0 (first of a tie), argmax q = 1
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    expected += 0.9 * math.log(0.9 / 0.8) + 2 * 0.05 * math.log(0.05 / 0.1)
    assert kl == pytest.approx(expected, rel=1e-5)


def test_windows_cover_every_position() -> None:
    assert windows(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_model_agrees_with_itself_exactly(tiny: Any) -> None:
    task = Agreement(AgreementParams(tokens=96, window=64))
    ctx = workload_context(tiny.tokenizer)
    values = run_task(task, Prepared(tiny.model), ctx, reference_model=tiny.model)
    got = {v.name: v for v in values.values}
    assert got["accuracy.top1_agreement"].value == 1.0
    assert got["accuracy.kl_div"].value == 0.0
    assert got["accuracy.top1_agreement"].n == 96
    # Evidence per position (top-1) and per window (KL): 96 positions in windows of 64 + 32.
    assert got["accuracy.top1_agreement"].samples == (1.0,) * 96
    assert got["accuracy.kl_div"].samples == (0.0, 0.0)


def test_reference_outputs_are_computed_once_per_worker_model_and_params(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    original = Agreement.reference

    def counting(self: Agreement, model: Any, ctx: Any) -> Any:
        calls.append(self.params.window)
        return original(self, model, ctx)

    monkeypatch.setattr(Agreement, "reference", counting)
    worker = Worker("cpu", registry_with([_Plugin()]))
    small = {"agreement": {"tokens": 32, "window": 32}}
    for stack in ("baseline", "nudge", "scale"):
        assert run_technique(stack, accuracy=[small], worker=worker).status == "ok"
    assert calls == [32]
    other = {"agreement": {"tokens": 32, "window": 16}}
    assert run_technique("baseline", accuracy=[other], worker=worker).status == "ok"
    assert calls == [32, 16]
    assert len(worker.memo.reference) <= REFERENCE_ENTRIES


def test_no_reference_gives_null_values_with_a_reason(tiny: Any) -> None:
    values = Agreement(AgreementParams(tokens=32)).run(
        Prepared(tiny.model), workload_context(tiny.tokenizer)
    )
    assert all(v.value is None and v.reason for v in values.values)


# ----------------------------------------------------------- in the worker: which reference


class _Nudge(Technique):
    """Leaves weights alone but adds a forward hook on the language head (undone in cleanup)."""

    name = "nudge"

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        def hook(module: Any, args: Any, output: Any) -> Any:
            return output + torch.linspace(0, 3, output.shape[-1])

        handle = prepared.model.lm_head.register_forward_hook(hook)
        prepared.cleanup.append(handle.remove)
        return prepared


class _Scale(Technique):
    """Changes weights: scales the language head."""

    name = "scale"
    mutates_weights = True

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        with torch.no_grad():
            prepared.model.lm_head.weight.mul_(1.5)
        return prepared


class _Plugin:
    @hookimpl
    def register_techniques(self) -> list[type[Technique]]:
        return [_Nudge, _Scale]


def _agreement(result: Any) -> tuple[float, float]:
    assert result.status == "ok", result.reason
    return result.value("accuracy.top1_agreement"), result.value("accuracy.kl_div")


def test_a_hooked_stack_on_the_pristine_model_is_compared_with_an_untouched_copy() -> None:
    """The first cell runs a hook on the pristine object: the reference must not see it, and
    the cached reference must still give exact agreement to the baseline afterwards."""
    worker = Worker("cpu", registry_with([_Plugin()]))
    top1, kl = _agreement(run_technique("nudge", accuracy=[TASK], worker=worker))
    assert kl > 0.01 and top1 < 1.0
    assert _agreement(run_technique("baseline", accuracy=[TASK], worker=worker)) == (1.0, 0.0)
    _, kl_mut = _agreement(run_technique("scale", accuracy=[TASK], worker=worker))
    assert kl_mut > 0.0
    assert _agreement(run_technique("baseline", accuracy=[TASK], worker=worker)) == (1.0, 0.0)
