"""The records an estimate returns: per-stage roofline totals, memory, and the whole."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.estimate.arch import Architecture
    from harness.estimate.devices import Device
    from harness.estimate.effect import Shape
    from harness.estimate.memory import Memory
    from harness.estimate.roofline import Analysed


@dataclass(frozen=True)
class StageEstimate:
    """Prefill, one decode step or one training forward pass on the roofline.

    Attributes:
        stage: ``prefill``, ``decode`` or ``train``.
        rows: every operator, analysed.
        kv_tokens: KV entries attended over (decode: at the final KV length).
        step_s: time of one forward pass (decode: one target step), s; None if unknown.
        time_s: prefill: = step_s; decode: per emitted token, step_s / tokens_per_step;
            train: one optimizer step (forward, backward, update); s; None if unknown.
        tokens_per_step: tokens one decode step emits (1 without speculation).
        reason: why the times are None.
    """

    stage: str
    rows: tuple[Analysed, ...]
    kv_tokens: int
    step_s: float | None
    time_s: float | None
    tokens_per_step: float | None = 1.0
    reason: str | None = None

    @property
    def ops(self) -> float:
        """Operations of the whole pass (every row × its count)."""
        return sum(r.row.count * r.row.ops for r in self.rows)

    @property
    def bytes(self) -> float:
        """Bytes moved by the whole pass (device memory and host link)."""
        return sum(r.row.count * r.row.memory_access for r in self.rows)

    @property
    def intensity(self) -> float:
        """ops / bytes of the whole pass, ops/byte."""
        return self.ops / self.bytes if self.bytes else 0.0

    @property
    def bound(self) -> str:
        """What limits most of the pass's time: ``compute``, ``memory`` or ``host``."""
        by: dict[str, float] = {}
        for r in self.rows:
            by[r.bound] = by.get(r.bound, 0.0) + r.total_time_s
        return max(by, key=lambda k: by[k]) if by else "memory"

    def as_dict(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "step_s": self.step_s,
            "tokens_per_step": self.tokens_per_step,
            "ops": self.ops,
            "bytes": self.bytes,
            "intensity": self.intensity,
            "bound": self.bound,
            "kv_tokens": self.kv_tokens,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Estimate:
    """What ``bench estimate`` predicts for a model × device × workload × dtype × stack.

    A stack with a technique that has no estimate gets none at all (``no_estimate`` names
    them and every number is None): never a number that leaves a technique out.

    Attributes:
        arch: the architecture as the stack runs it (``gqa`` applied).
        device: the device table entry.
        shape: the workload.
        dtype: compute dtype.
        stack: the stack's technique labels, in order.
        no_estimate: techniques of the stack without an estimate.
        notes: what each technique contributed.
        unknown: quantity -> why it cannot be predicted.
        prefill, decode, train: the stages (None when not predicted).
        memory: the memory breakdown (None when not predicted).
        capacity_bytes: memory the device has for the cell, bytes.
    """

    arch: Architecture
    device: Device
    shape: Shape
    dtype: str
    stack: tuple[str, ...] = ()
    no_estimate: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    unknown: dict[str, str] = field(default_factory=dict)
    prefill: StageEstimate | None = None
    decode: StageEstimate | None = None
    train: StageEstimate | None = None
    memory: Memory | None = None
    capacity_bytes: float | None = None

    @property
    def fits(self) -> bool | None:
        """Whether the predicted peak plus overhead fits the capacity (None: unknown)."""
        if self.memory is None or not self.capacity_bytes:
            return None
        return self.memory.peak_bytes + self.memory.overhead_bytes <= self.capacity_bytes

    @property
    def stages(self) -> Sequence[StageEstimate]:
        return [s for s in (self.prefill, self.decode, self.train) if s is not None]

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of ``bench estimate --format json``."""
        memory = None
        if self.memory is not None:
            memory = {**asdict(self.memory), "fits": self.fits}
            memory["capacity_bytes"] = self.capacity_bytes
        return {
            "architecture": self.arch.as_dict(),
            "device": self.device.as_dict(),
            "workload": self.shape.as_dict(),
            "dtype": self.dtype,
            "stack": list(self.stack),
            "no_estimate": list(self.no_estimate),
            "unknown": dict(self.unknown),
            "notes": list(self.notes),
            "prefill": self.prefill.as_dict() if self.prefill else None,
            "decode": self.decode.as_dict() if self.decode else None,
            "train": self.train.as_dict() if self.train else None,
            "memory": memory,
            "layers": [layer_dict(r) for s in self.stages for r in s.rows],
        }


def layer_dict(r: Analysed) -> dict[str, Any]:
    """One row of ``layers``: per occurrence, with ``count`` occurrences per pass."""
    row = r.row
    return {
        "stage": row.stage,
        "name": row.name,
        "count": row.count,
        "ops": row.ops,
        "memory_access": row.memory_access,
        "load_weight": row.load_weight,
        "load_act": row.load_act,
        "store_act": row.store_act,
        "load_kv_cache": row.load_kv,
        "store_kv_cache": row.store_kv,
        "arithmetic_intensity": r.intensity,
        "performance": r.performance,
        "bound": r.bound,
        "time_s": r.time_s,
    }
