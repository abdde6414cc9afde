"""bench: a plugin-based benchmarking harness for LLM memory and efficiency techniques.

The public API for plugin authors. Importing it does not import torch.
"""

from __future__ import annotations

from harness.environment import Environment, package_versions
from harness.errors import BenchError, ModelError, PluginError, Skip, StoreError, SuiteError
from harness.markers import hookimpl
from harness.results import CellResult, Measurement, MetricDef, Value
from harness.technique import Applied, Config, Context, Prepared, Technique
from harness.workloads import Workload, WorkloadContext

__all__ = [
    "Applied",
    "BenchError",
    "CellResult",
    "Config",
    "Context",
    "Environment",
    "Measurement",
    "MetricDef",
    "ModelError",
    "PluginError",
    "Prepared",
    "Skip",
    "StoreError",
    "SuiteError",
    "Technique",
    "Value",
    "Workload",
    "WorkloadContext",
    "hookimpl",
    "package_versions",
]
