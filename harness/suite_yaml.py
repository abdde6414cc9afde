"""Where in a suite's YAML a key is: ``file:line`` for error messages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def is_union_tag(part: Any) -> bool:
    # pydantic puts the tried union member ("str", "ModelSpec", "dict[...]") into the location.
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part == "str")


def dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "suite"


def where(path: Path, node: yaml.Node | None, loc: Sequence[Any]) -> str:
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
