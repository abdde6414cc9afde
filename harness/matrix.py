"""Matrix expansion: a validated suite file into cells (models × devices × stacks × workloads).

Every technique, workload and accuracy task is validated against the installed plugins;
errors name the file, the line and the fix. A cell's key (``cell_key``) is a hash of
everything that defines its measurement.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import SuiteError
from harness.gates import Gate
from harness.suite_yaml import dotted as _dotted
from harness.suite_yaml import short
from harness.suite_yaml import where as _where
from harness.suitefile import ModelSpec, Policy, StackItem, SuiteFile

if TYPE_CHECKING:
    from harness.registry import Registry

# Bump when the measurement protocol changes: it is part of every cell key, so results of an
# older protocol are never compared with (or resumed as) new ones.
PROTOCOL_VERSION = 1

#: Most cells a suite may expand into unless ``--max-cells`` raises the limit.
MAX_CELLS = 10_000


class TooManyCells(SuiteError):
    """The matrix has more cells than the limit (``bench check/run --max-cells``).

    Attributes:
        path: the suite file.
        cells: the matrix size before ``exclude`` and duplicate stacks.
        limit: the limit it exceeds.
        exact: ``cells`` is the count (the suite has no ``exclude`` rules); else the
            matrix has more than ``limit`` cells and at most ``cells``.
        spec: the validated suite file.
    """

    def __init__(self, path: Path, cells: int, limit: int, *, exact: bool, spec: SuiteFile) -> None:
        self.path, self.cells, self.limit, self.exact = path, cells, limit, exact
        self.spec = spec
        super().__init__(self.message())

    def message(self, estimate: str = "") -> str:
        """The error line; ``estimate`` (e.g. "about 3 days") is added after the count."""
        count = f"{self.cells:,} cells" if self.exact else f"more than {self.limit:,} cells"
        if not self.exact:
            count += f" (up to {self.cells:,} before 'exclude')"
        shown = f", {estimate}" if estimate else ""
        return (
            f"{self.path}: the matrix has {count}{shown}; the limit is {self.limit:,}. "
            "Shorten the lists or add 'exclude' rules, or pass "
            f"--max-cells {self.cells} to measure them all."
        )


@dataclass(frozen=True)
class StackEntry:
    """One technique of a stack with its resolved (validated, defaults filled) config."""

    name: str
    config: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": dict(self.config)}


@dataclass(frozen=True)
class TaskSpec:
    """A workload or accuracy task with its resolved parameters."""

    name: str
    params: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}


@dataclass(frozen=True)
class Cell:
    """Model × technique stack × workload parameters × device: one measured result."""

    key: str
    model: ModelSpec
    stack: tuple[StackEntry, ...]
    workload: TaskSpec
    accuracy: tuple[TaskSpec, ...]
    device: str
    policy: Policy
    label: str  # readable stack label, e.g. "weight-quant(bits=4)+kv-quant(bits=2)"
    reference: bool = False  # this stack is the suite's reference stack
    gates: tuple[Gate, ...] = ()  # the suite's quality gates (judged, not part of the key)


# --------------------------------------------------------------------------- expansion


def _stack_items(entry: StackItem | list[StackItem]) -> list[tuple[str, dict[str, Any]]]:
    items: list[StackItem] = entry if isinstance(entry, list) else [entry]
    out: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, str):
            out.append((item, {}))
        else:
            if len(item) != 1:
                raise ValueError("a technique is one name with its parameters, e.g. {bits: 4}")
            ((name, params),) = item.items()
            out.append((name, dict(params or {})))
    return out


def _accepts_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset, Sequence):
        return True
    return any(_accepts_list(a) for a in typing.get_args(annotation)) if origin else False


def _axes(params: Mapping[str, Any], list_fields: set[str]) -> list[dict[str, Any]]:
    """Expand list values into the cartesian product of parameter sets.

    A list expands the matrix unless the parameter itself takes a list; then a list of
    lists expands.
    """
    keys = list(params)
    choices = []
    for k in keys:
        v = params[k]
        if isinstance(v, list) and (k not in list_fields or (v and isinstance(v[0], list))):
            choices.append(v)
        else:
            choices.append([v])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]


def resolve_devices(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """Map ``auto``/``all-gpus`` to concrete devices; ``available`` lists cuda:N first."""
    gpus = [d for d in available if d.startswith("cuda")]
    out: list[str] = []
    for d in wanted:
        if d == "auto":
            out.append(gpus[0] if gpus else "cpu")
        elif d == "all-gpus":
            out.extend(gpus or ["cpu"])
        else:
            out.append("cuda:0" if d == "cuda" else d)
    return list(dict.fromkeys(out))


def detect_devices() -> list[str]:
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] + ["cpu"]


def expand(
    spec: SuiteFile,
    registry: Registry,
    path: Path,
    node: yaml.Node | None = None,
    devices: Sequence[str] | None = None,
) -> Iterator[Cell]:
    """Yield the suite's cells: models × devices × stacks × workload parameters."""
    techniques = registry.techniques
    workloads = registry.workloads

    ((wname, wparams),) = spec.workload.items()
    wcls = workloads.get(wname)
    if wcls is None or wcls.kind != "measure":
        known = ", ".join(sorted(n for n, w in workloads.items() if w.kind == "measure"))
        raise SuiteError(
            f"{_where(path, node, ['workload', wname])}: unknown workload '{wname}'. "
            f"Installed: {known}. Run 'bench plugins'."
        )
    workload_sets = []
    for params in _axes(wparams or {}, _list_fields(wcls.Params)):
        resolved = _validate(wcls.Params, params, path, node, ["workload", wname], "workload")
        workload_sets.append(TaskSpec(wname, resolved))

    accuracy = []
    for i, task in enumerate(spec.accuracy):
        name, params = (task, {}) if isinstance(task, str) else _single(task, path, node, i)
        acls = workloads.get(name)
        if acls is None or acls.kind != "accuracy":
            known = ", ".join(sorted(n for n, w in workloads.items() if w.kind == "accuracy"))
            raise SuiteError(
                f"{_where(path, node, ['accuracy', i])}: unknown accuracy task '{name}'. "
                f"Installed: {known or 'none'}. Run 'bench plugins'."
            )
        loc = ["accuracy", i, name]
        accuracy.append(TaskSpec(name, _validate(acls.Params, params, path, node, loc, "task")))

    reference = _reference(spec, registry, path, node)
    gates = _gates(spec, registry, path, node)
    entries = spec.techniques if spec.techniques is not None else [reference[0]]
    stacks: list[tuple[StackEntry, ...]] = []
    for i, entry in enumerate(entries):
        stacks.extend(_stacks(entry, registry, path, node, ["techniques", i]))
    if spec.reference is not None and reference[1] not in stacks:
        raise SuiteError(
            f"{_where(path, node, ['reference'])}: the reference stack is not one of the "
            "suite's techniques. Add it to 'techniques'."
        )

    wanted = resolve_devices(spec.devices, devices if devices is not None else detect_devices())
    models = [m if isinstance(m, ModelSpec) else ModelSpec(id=m) for m in spec.models]
    seen: set[str] = set()
    for model in models:
        for device in wanted:
            for stack in stacks:
                for workload in workload_sets:
                    if _excluded(spec.exclude, model, device, stack, workload):
                        continue
                    label = "+".join(techniques[s.name].describe(s.config) for s in stack)
                    versions = registry.plugin_versions(
                        [s.name for s in stack], [workload.name, *(a.name for a in accuracy)]
                    )
                    key = cell_key(
                        model, stack, workload, tuple(accuracy), device, spec.policy, versions
                    )
                    if key in seen:  # e.g. "precision" and "precision: {dtype: float32}"
                        continue
                    seen.add(key)
                    yield Cell(
                        key,
                        model,
                        stack,
                        workload,
                        tuple(accuracy),
                        device,
                        spec.policy,
                        label,
                        reference=stack == reference[1],
                        gates=gates,
                    )


