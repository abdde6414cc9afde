"""Typed views over hook results.

Each hook is called through the plugin manager (``pm.hook.<name>()``, so wrappers and
argument checks apply) from exactly one typed function here. Duplicate names stop start-up
with a ``PluginError`` naming both plugins.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pluggy
from pydantic import BaseModel

from harness.errors import PluginError
from harness.plugins import Origin
from harness.results import METRIC_KINDS, MetricDef
from harness.technique import Technique

if TYPE_CHECKING:
    from harness.models.base import ModelSource
    from harness.probes import Probe
    from harness.textsources import TextSource
    from harness.workloads import Workload


class _Named(Protocol):
    """Anything a hook registers: a class or a record with a ``name``."""

    @property
    def name(self) -> str: ...


T = TypeVar("T")
N = TypeVar("N", bound=_Named)


def _flatten(results: Iterable[Sequence[T] | None]) -> list[T]:
    """One list from a hook's results: one list per implementation, latest plugin first."""
    return [item for part in results for item in part or ()]


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
        self._owner_cache: dict[str, dict[str, list[object]]] = {}
        # Touch every registry now: errors belong at start-up, not mid-suite.
        for technique in self.techniques.values():
            _validate_technique(technique)
        for workload in self.workloads.values():
            _validate_workload(workload)
        for metric in self.metrics.values():
            _validate_metric(metric)
        _ = (self.probes, self.model_sources, self.text_sources)

    @cached_property
    def techniques(self) -> dict[str, type[Technique]]:
        """Technique classes by ``name`` (``register_techniques``)."""
        found = _flatten(self.pm.hook.register_techniques())
        return self._by_name("register_techniques", found, "technique")

    @cached_property
    def workloads(self) -> dict[str, type[Workload]]:
        """Workload and accuracy task classes by ``name`` (``register_workloads``)."""
        found = _flatten(self.pm.hook.register_workloads())
        return self._by_name("register_workloads", found, "workload")

    @cached_property
    def probes(self) -> dict[str, type[Probe]]:
        """Probe classes by ``name`` (``register_probes``)."""
        found = _flatten(self.pm.hook.register_probes())
        return self._by_name("register_probes", found, "probe")

    @cached_property
    def metrics(self) -> dict[str, MetricDef]:
        """Metric definitions by ``name`` (``register_metrics``)."""
        found = _flatten(self.pm.hook.register_metrics())
        return self._by_name("register_metrics", found, "metric")

    @cached_property
    def model_sources(self) -> list[type[ModelSource]]:
        """Model source classes in the order they are asked (``register_model_sources``).

        pluggy calls the plugins registered last (third parties) first; each plugin's list
        keeps its own order. Names may repeat: a plugin's source may shadow a built-in one.
        """
        return _flatten(self.pm.hook.register_model_sources())

    @cached_property
    def text_sources(self) -> list[type[TextSource]]:
        """Text source classes in the order they are asked (``register_text_sources``)."""
        return _flatten(self.pm.hook.register_text_sources())

    def environment_info(self) -> dict[str, Any]:
        """The facts every plugin stores with a run, merged (``environment_info``)."""
        info: dict[str, Any] = {}
        for part in self.pm.hook.environment_info():
            info.update(part or {})
        return info

    def registrations(self) -> list[Registration]:
        """One row per registered item, for ``bench plugins``: plugins in registration order
        (built-ins first), each plugin's items in the order it returns them."""
        order = {id(plugin): i for i, (_, plugin) in enumerate(self.pm.list_name_plugin())}
        keyed: list[tuple[int, int, Registration]] = []
        for k, (hook_name, kind, items) in enumerate(self._kinds()):
            owners = self._owners(hook_name)
            for name in dict.fromkeys(item.name for item in items):
                for plugin in owners.get(name, [None]):
                    row = Registration(
                        self.plugin_name(plugin), self.plugin_label(plugin), kind, name
                    )
                    keyed.append((order.get(id(plugin), len(order)), k, row))
        keyed.sort(key=lambda entry: entry[:2])  # stable: keeps each plugin's own order
        return [row for _, _, row in keyed]

    def plugin_versions(
        self, techniques: Iterable[str] = (), workloads: Iterable[str] = ()
    ) -> dict[str, str]:
        """The versions of the third-party plugins that provide these techniques and
        workloads (accuracy tasks included): distribution (or plugin) name -> version.

        Built-in plugins are left out: they are versioned with bench itself, and the
        measurement protocol version in every cell key stands for them. A plugin without a
        version (neither an installed distribution nor a module ``__version__``) is left
        out too.
        """
        versions: dict[str, str] = {}
        wanted = [("register_techniques", n) for n in techniques]
        wanted += [("register_workloads", n) for n in workloads]
        for hook_name, name in wanted:
            for plugin in self._owners(hook_name).get(name, [])[:1]:
                versions.update(self._version(plugin))
        return dict(sorted(versions.items()))

    def installed_versions(self) -> dict[str, str]:
        """Every third-party plugin's version (distribution or plugin name -> version), to
        store with a run beside the library versions; built-ins are bench's own."""
        versions: dict[str, str] = {}
        for _, plugin in self.pm.list_name_plugin():
            versions.update(self._version(plugin))
        return dict(sorted(versions.items()))

    def _version(self, plugin: object) -> dict[str, str]:
        """``{distribution or plugin name: version}`` of a versioned third-party plugin."""
        origin = self.plugin_origin(plugin)
        if origin is None or origin.source == "built-in" or not origin.version:
            return {}
        return {origin.distribution or self.plugin_name(plugin): origin.version}

    def _kinds(self) -> list[tuple[str, str, Iterable[_Named]]]:
        return [
            ("register_techniques", "technique", self.techniques.values()),
            ("register_workloads", "workload", self.workloads.values()),
            ("register_probes", "probe", self.probes.values()),
            ("register_metrics", "metric", self.metrics.values()),
            ("register_model_sources", "model source", self.model_sources),
            ("register_text_sources", "text source", self.text_sources),
        ]

    def plugin_origin(self, plugin: object | None) -> Origin | None:
        """Where ``plugin`` came from (``harness.plugins.Origin``); None when unknown."""
        origin = getattr(self.pm, "origin", None)  # a plain pluggy manager records none
        return origin(plugin) if origin is not None and plugin is not None else None

    def plugin_label(self, plugin: object | None) -> str:
        """``bench-attn 0.1.0``, ``built-in``, ``BENCH_PLUGINS``, ... (see ``Origin.label``)."""
        origin = self.plugin_origin(plugin)
        return origin.label if origin is not None else "built-in"

    # ------------------------------------------------------------ attribution

    def _by_name(self, hook_name: str, items: Iterable[N], what: str) -> dict[str, N]:
        """Items by name; a name registered twice is a ``PluginError`` naming both plugins."""
        seen: dict[str, N] = {}
        for item in items:
            if item.name in seen:
                owners = self._owners(hook_name).get(item.name, [])
                who = " and by ".join(self.plugin_name(p) for p in owners[:2]) or "unknown"
                raise PluginError(
                    f"{what} '{item.name}' is registered twice: by {who}. Uninstall one of "
                    "them; 'bench plugins' lists what each registers."
                )
            seen[item.name] = item
        return seen

    def _owners(self, hook_name: str) -> dict[str, list[object]]:
        """Name -> the plugins that register it, each plugin's hook called on its own.

        Goes through pluggy (``subset_hook_caller``), so a plugin's own wrappers apply.
        Plugins are in registration order (built-ins first). Used only to attribute items:
        in error messages and in ``registrations``.
        """
        if hook_name in self._owner_cache:
            return self._owner_cache[hook_name]
        hook = getattr(self.pm.hook, hook_name)
        plugins = list(dict.fromkeys(impl.plugin for impl in hook.get_hookimpls()))
        owners: dict[str, list[object]] = {}
        everyone = self.pm.get_plugins()
        for plugin in plugins:
            alone = self.pm.subset_hook_caller(hook_name, everyone - {plugin})
            for item in _flatten(alone()):
                owners.setdefault(item.name, []).append(plugin)
        self._owner_cache[hook_name] = owners
        return owners

    def plugin_name(self, plugin: object | None) -> str:
        """The registered name; for an object registered without one, its class."""
        if plugin is None:
            return "(a hook wrapper)"
        name = self.pm.get_name(plugin)
        if name is None or name == str(id(plugin)):  # pluggy's default name for objects
            return f"{type(plugin).__module__}.{type(plugin).__qualname__} object"
        return name


