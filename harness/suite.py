"""Suite files: pydantic models, YAML loading with line numbers, matrix expansion into cells.

Every suite is validated (schema, technique names, each technique's Config, workloads and
accuracy tasks) before any model loads; errors name the file, the line and the fix.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import SuiteError
from harness.policy import Policy

if TYPE_CHECKING:
    from harness.registry import Registry

# Bump when the measurement protocol changes: it is part of every cell key, so results of an
# older protocol are never compared with (or resumed as) new ones.
PROTOCOL_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A model to benchmark: built-in asset name, local folder, .gguf file or hub id."""

    id: str = Field(description="built-in name (smollm2-135m), folder, .gguf file or hub id")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = None
    trust_remote_code: bool = False


StackItem = str | dict[str, dict[str, Any] | None]


class SuiteFile(_Strict):
    """The YAML suite format (see docs/suites.md). Lists in parameters expand a matrix."""

    name: str
    description: str = ""
    models: list[ModelSpec | str] = Field(min_length=1)
    devices: list[str] = Field(default_factory=lambda: ["auto"])
    workload: dict[str, dict[str, Any]] = Field(
        description="exactly one workload, e.g. {generate: {prompt_tokens: [128, 512]}}"
    )
    techniques: list[StackItem | list[StackItem]] = Field(
        default_factory=lambda: list[StackItem | list[StackItem]](["baseline"]),
        description="each entry is one technique stack to compare",
    )
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    accuracy: list[str | dict[str, dict[str, Any] | None]] = Field(default_factory=list)
    policy: Policy = Field(default_factory=Policy)  # type: ignore[arg-type]

    @field_validator("workload")
    @classmethod
    def _one_workload(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(v) != 1:
            raise ValueError("give exactly one workload, e.g. 'generate: {...}'")
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        for d in v:
            if d not in ("auto", "cpu", "all-gpus") and not d.startswith("cuda"):
                raise ValueError(f"unknown device {d!r}: use auto, cpu, cuda:N or all-gpus")
        return v


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


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    file: SuiteFile
    text_hash: str
    cells: tuple[Cell, ...]


# ----------------------------------------------------------------------------- loading


def load_suite(path: str | Path, registry: Registry, devices: Sequence[str] | None = None) -> Suite:
    """Read, validate and expand a suite file.

    Args:
        path: the YAML file.
        registry: installed plugins, to validate technique, workload and task names.
        devices: resolved device strings for ``auto``/``all-gpus`` (default: detect).

    Raises:
        SuiteError: one line naming the file, the key or line, and the fix.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite ({exc.strerror}). Check the path.") from exc
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{where}: malformed YAML ({problem}). Fix the syntax.") from exc
    return suite_from_data(data, registry, path, node, devices, text)


def suite_from_data(
    data: Any,
    registry: Registry,
    path: Path = Path("<suite>"),
    node: yaml.Node | None = None,
    devices: Sequence[str] | None = None,
    text: str | None = None,
) -> Suite:
    """Validate and expand an already-parsed suite (``node`` gives line numbers)."""
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite is a mapping with name, models, workload, techniques.")
    try:
        spec = SuiteFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if not _is_union_tag(p)]
        raise SuiteError(
            f"{_where(path, node, loc)}: {_dotted(loc)}: {err['msg']}. "
            "See docs/suites.md or suites/schema.json."
        ) from exc
    cells = tuple(expand(spec, registry, path, node, devices))
    if not cells:
        raise SuiteError(f"{path}: the matrix is empty after 'exclude'. Loosen 'exclude'.")
    text = text if text is not None else json.dumps(data, sort_keys=True, default=str)
    text_hash = hashlib.sha256(text.encode()).hexdigest()
    return Suite(spec.name, path, spec, text_hash, cells)


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the tried union member ("str", "ModelSpec", "dict[...]") into the location.
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part == "str")


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "suite"


def _where(path: Path, node: yaml.Node | None, loc: Sequence[Any]) -> str:
    """``file:line`` of the deepest YAML node that ``loc`` reaches."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    child = v
                    line = k.start_mark.line + 1
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            child = node.value[part]
        node = child
    if node is not None:
        line = node.start_mark.line + 1
    return f"{path}:{line}" if line else str(path)


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

    stacks: list[tuple[StackEntry, ...]] = []
    for i, entry in enumerate(spec.techniques):
        try:
            items = _stack_items(entry)
        except ValueError as exc:
            raise SuiteError(f"{_where(path, node, ['techniques', i])}: {exc}.") from exc
        per_item: list[list[StackEntry]] = []
        for name, params in items:
            cls = techniques.get(name)
            if cls is None:
                raise SuiteError(
                    f"{_where(path, node, ['techniques', i])}: techniques[{i}]: unknown "
                    f"technique '{name}'. Installed: {', '.join(sorted(techniques))}. "
                    "Run 'bench plugins'."
                )
            loc = ["techniques", i]
            per_item.append(
                [
                    StackEntry(name, _validate(cls.Config, p, path, node, loc, f"'{name}'"))
                    for p in _axes(params, _list_fields(cls.Config))
                ]
            )
        for combo in itertools.product(*per_item):
            _check_combination(combo, techniques, path, node, i)
            stacks.append(combo)

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
                    key = cell_key(model, stack, workload, tuple(accuracy), device, spec.policy)
                    if key in seen:  # e.g. "precision" and "precision: {dtype: float32}"
                        continue
                    seen.add(key)
                    yield Cell(
                        key, model, stack, workload, tuple(accuracy), device, spec.policy, label
                    )


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
            f" (got {err['input']!r})" if err["type"] not in ("extra_forbidden", "missing") else ""
        )
        raise SuiteError(
            f"{_where(path, node, [*loc, *err['loc']])}: {what}: {field}: {err['msg']}{got}. "
            f"Parameters: {allowed}. Run 'bench plugins' for each technique's options."
        ) from exc


def _check_combination(
    stack: Sequence[StackEntry], techniques: Mapping[str, Any], path: Path, node: Any, i: int
) -> None:
    names = [s.name for s in stack]
    for s in stack:
        clash = techniques[s.name].incompatible_with & set(names)
        if clash:
            raise SuiteError(
                f"{_where(path, node, ['techniques', i])}: '{s.name}' cannot be combined with "
                f"{', '.join(sorted(clash))}. Put them in separate stacks."
            )
    if len(set(names)) != len(names):
        raise SuiteError(f"{_where(path, node, ['techniques', i])}: a technique appears twice.")


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
) -> str:
    """sha256 of the canonical JSON of everything that defines a measurement.

    Device enters as its kind (cpu, cuda): results are per machine fingerprint, so the
    same cell on another GPU of the same machine kind is told apart by the machine.
    """
    doc = {
        "protocol": PROTOCOL_VERSION,
        "model": model.model_dump(mode="json"),
        "stack": [s.as_dict() for s in stack],
        "workload": workload.as_dict(),
        "accuracy": [a.as_dict() for a in accuracy],
        "device": device.split(":")[0],
        "policy": _policy_key(policy),
    }
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
    return key


def json_schema() -> dict[str, Any]:
    """The JSON schema of the suite format, committed as suites/schema.json."""
    schema = SuiteFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bench suite"
    return schema