def matrix_size(spec: SuiteFile, registry: Registry, devices: Sequence[str] | None = None) -> int:
    """How many cells ``spec`` expands into before ``exclude`` and duplicate stacks drop
    some: models × devices × stacks × workload variants, counted without building any.

    Names that are not installed count as one variant; :func:`expand` reports them.
    """
    techniques, workloads = registry.techniques, registry.workloads

    def variants(params: Mapping[str, Any] | None, model: type[BaseModel] | None) -> int:
        list_fields = _list_fields(model) if model is not None else set()
        count = 1
        for k, v in (params or {}).items():
            if isinstance(v, list) and (k not in list_fields or (v and isinstance(v[0], list))):
                count *= len(v)
        return count

    ((wname, wparams),) = spec.workload.items()
    wcls = workloads.get(wname)
    workload_count = variants(wparams, wcls.Params if wcls is not None else None)
    stack_count = 0
    for entry in spec.techniques if spec.techniques is not None else [[]]:
        try:
            items = _stack_items(entry)
        except ValueError:
            items = []
        count = 1
        for name, params in items:
            cls = techniques.get(name)
            count *= variants(params, cls.Config if cls is not None else None)
        stack_count += count
    wanted = resolve_devices(spec.devices, devices if devices is not None else detect_devices())
    return len(spec.models) * len(wanted) * stack_count * workload_count


