"""bench: a plugin-based benchmarking harness for LLM memory and efficiency techniques.

The public API for plugin authors (its version is ``PLUGIN_API_VERSION``; see
``harness.pluginapi``). Importing it does not import torch.
"""

from __future__ import annotations

from harness.environment import Environment, package_versions
from harness.errors import BenchError, ModelError, PluginError, Skip, StoreError, SuiteError
from harness.markers import hookimpl
from harness.pluginapi import PLUGIN_API_VERSION
from harness.results import METRIC_KINDS, CellResult, Measurement, MetricDef, MetricKind, Value
from harness.technique import Applied, Config, Context, Prepared, Technique
from harness.workloads import Workload, WorkloadContext

__all__ = [
    "METRIC_KINDS",
    "PLUGIN_API_VERSION",
    "Applied",
    "BenchError",
    "CellResult",
    "Config",
    "Context",
    "Environment",
    "Measurement",
    "MetricDef",
    "MetricKind",
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
