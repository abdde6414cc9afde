"""Suite files: YAML loading with line numbers, validation, and expansion into cells.

Every suite is validated (schema, technique names, each technique's Config, workloads and
accuracy tasks) before any model loads; errors name the file, the line and the fix. The
format's models are in ``harness.suitefile``, the expansion in ``harness.matrix``; this
module re-exports the names callers use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from harness.errors import SuiteError
from harness.matrix import (
    PROTOCOL_VERSION,
    Cell,
    StackEntry,
    TaskSpec,
    cell_key,
    detect_devices,
    expand,
    resolve_devices,
)
from harness.suite_yaml import dotted, is_union_tag, where
from harness.suitefile import ModelSpec, Policy, StackItem, SuiteFile, json_schema

if TYPE_CHECKING:
    from harness.registry import Registry

__all__ = [
    "PROTOCOL_VERSION",
    "Cell",
    "ModelSpec",
    "Policy",
    "StackEntry",
    "StackItem",
    "Suite",
    "SuiteFile",
    "TaskSpec",
    "cell_key",
    "detect_devices",
    "json_schema",
    "load_suite",
    "resolve_devices",
    "suite_from_data",
    "without_preflight",
]


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
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{at}: malformed YAML ({problem}). Fix the syntax.") from exc
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
        loc = [p for p in err["loc"] if not is_union_tag(p)]
        raise SuiteError(
            f"{where(path, node, loc)}: {dotted(loc)}: {err['msg']}. "
            "See docs/suites.md or suites/schema.json."
        ) from exc
    cells = tuple(expand(spec, registry, path, node, devices))
    if not cells:
        raise SuiteError(f"{path}: the matrix is empty after 'exclude'. Loosen 'exclude'.")
    text = text if text is not None else json.dumps(data, sort_keys=True, default=str)
    text_hash = hashlib.sha256(text.encode()).hexdigest()
    return Suite(spec.name, path, spec, text_hash, cells)


def without_preflight(suite: Suite) -> Suite:
    """``suite`` with pre-flight turned off in every cell's policy (``--no-preflight``); the
    cell keys stay the same (pre-flight does not change a measurement)."""
    from dataclasses import replace

    cells = tuple(
        replace(c, policy=c.policy.model_copy(update={"preflight": False})) for c in suite.cells
    )
    return replace(suite, cells=cells)