def _stacks(
    entry: StackItem | list[StackItem],
    registry: Registry,
    path: Path,
    node: yaml.Node | None,
    loc: list[Any],
) -> list[tuple[StackEntry, ...]]:
    """The stacks one ``techniques`` entry expands into, each validated."""
    techniques = registry.techniques
    try:
        items = _stack_items(entry)
    except ValueError as exc:
        raise SuiteError(f"{_where(path, node, loc)}: {exc}.") from exc
    per_item: list[list[StackEntry]] = []
    for name, params in items:
        cls = techniques.get(name)
        if cls is None:
            raise SuiteError(
                f"{_where(path, node, loc)}: {_dotted(loc)}: unknown technique '{name}'. "
                f"Installed: {', '.join(sorted(techniques))}. Run 'bench plugins'."
            )
        per_item.append(
            [
                StackEntry(name, _validate(cls.Config, p, path, node, loc, f"'{name}'"))
                for p in _axes(params, _list_fields(cls.Config))
            ]
        )
    stacks = list(itertools.product(*per_item))
    for combo in stacks:
        _check_combination(combo, techniques, path, node, loc)
    return stacks


def _reference(
    spec: SuiteFile, registry: Registry, path: Path, node: yaml.Node | None
) -> tuple[StackItem | list[StackItem], tuple[StackEntry, ...] | None]:
    """The suite's reference entry and its stack (None when there is none to compare with).

    Default: the technique that declares itself the default reference
    (``Technique.default_reference``), if one is installed.
    """
    entry = spec.reference
    if entry is None:
        default = [n for n, cls in registry.techniques.items() if cls.default_reference]
        if not default:
            return [], None
        entry = default[0]
    stacks = _stacks(entry, registry, path, node, ["reference"])
    if len(stacks) != 1:
        raise SuiteError(
            f"{_where(path, node, ['reference'])}: the reference is one stack; "
            "give single values, not lists."
        )
    return entry, stacks[0]


