"""The cell pipeline's prediction: a cell's estimate, made before its model loads.

``harness.cell.measure`` calls :func:`predict_cell` right after the stack is built (a few
milliseconds: arithmetic over the model's config.json), then, unless the policy turns it
off (``bench run --no-preflight``), :meth:`Prediction.preflight`, which skips a cell that
cannot fit, and finally stores :meth:`Prediction.values` beside the measurement.

Pre-flight is conservative: it compares what must be resident whatever the activations
(weights, other models, KV cache, gradients and optimizer state, CUDA overhead; exact for
plain stacks) with the memory the cell may use, and skips only when that floor exceeds
the capacity by more than ``PREFLIGHT_MARGIN``. A cell that would have fit is never
skipped unless its resident bytes are over-predicted by more than the margin.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from harness.errors import BenchError, Skip
from harness.estimate.arch import Architecture, load_architecture
from harness.estimate.devices import Device, device_for
from harness.estimate.effect import Shape, base_effect
from harness.estimate.predict import predict, stack_effect
from harness.estimate.result import Estimate
from harness.memlimit import GiB, capacity
from harness.results import Value

if TYPE_CHECKING:
    from harness.environment import Environment
    from harness.matrix import Cell
    from harness.technique import Technique

#: Pre-flight skips a cell when its resident bytes exceed the capacity by this fraction.
PREFLIGHT_MARGIN = 0.10
#: How the reason of a cell skipped by pre-flight begins (``bench run --no-preflight``
#: measures such cells again).
PREFLIGHT_PREFIX = "predicted OOM:"
SOURCE = "estimate"


def _gib(value: float) -> str:
    """Bytes as GiB: one decimal from 1 GiB, three significant digits below."""
    gib = value / GiB
    return f"{gib:.1f}" if gib >= 1 else f"{gib:.3g}"


@lru_cache(maxsize=16)
def _architecture(model_id: str) -> Architecture:
    return load_architecture(model_id)


@dataclass(frozen=True)
class Prediction:
    """A cell's estimate, or why it has none.

    Attributes:
        estimate: the estimate (None when there is none).
        reason: why there is no estimate, or why its times are missing.
        capacity_bytes: memory the cell may use, bytes.
    """

    estimate: Estimate | None
    reason: str | None
    capacity_bytes: float | None

    def preflight(self) -> None:
        """Skip the cell when it cannot fit (see module docstring).

        Raises:
            Skip: ``predicted OOM: needs X GiB, device has Y GiB (...)``.
        """
        e = self.estimate
        if e is None or e.memory is None or not self.capacity_bytes:
            return
        m = e.memory
        if m.floor_bytes <= self.capacity_bytes * (1 + PREFLIGHT_MARGIN):
            return
        parts = [("weights", m.weights_bytes + m.extra_weights_bytes)]
        parts += [("KV cache", m.kv_cache_bytes), ("gradients", m.gradient_bytes)]
        parts += [("optimizer state", m.optimizer_state_bytes), ("overhead", m.overhead_bytes)]
        shown = " + ".join(f"{name} {_gib(b)}" for name, b in parts if b)
        raise Skip(
            f"{PREFLIGHT_PREFIX} needs {_gib(m.floor_bytes)} GiB, device has "
            f"{_gib(self.capacity_bytes)} GiB ({shown} GiB; predicted peak "
            f"{_gib(m.peak_bytes)} GiB). 'bench run --no-preflight' runs it anyway"
        )

    def values(self) -> dict[str, Value]:
        """The prediction as metric values (``estimate.*``), null with the reason when
        missing; stored beside the measured ones."""
        e = self.estimate
        names = ["estimate.peak_bytes", "estimate.weights_bytes", "estimate.kv_cache_bytes"]
        if e is None or e.memory is None:
            why = self.reason or (e.unknown.get("memory") if e else None) or "no estimate"
            return {n: Value(n, None, "bytes", reason=why) for n in names}
        source = f"{SOURCE}:{e.device.name}"
        m = e.memory
        out = {
            name: Value(name, float(v), "bytes", source=source)
            for name, v in zip(
                names, (m.peak_bytes, m.weights_bytes, m.kv_cache_bytes), strict=True
            )
        }
        for stage, metric in (
            (e.prefill, "prefill"),
            (e.decode, "decode"),
            (e.train, "train_step"),
        ):
            if stage is None:
                continue
            unknown = self.reason or stage.reason
            time = None if unknown else stage.time_s
            out[f"estimate.{metric}_s"] = Value(
                f"estimate.{metric}_s",
                time,
                "s",
                source=source if time is not None else None,
                reason=unknown if time is None else None,
            )
            if metric != "train_step":
                out[f"estimate.{metric}_ops"] = Value(
                    f"estimate.{metric}_ops", stage.ops, "ops", source=source
                )
                out[f"estimate.{metric}_bytes"] = Value(
                    f"estimate.{metric}_bytes", stage.bytes, "bytes", source=source
                )
        if not self.reason:
            peak = e.device.peak(e.dtype)
            out["estimate.roof_flops"] = Value(
                "estimate.roof_flops",
                peak,
                "FLOP/s",
                source=source,
                reason=None if peak else f"no {e.dtype} peak",
            )
            out["estimate.roof_bytes_s"] = Value(
                "estimate.roof_bytes_s", e.device.bandwidth_bytes_s, "bytes/s", source=source
            )
        return out


def _gpu_total(device: str, table: Device | None) -> float | None:
    """The GPU's total memory: from torch where it is already imported (the worker), else
    the device table's (the runner, which does not import torch)."""
    if not device.startswith("cuda"):
        return None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        return float(torch.cuda.get_device_properties(index).total_memory)
    return table.memory_bytes if table is not None else None


def predict_cell(cell: Cell, techniques: Sequence[Technique], env: Environment) -> Prediction:
    """The estimate of ``cell`` with its built stack, on the cell's device."""
    device, why = device_for(cell.device, env.gpu_name)
    limit = cell.policy.memory_limit_gib
    room = capacity(cell.device, limit * GiB if limit else None, _gpu_total(cell.device, device))
    shape = Shape.from_workload(cell.workload.as_dict())
    if shape is None:
        return Prediction(None, f"the {cell.workload.name} workload has no estimate", room)
    try:
        arch = _architecture(cell.model.id)
    except BenchError as exc:
        return Prediction(None, f"no architecture: {exc}", room)
    dtype = arch.dtype if cell.model.dtype == "auto" else cell.model.dtype
    times_reason = None
    if device is None:  # memory can still be predicted; times cannot
        times_reason = why
        device = Device("unknown", env.gpu_name or cell.device, "cuda", room, 1.0)
    effect, missing = stack_effect(techniques, arch, shape, base_effect(dtype, device.kind))
    if missing:
        reason = (
            f"no estimate: {', '.join(missing)} implements no Technique.estimate (docs/plugins.md)"
        )
        return Prediction(None, reason, room)
    labels = [t.name for t in techniques]
    estimate = predict(arch, device, shape, effect, stack=labels, capacity_bytes=room)
    return Prediction(estimate, times_reason, room)
