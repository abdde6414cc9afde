"""Reading a suite's YAML safely, and where in it a key is (``file:line`` for messages).

A suite file is untrusted input. :func:`read_suite_text` refuses what is not UTF-8 YAML
text (binary files, other encodings, oversized files) before the parser sees it, and
:func:`parse_suite` parses with PyYAML's safe loader plus three guards, each a one-line
``SuiteError`` instead of an exception from deep inside the parser or a gigabyte of
memory:

- a key given twice in one mapping (YAML would silently keep the last one);
- nesting deeper than :data:`MAX_DEPTH` (PyYAML's composer recurses once per level);
- aliases that expand the document by more than :data:`MAX_ALIAS_EXPANSION` values, or
  that refer to their own container ("billion laughs"): refused after composing, before
  anything is constructed or expanded.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from harness.errors import SuiteError

#: Deepest nesting of lists and mappings a suite may have (the shipped ones use 5).
MAX_DEPTH = 64
#: Most values that aliases (``*name``) may add to a suite beyond what is written out.
MAX_ALIAS_EXPANSION = 100_000
#: Largest suite file read, bytes (the shipped ones are under 4 KiB).
MAX_SUITE_BYTES = 4 << 20

_MERGE_TAG = "tag:yaml.org,2002:merge"


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


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(message: str) -> str:
    """``message`` with line breaks shown as ``\\n``: errors are one line even when a
    suite's key or value holds a newline."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


# ----------------------------------------------------------------------------- reading


def read_suite_text(path: Path) -> str:
    """The text of a suite file, refused unless it is a UTF-8 (or UTF-16 with BOM) text.

    Raises:
        SuiteError: the file cannot be read, is too large, is binary, or is text in
            another encoding (the message names the line and the ``iconv`` fix).
    """
    try:
        size = path.stat().st_size
        if size > MAX_SUITE_BYTES:
            raise SuiteError(
                f"{path}: {size:,} bytes is too large for a suite (at most "
                f"{MAX_SUITE_BYTES >> 20} MiB). Check the path; lists in a suite expand the "
                "matrix, so a suite need not spell out every cell."
            )
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite ({exc.strerror}). Check the path.") from exc
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\x00" in data:
        at = data.index(b"\x00")
        line = data[:at].count(b"\n") + 1
        raise SuiteError(
            f"{path}:{line}: not a YAML text file (it holds a NUL byte "
            f"at offset {at}; is it binary?). Give the path of a .yaml suite."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        if _looks_like_text(data):
            byte = data[exc.start]
            raise SuiteError(
                f"{path}:{line}: not UTF-8 (byte 0x{byte:02X}, perhaps Latin-1 or "
                f"Windows-1252). Save the file as UTF-8, e.g. 'iconv -f latin1 -t utf-8 "
                f"{path.name} > fixed.yaml'."
            ) from None
        raise SuiteError(
            f"{path}:{line}: not a YAML text file (byte 0x{data[exc.start]:02X} at offset "
            f"{exc.start} is not UTF-8 text; is it binary?). Give the path of a .yaml suite."
        ) from None


def _looks_like_text(data: bytes) -> bool:
    """Whether undecodable ``data`` is text in a legacy 8-bit encoding rather than binary:
    mostly printable ASCII (YAML's syntax is ASCII), almost no other control bytes."""
    ascii_text = sum(1 for b in data if 0x20 <= b < 0x7F or b in (0x09, 0x0A, 0x0D))
    controls = sum(1 for b in data if b < 0x20 and b not in (0x09, 0x0A, 0x0D))
    return ascii_text >= 0.7 * len(data) and controls <= len(data) // 200


# ----------------------------------------------------------------------------- parsing


class _SuiteLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the depth limit and the duplicate-key check."""

    def __init__(self, text: str, path: Path) -> None:
        super().__init__(text)
        self.suite_path = path
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise SuiteError(
                    f"{self.suite_path}:{mark.line + 1}: suite nested too deeply (more than "
                    f"{MAX_DEPTH} levels of lists and mappings). Flatten it; see docs/suites.md."
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue  # merged keys may be overridden; complex keys fail in the constructor
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first_line:
                lines = (
                    f"lines {first_line[key]} and {line}"
                    if first_line[key] != line
                    else f"both on line {line}"
                )
                raise SuiteError(
                    f"{self.suite_path}:{line}: key {short(key)} is given twice ({lines}); "
                    "YAML would keep only the last one. Remove one of them."
                )
            first_line[key] = line
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def parse_suite(text: str, path: Path) -> tuple[yaml.Node | None, Any]:
    """Parse a suite's text into its YAML node (for line numbers) and its data.

    Raises:
        SuiteError: malformed YAML, a duplicated key, nesting deeper than
            :data:`MAX_DEPTH`, or aliases that expand too far; one line naming the line.
    """
    loader = None
    try:
        loader = _SuiteLoader(text, path)  # the reader checks the characters here
        node = loader.get_single_node()
        if node is None:
            return None, None
        check_aliases(node, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = one_line(exc.problem or str(exc))
        fix = "Quote the key or value." if isinstance(exc, ConstructorError) else "Fix the syntax."
        raise SuiteError(f"{at}: malformed YAML ({problem}). {fix}") from exc
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise SuiteError(
            f"{path}:{line}: not a YAML text file (character U+{ord(char):04X} is not allowed "
            "in YAML). Remove it, or give the path of a .yaml suite."
        ) from exc
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: malformed YAML ({one_line(str(exc))}). Fix the syntax.") from exc
    finally:
        if loader is not None:
            loader.dispose()
    return node, data


def check_aliases(root: yaml.Node, path: Path) -> None:
    """Refuse aliases that make the document much larger, deeper, or cyclic.

    Counts the document's values as if every alias were written out, without expanding
    anything: each distinct node is visited once (iteratively, so a deep document cannot
    exhaust the stack) and its expanded size and depth are memoised.

    Raises:
        SuiteError: an alias refers to a node that contains it, or aliases add more than
            :data:`MAX_ALIAS_EXPANSION` values or nest deeper than :data:`MAX_DEPTH`.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise SuiteError(
                f"{path}:{node.start_mark.line + 1}: a YAML alias refers to the list or mapping "
                "that contains it (a recursive structure). Write the values out."
            )
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise SuiteError(
                    f"{path}:{child.start_mark.line + 1}: a YAML alias refers to the list or "
                    "mapping that contains it (a recursive structure). Write the values out."
                )
            if id(child) not in size:
                stack.append((child, False))
    written = len(size)
    if size[id(root)] - written > MAX_ALIAS_EXPANSION:
        raise SuiteError(
            f"{path}: YAML aliases expand the suite to {size[id(root)]:,} values from "
            f"{written:,} written (more than {MAX_ALIAS_EXPANSION:,} added; an alias bomb?). "
            "Write the values out, or use fewer aliases."
        )
    if depth[id(root)] > MAX_DEPTH:
        raise SuiteError(
            f"{path}: YAML aliases nest the suite {depth[id(root)]} levels deep (more than "
            f"{MAX_DEPTH}). Flatten it; see docs/suites.md."
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