def _gates(
    spec: SuiteFile, registry: Registry, path: Path, node: yaml.Node | None
) -> tuple[Gate, ...]:
    """The suite's gates; each names a registered metric."""
    known = registry.metrics
    gates = []
    for metric, rule in spec.gates.items():
        if metric not in known:
            close = difflib.get_close_matches(metric, sorted(known), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise SuiteError(
                f"{_where(path, node, ['gates', metric])}: gates: unknown metric '{metric}'."
                f"{hint} Gates bound registered metrics: run 'bench plugins' (it lists every "
                "metric) or see docs/metrics.md."
            )
        gates.append(Gate(metric, rule.rules()))
    return tuple(gates)


def _single(
    entry: Mapping[str, Any], path: Path, node: yaml.Node | None, i: int
) -> tuple[str, dict[str, Any]]:
    if len(entry) != 1:
        raise SuiteError(f"{_where(path, node, ['accuracy', i])}: one task name per entry.")
    ((name, params),) = entry.items()
    return name, dict(params or {})


def _list_fields(model: type[BaseModel]) -> set[str]:
    return {n for n, f in model.model_fields.items() if _accepts_list(f.annotation)}


def _validate(
    model: type[BaseModel],
    params: Mapping[str, Any],
    path: Path,
    node: yaml.Node | None,
    loc: list[Any],
    what: str,
) -> dict[str, Any]:
    try:
        return model.model_validate(params).model_dump(mode="json")
    except ValidationError as exc:
        # An unknown key explains a "missing" error better than the other way round.
        err = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        field = ".".join(str(p) for p in err["loc"]) or "parameters"
        allowed = ", ".join(model.model_fields) or "no parameters"
        got = (
            f" (got {short(err['input'])})"
            if err["type"] not in ("extra_forbidden", "missing")
            else ""
        )
        raise SuiteError(
            f"{_where(path, node, [*loc, *err['loc']])}: {what}: {field}: {err['msg']}{got}. "
            f"Parameters: {allowed}. Run 'bench plugins' for each technique's options."
        ) from exc


def _check_combination(
    stack: Sequence[StackEntry],
    techniques: Mapping[str, Any],
    path: Path,
    node: Any,
    loc: list[Any],
) -> None:
    names = [s.name for s in stack]
    for s in stack:
        clash = techniques[s.name].incompatible_with & set(names)
        if clash:
            raise SuiteError(
                f"{_where(path, node, loc)}: '{s.name}' cannot be combined with "
                f"{', '.join(sorted(clash))}. Put them in separate stacks."
            )
    if len(set(names)) != len(names):
        raise SuiteError(f"{_where(path, node, loc)}: a technique appears twice.")


def _excluded(
    rules: Sequence[Mapping[str, Any]],
    model: ModelSpec,
    device: str,
    stack: Sequence[StackEntry],
    workload: TaskSpec,
) -> bool:
    def matches(key: str, want: Any) -> bool:
        wants = want if isinstance(want, list) else [want]
        if key == "model":
            return model.id in wants
        if key == "device":
            return device in wants
        if key == "technique":
            return any(s.name in wants for s in stack)
        if key in workload.params:
            return workload.params[key] in wants
        return any(key in s.config and s.config[key] in wants for s in stack)

    return any(rule and all(matches(k, v) for k, v in rule.items()) for rule in rules)


def cell_key(
    model: ModelSpec,
    stack: Sequence[StackEntry],
    workload: TaskSpec,
    accuracy: Sequence[TaskSpec],
    device: str,
    policy: Policy,
    plugins: Mapping[str, str] | None = None,
) -> str:
    """sha256 of the canonical JSON of everything that defines a measurement.

    Device enters as its kind (cpu, cuda): results are per machine fingerprint, so the
    same cell on another GPU of the same machine kind is told apart by the machine.
    ``plugins`` are the versions of the third-party plugins whose techniques, workload and
    tasks the cell uses (``Registry.plugin_versions``): a new release of one of them is a
    new cell, never resumed from the old release's result. It enters only when not empty,
    so cells of built-ins alone keep their keys.
    """
    doc: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "model": model.model_dump(mode="json"),
        "stack": [s.as_dict() for s in stack],
        "workload": workload.as_dict(),
        "accuracy": [a.as_dict() for a in accuracy],
        "device": device.split(":")[0],
        "policy": _policy_key(policy),
    }
    if plugins:
        doc["plugins"] = dict(plugins)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _policy_key(policy: Policy) -> dict[str, Any]:
    """The policy fields that change a measurement; those added later enter only when they
    differ from their defaults, so keys of earlier results stay valid."""
    key: dict[str, Any] = {"warmup": policy.warmup, "repeats": policy.repeats}
    if policy.min_energy_window_s != Policy.model_fields["min_energy_window_s"].default:
        key["min_energy_window_s"] = policy.min_energy_window_s
    if policy.target_ci is not None:
        key["target_ci"] = policy.target_ci
        key["max_repeats"] = policy.max_repeats
    if policy.memory_limit_gib is not None:
        key["memory_limit_gib"] = policy.memory_limit_gib
    return key