def _validate_technique(cls: type[Technique]) -> None:
    where = f"technique class {cls.__module__}.{cls.__qualname__}"
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise PluginError(f"{where} has no 'name'. Set name = '...' on the class.")
    _validate_params(where, "Config", getattr(cls, "Config", None))
    if not cls.kind or not cls.kind <= {"inference", "training"}:
        raise PluginError(f"{where}: kind must be a subset of {{'inference', 'training'}}.")


def _validate_workload(cls: type[Workload]) -> None:
    where = f"workload class {cls.__module__}.{cls.__qualname__}"
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise PluginError(f"{where} has no 'name'. Set name = '...' on the class.")
    _validate_params(where, "Params", getattr(cls, "Params", None))
    if cls.kind not in ("measure", "accuracy"):
        raise PluginError(f"{where}: kind must be 'measure' or 'accuracy', not {cls.kind!r}.")


def _validate_params(where: str, attribute: str, model: object) -> None:
    """A plugin's parameter model must refuse unknown keys, nested models included, so a
    typo in a suite is an error at ``bench check`` rather than a setting silently ignored."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(f"{where}: {attribute} must be a pydantic model (harness.Config).")
    for permissive in _permissive_models(model):
        inner = "" if permissive is model else f" (its field type {permissive.__qualname__})"
        raise PluginError(
            f"{where}: {attribute}{inner} accepts unknown keys "
            f"(extra={permissive.model_config.get('extra', 'ignore')!r}), so a misspelt "
            "parameter would be ignored; subclass harness.Config, which forbids them."
        )


def _permissive_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and the pydantic models in its fields' types that do not forbid extras."""
    found: list[type[BaseModel]] = []
    seen: set[type[BaseModel]] = set()

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return
            seen.add(annotation)
            if annotation.model_config.get("extra") != "forbid":
                found.append(annotation)
            for info in annotation.model_fields.values():
                visit(info.annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(model)
    return found


def _validate_metric(metric: MetricDef) -> None:
    if metric.kind not in METRIC_KINDS:
        raise PluginError(
            f"metric '{metric.name}': kind {metric.kind!r} is not one of "
            f"{', '.join(METRIC_KINDS)}. Set MetricDef(..., kind=...) to one of them."
        )
