"""What the installed plugins register, as plain data: for ``bench plugins`` and tools.

Every registered item (technique, workload, accuracy task, probe, metric, model source,
text source) becomes an :class:`Item` with the plugin that registers it, its version, a
one-line summary and, for the kinds that take parameters, each parameter with a readable
type, its range, default and description. Nothing here prints; :mod:`harness.cli.info`
renders the items as tables or JSON.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from harness.errors import BenchError
from harness.pluginapi import PLUGIN_API_VERSION, supported_range

if TYPE_CHECKING:
    from harness.registry import Registry

#: Kinds in the order ``bench plugins`` shows them.
KINDS = (
    "technique",
    "workload",
    "accuracy task",
    "probe",
    "metric",
    "model source",
    "text source",
)

# annotated_types constraint attribute -> how a range shows it
_BOUNDS = (
    ("gt", "> {}"),
    ("ge", ">= {}"),
    ("lt", "< {}"),
    ("le", "<= {}"),
    ("multiple_of", "multiple of {}"),
    ("min_length", "length >= {}"),
    ("max_length", "length <= {}"),
)


@dataclass(frozen=True)
class Parameter:
    """One field of a technique's ``Config`` or a workload's ``Params``.

    Attributes:
        name: the key in a suite.
        type: readable type: ``int``, ``float | None``, ``'eager' | 'sdpa'``, ``list[str]``.
        required: whether a suite must give it.
        default: the default as JSON (None when required).
        range: the constraints, e.g. ``>= 0, <= 1``; None when there are none.
        description: the field's description, if the plugin gave one.
    """

    name: str
    type: str
    required: bool
    default: Any
    range: str | None
    description: str | None


@dataclass(frozen=True)
class Item:
    """One registered item.

    Attributes:
        kind: one of :data:`KINDS`.
        name: its name (the key in suites, or the metric's name).
        plugin: the plugin that registers it (module or entry-point name).
        version: ``built-in``, or the distribution and version (``bench-attn 0.1.0``).
        summary: the first paragraph of its docstring, or the metric's description.
        details: facts of its kind (a technique's kinds and ``mutates_weights``, a
            metric's unit, direction and kind, a probe's phase and metrics, ...).
        parameters: its parameters (techniques, workloads and accuracy tasks).
    """

    kind: str
    name: str
    plugin: str
    version: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    parameters: tuple[Parameter, ...] = ()

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["parameters"] = [asdict(p) for p in self.parameters]
        return data


@dataclass(frozen=True)
class PluginRow:
    """One registered plugin: name, where it came from, the plugin API range it declares."""

    name: str
    version: str
    source: str
    api: str | None


def describe(registry: Registry) -> list[Item]:
    """Every registered item, in :data:`KINDS` order, each kind sorted by name."""
    owners = {(row.kind, row.name): row for row in registry.registrations()}

    def owned(kind: str, name: str) -> tuple[str, str]:
        row = owners.get((kind, name))
        return (row.plugin, row.version) if row else ("?", "?")

    items: list[Item] = []
    for name, cls in sorted(registry.techniques.items()):
        details = {
            "kinds": sorted(cls.kind),
            "mutates_weights": cls.mutates_weights,
            "incompatible_with": sorted(cls.incompatible_with),
            "default_reference": cls.default_reference,
        }
        items.append(
            Item(
                "technique",
                name,
                *owned("technique", name),
                _summary(cls),
                details,
                parameters(cls.Config),
            )
        )
    for name, wcls in sorted(registry.workloads.items()):
        kind = "accuracy task" if wcls.kind == "accuracy" else "workload"
        details = {
            "mutates_weights": wcls.mutates_weights,
            "text_splits": list(wcls.text_splits),
            "uses_reference": wcls.uses_reference,
        }
        summary = _summary(wcls)
        items.append(
            Item(kind, name, *owned("workload", name), summary, details, parameters(wcls.Params))
        )
    for name, pcls in sorted(registry.probes.items()):
        details = {"phase": pcls.phase, "metrics": [m.name for m in pcls.metrics]}
        items.append(Item("probe", name, *owned("probe", name), _summary(pcls), details))
    for name, metric in sorted(registry.metrics.items()):
        details = {
            "unit": metric.unit,
            "higher_is_better": metric.higher_is_better,
            "metric_kind": metric.kind,
        }
        items.append(Item("metric", name, *owned("metric", name), metric.description, details))
    sources: list[tuple[str, type[Any]]] = [("model source", c) for c in registry.model_sources]
    sources += [("text source", c) for c in registry.text_sources]
    for kind, source in sources:  # in the order they are asked
        items.append(Item(kind, source.name, *owned(kind, source.name), _summary(source)))
    return items


def plugins(registry: Registry) -> list[PluginRow]:
    """Every registered plugin with the ``BENCH_PLUGIN_API`` range it declares."""
    rows = []
    for _, plugin in registry.pm.list_name_plugin():
        origin = registry.plugin_origin(plugin)
        rows.append(
            PluginRow(
                registry.plugin_name(plugin),
                registry.plugin_label(plugin),
                origin.source if origin is not None else "?",
                supported_range(plugin),
            )
        )
    return rows


def find(items: Iterable[Item], name: str) -> list[Item]:
    """The items called ``name`` (a name may be, say, both a workload and a metric).

    Raises:
        BenchError: nothing is called ``name``; the message suggests close names.
    """
    items = list(items)
    found = [item for item in items if item.name == name]
    if found:
        return found
    close = difflib.get_close_matches(name, sorted({i.name for i in items}), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise BenchError(
        f"no installed plugin registers '{name}'.{hint} 'bench plugins' lists everything "
        "registered."
    )


def as_json(registry: Registry, items: Iterable[Item]) -> dict[str, Any]:
    """The document of ``bench plugins --format json``."""
    return {
        "plugin_api": PLUGIN_API_VERSION,
        "plugins": [asdict(row) for row in plugins(registry)],
        "items": [item.as_json() for item in items],
    }


# ---------------------------------------------------------------- parameters


def parameters(model: type[BaseModel]) -> tuple[Parameter, ...]:
    """The fields of a pydantic parameter model, in declaration order."""
    out = []
    for name, info in model.model_fields.items():
        required = info.is_required()
        default = None if required else info.get_default(call_default_factory=True)
        out.append(
            Parameter(
                name=name,
                type=type_name(info.annotation),
                required=required,
                default=to_jsonable_python(default, fallback=repr),
                range=_range(info.metadata),
                description=info.description,
            )
        )
    return tuple(out)


def type_name(annotation: Any) -> str:
    """A readable type: ``int``, ``float | None``, ``'eager' | 'sdpa'``, ``list[str]``."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _range(metadata: Iterable[Any]) -> str | None:
    parts = []
    for constraint in metadata:
        for attr, text in _BOUNDS:
            value = getattr(constraint, attr, None)
            if value is not None:
                parts.append(text.format(value))
    return ", ".join(parts) or None


def _summary(cls: type) -> str:
    """The first paragraph of the class's own docstring, on one line ('' without one)."""
    doc = cls.__dict__.get("__doc__") or ""
    first = doc.strip().split("\n\n", 1)[0]
    return " ".join(first.split())
