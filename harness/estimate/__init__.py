"""The analytic model: architecture × device × workload × dtype × stack -> roofline and memory.

``bench estimate`` (``harness.cli.estimate``) and the cell pipeline's prediction step
(``harness.estimate.cellstep``) use it; docs/estimate.md describes the method.

Parts: ``arch`` (a model's shape from its config.json, offline), ``devices`` (the device
table, data in ``devices.toml``), ``probe`` (this machine's measured bandwidth and peaks),
``effect`` (what techniques change: ``Shape``, ``Effect``, storage formats), ``roofline``
(per-operator operations and bytes, roofline time), ``memory`` (bytes held, peak),
``predict`` (the stack's effect, then the stages), ``result`` (the records), ``boundary``
of ``harness`` uses the predicted peak to seed its search. Importing it does not import torch.
"""

from __future__ import annotations

from harness.estimate.arch import Architecture, Linear, load_architecture, read_config
from harness.estimate.devices import Device, device_for, find_device, load_devices
from harness.estimate.effect import Effect, QuantizedKV, QuantizedWeights, Shape, base_effect
from harness.estimate.memory import Memory
from harness.estimate.predict import build_techniques, estimate, predict, stack_effect
from harness.estimate.result import Estimate, StageEstimate

__all__ = [
    "Architecture",
    "Device",
    "Effect",
    "Estimate",
    "Linear",
    "Memory",
    "QuantizedKV",
    "QuantizedWeights",
    "Shape",
    "StageEstimate",
    "base_effect",
    "build_techniques",
    "device_for",
    "estimate",
    "find_device",
    "load_architecture",
    "load_devices",
    "predict",
    "read_config",
    "stack_effect",
]
