"""Typed views over hook results. Each hook is called from exactly one function here.

Duplicate names stop start-up with a ``PluginError`` naming both plugins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy
from pydantic import BaseModel

from harness.errors import PluginError
from harness.results import CellResult, MetricDef
from harness.technique import Technique

if TYPE_CHECKING:
    from harness.models import ModelSource
    from harness.probes import Probe
    from harness.textsources import TextSource
    from harness.workloads import Workload

T = TypeVar("T")


def _plugin_name(pm: pluggy.PluginManager, impl: Any) -> str:
    return pm.get_name(impl.plugin) or repr(impl.plugin)


def _collect(pm: pluggy.PluginManager, hook_name: str) -> list[tuple[str, Any]]:
    """Call ``hook_name`` on every plugin, pairing each returned item with its plugin."""
    caller = getattr(pm.hook, hook_name)
    items: list[tuple[str, Any]] = []
    for impl in caller.get_hookimpls():
        for item in impl.function() or ():
            items.append((_plugin_name(pm, impl), item))
    return items


def _by_name(items: Iterable[tuple[str, T]], what: str) -> dict[str, T]:
    seen: dict[str, tuple[str, T]] = {}
    for plugin, item in items:
        name = item.name  # type: ignore[attr-defined]
        if name in seen:
            raise PluginError(
                f"{what} '{name}' is registered twice: by {seen[name][0]} and by {plugin}. "
                "Uninstall one of them; 'bench plugins' lists what each registers."
            )
        seen[name] = (plugin, item)
    return {name: item for name, (_, item) in seen.items()}


@dataclass(frozen=True)
class Registration:
    """What one plugin registers, for ``bench plugins``."""

    plugin: str
    version: str
    kind: str
    name: str


class Registry:
    """Everything the installed plugins provide, validated once at start-up."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        # Touch every registry now: errors belong at start-up, not mid-suite.
        for technique in self.techniques.values():
            _validate_technique(technique)
        _ = (self.workloads, self.metrics, self.probes, self.model_sources, self.text_sources)

    @cached_property
    def techniques(self) -> dict[str, type[Technique]]:
        return _by_name(_collect(self.pm, "register_techniques"), "technique")

    @cached_property
    def workloads(self) -> dict[str, type[Workload]]:
        return _by_name(_collect(self.pm, "register_workloads"), "workload")

    @cached_property
    def probes(self) -> dict[str, type[Probe]]:
        return _by_name(_collect(self.pm, "register_probes"), "probe")

    @cached_property
    def metrics(self) -> dict[str, MetricDef]:
        return _by_name(_collect(self.pm, "register_metrics"), "metric")

    @cached_property
    def model_sources(self) -> list[type[ModelSource]]:
        # Later-registered plugins (third parties) are asked first.
        return [item for _, item in reversed(_collect(self.pm, "register_model_sources"))]

    @cached_property
    def text_sources(self) -> list[type[TextSource]]:
        return [item for _, item in reversed(_collect(self.pm, "register_text_sources"))]

    def environment_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for part in self.pm.hook.environment_info():
            info.update(part)
        return info

    def result_recorded(self, result: CellResult, run_id: int) -> list[str]:
        """Notify sinks; returns one message per sink that failed (sinks must not stop a run)."""
        failures = []
        for impl in self.pm.hook.result_recorded.get_hookimpls():
            try:
                impl.function(result=result, run_id=run_id)
            except Exception as exc:
                failures.append(f"{_plugin_name(self.pm, impl)}: {exc!r}")
        return failures

    def registrations(self) -> list[Registration]:
        """One row per registered item, for ``bench plugins``."""
        rows = []
        dists = {plugin: dist for plugin, dist in self.pm.list_plugin_distinfo()}
        hooks = [
            ("register_techniques", "technique"),
            ("register_workloads", "workload"),
            ("register_probes", "probe"),
            ("register_metrics", "metric"),
            ("register_model_sources", "model source"),
            ("register_text_sources", "text source"),
        ]
        for hook_name, kind in hooks:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                dist = dists.get(impl.plugin)
                version = f"{dist.project_name} {dist.version}" if dist else "built-in"
                for item in impl.function() or ():
                    name = _plugin_name(self.pm, impl)
                    rows.append(Registration(name, version, kind, item.name))
        return rows


def _validate_technique(cls: type[Technique]) -> None:
    where = f"technique class {cls.__module__}.{cls.__qualname__}"
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise PluginError(f"{where} has no 'name'. Set name = '...' on the class.")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, BaseModel)):
        raise PluginError(f"{where}: Config must be a pydantic model (harness.Config).")
    if cls.Config.model_config.get("extra") != "forbid":
        raise PluginError(f"{where}: Config must forbid extra fields; subclass harness.Config.")
    if not cls.kind or not cls.kind <= {"inference", "training"}:
        raise PluginError(f"{where}: kind must be a subset of {{'inference', 'training'}}.")
