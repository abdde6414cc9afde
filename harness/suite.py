"""Suite files: YAML loading with line numbers, validation, and expansion into cells.

Every suite is validated (schema, technique names, each technique's Config, workloads and
accuracy tasks) before any model loads; errors name the file, the line and the fix. The
format's models are in ``harness.suitefile``, the expansion in ``harness.matrix``; this
module re-exports the names callers use.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from harness.errors import SuiteError
from harness.matrix import (
    MAX_CELLS,
    PROTOCOL_VERSION,
    Cell,
    StackEntry,
    TaskSpec,
    TooManyCells,
    cell_key,
    detect_devices,
    expand,
    matrix_size,
    resolve_devices,
)
from harness.suite_yaml import (
    dotted,
    is_union_tag,
    one_line,
    parse_suite,
    read_suite_text,
    where,
)
from harness.suitefile import ModelSpec, Policy, StackItem, SuiteFile, json_schema

if TYPE_CHECKING:
    from harness.registry import Registry

__all__ = [
    "MAX_CELLS",
    "PROTOCOL_VERSION",
    "Cell",
    "ModelSpec",
    "Policy",
    "StackEntry",
    "StackItem",
    "Suite",
    "SuiteFile",
    "TaskSpec",
    "TooManyCells",
    "cell_key",
    "detect_devices",
    "json_schema",
    "load_suite",
    "matrix_size",
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
    #: The parsed YAML, for messages that name a line (None for a suite built from data).
    node: yaml.Node | None = field(default=None, repr=False, compare=False)


# ----------------------------------------------------------------------------- loading


def load_suite(
    path: str | Path,
    registry: Registry,
    devices: Sequence[str] | None = None,
    *,
    max_cells: int | None = MAX_CELLS,
) -> Suite:
    """Read, validate and expand a suite file.

    Args:
        path: the YAML file.
        registry: installed plugins, to validate technique, workload and task names.
        devices: resolved device strings for ``auto``/``all-gpus`` (default: detect).
        max_cells: refuse a matrix of more cells than this (None: no limit); counted
            before any cell is built.

    Raises:
        SuiteError: one line naming the file, the key or line, and the fix;
            ``TooManyCells`` when the matrix exceeds ``max_cells``.
    """
    path = Path(path)
    try:
        text = read_suite_text(path)
        node, data = parse_suite(text, path)
        return suite_from_data(data, registry, path, node, devices, text, max_cells=max_cells)
    except SuiteError as exc:
        exc.args = (one_line(str(exc)),)  # a key or value may hold a line break
        raise


def suite_from_data(
    data: Any,
    registry: Registry,
    path: Path = Path("<suite>"),
    node: yaml.Node | None = None,
    devices: Sequence[str] | None = None,
    text: str | None = None,
    *,
    max_cells: int | None = MAX_CELLS,
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
            f"{where(path, node, loc)}: {dotted(loc)}: {err['msg'].removeprefix('Value error, ')}. "
            "See docs/suites.md or suites/schema.json."
        ) from exc
    devices = devices if devices is not None else _devices_for(spec)
    cells = _cells(spec, registry, path, node, devices, max_cells)
    if not cells:
        raise SuiteError(f"{path}: the matrix is empty after 'exclude'. Loosen 'exclude'.")
    text = text if text is not None else json.dumps(data, sort_keys=True, default=str)
    text_hash = hashlib.sha256(text.encode()).hexdigest()
    return Suite(spec.name, path, spec, text_hash, cells, node)


def _devices_for(spec: SuiteFile) -> list[str]:
    """This machine's devices, detected (importing torch) only when the suite says
    ``auto`` or ``all-gpus``."""
    if any(d in ("auto", "all-gpus") for d in spec.devices):
        return detect_devices()
    return ["cpu"]


def _cells(
    spec: SuiteFile,
    registry: Registry,
    path: Path,
    node: yaml.Node | None,
    devices: Sequence[str],
    max_cells: int | None,
) -> tuple[Cell, ...]:
    """The suite's cells, refused with ``TooManyCells`` beyond ``max_cells`` before a large
    matrix is built (without ``exclude`` rules the count is known without building any)."""
    if max_cells is None:
        return tuple(expand(spec, registry, path, node, devices))
    size = matrix_size(spec, registry, devices)
    if size <= max_cells:
        return tuple(expand(spec, registry, path, node, devices))
    if not spec.exclude:
        raise TooManyCells(path, size, max_cells, exact=True, spec=spec)
    cells = tuple(itertools.islice(expand(spec, registry, path, node, devices), max_cells + 1))
    if len(cells) > max_cells:
        raise TooManyCells(path, size, max_cells, exact=False, spec=spec)
    return cells


def without_preflight(suite: Suite) -> Suite:
    """``suite`` with pre-flight turned off in every cell's policy (``--no-preflight``); the
    cell keys stay the same (pre-flight does not change a measurement)."""
    from dataclasses import replace

    cells = tuple(
        replace(c, policy=c.policy.model_copy(update={"preflight": False})) for c in suite.cells
    )
    return replace(suite, cells=cells)
