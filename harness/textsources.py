"""Text sources: named corpora for prompts, calibration and evaluation.

A text reference in a suite (``accuracy: - perplexity: {text: shakespeare}``) is resolved
to a source; every source splits its text in two so that evaluation text is never used as a
prompt or as calibration data:

- ``shakespeare``: the built-in plays, split by play (``harness.assets.PROMPT_PLAYS`` and
  ``EVAL_PLAYS``).
- ``file``: a ``.txt``/``.md`` file, or a folder of ``.txt`` files read in name order. A
  folder holding ``prompt.txt`` and ``eval.txt`` gives the split explicitly; otherwise the
  ``prompt`` split is the first 90% of the characters and ``eval`` the last 10%.
- ``hf-dataset``: ``hf:DATASET[/CONFIG]`` or ``hf:ORG/DATASET/CONFIG`` through the optional
  ``datasets`` package (``prompt`` = its train split, ``eval`` = its test split); needs the
  package and a reachable hub (or its local cache with ``HF_DATASETS_OFFLINE=1``).

Loaded texts are cached per process.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from harness.assets import BUILTIN_TEXTS, normalize_text, shakespeare_text
from harness.errors import BenchError
from harness.markers import hookimpl

Split = Literal["prompt", "eval"]
SPLITS: tuple[Split, ...] = ("prompt", "eval")

PROMPT_FRACTION = 0.9
"""Share of a single local text's characters in its ``prompt`` split; the rest is ``eval``."""

_TEXT_SUFFIXES = (".txt", ".md")


class TextSource:
    """Recognises one kind of text reference and loads its splits.

    Subclasses set ``name`` and implement ``matches``, ``check`` and ``load``; one whose
    ``load`` may need the network sets ``remote``, and ``bench check`` then does not load
    it to compare its length with what the suite's tasks need.
    """

    name: ClassVar[str]
    remote: ClassVar[bool] = False

    @classmethod
    def matches(cls, ref: str) -> bool:
        """Return True when this source is responsible for ``ref`` (syntax only)."""
        raise NotImplementedError

    def check(self, ref: str) -> None:
        """Validate ``ref`` cheaply, without reading the whole text.

        Raises:
            BenchError: the text cannot be loaded; the message says how to fix it.
        """

    def load(self, ref: str, split: Split) -> str:
        """Return the text of ``split`` (``prompt`` or ``eval``)."""
        raise NotImplementedError


def resolve_text_source(ref: str, sources: Sequence[type[TextSource]]) -> TextSource:
    """Return an instance of the first source whose ``matches`` accepts ``ref``.

    Raises:
        BenchError: no source accepts the reference.
    """
    for source in sources:
        if source.matches(ref):
            return source()
    raise BenchError(
        f"unknown text {ref!r}: not a built-in ({', '.join(BUILTIN_TEXTS)}), a .txt/.md file "
        "or folder of .txt files, or 'hf:DATASET/CONFIG'. Fix the suite's accuracy[].text."
    )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise BenchError(f"unknown text split {split!r}: allowed are 'prompt' and 'eval'.")


# ---------------------------------------------------------------- shakespeare


class ShakespeareSource(TextSource):
    """The built-in Shakespeare plays (public domain), split by play."""

    name: ClassVar[str] = "shakespeare"

    @classmethod
    def matches(cls, ref: str) -> bool:
        return ref == "shakespeare"

    def load(self, ref: str, split: Split) -> str:
        _check_split(split)
        return _shakespeare(split)


@functools.lru_cache(maxsize=2)
def _shakespeare(split: Split) -> str:
    return shakespeare_text(split)


# ---------------------------------------------------------------- local files


class FileSource(TextSource):
    """A local ``.txt``/``.md`` file or a folder of ``.txt`` files."""

    name: ClassVar[str] = "file"

    @classmethod
    def matches(cls, ref: str) -> bool:
        if ref.lower().endswith(_TEXT_SUFFIXES):
            return True
        return ref.startswith(("/", "./", "../", "~")) or Path(ref).is_dir()

    def check(self, ref: str) -> None:
        path = Path(ref).expanduser()
        if path.is_dir():
            if not any(path.glob("*.txt")):
                raise BenchError(
                    f"text folder {ref!r} holds no .txt files: add some, or fix the suite's "
                    "accuracy[].text."
                )
            return
        if not path.is_file():
            raise BenchError(
                f"text file {ref!r} not found (resolved to {path.resolve()}): fix the suite's "
                "accuracy[].text, or use the built-in 'shakespeare'."
            )
        if path.suffix.lower() not in _TEXT_SUFFIXES:
            raise BenchError(f"text file {ref!r} is not .txt or .md: convert it to plain text.")

    def load(self, ref: str, split: Split) -> str:
        _check_split(split)
        self.check(ref)
        return _local_split(str(Path(ref).expanduser().resolve()), split)


@functools.lru_cache(maxsize=16)
def _local_split(path: str, split: Split) -> str:
    """Read a local text and cut its split (see the module docstring for the rule)."""
    folder = Path(path)
    if folder.is_dir() and (folder / "prompt.txt").is_file() and (folder / "eval.txt").is_file():
        return normalize_text((folder / f"{split}.txt").read_text(encoding="utf-8"))
    text = _local_text(path)
    cut = int(len(text) * PROMPT_FRACTION)
    part = text[:cut] if split == "prompt" else text[cut:]
    if not part.strip():
        raise BenchError(
            f"text {path!r} is too short to split ({len(text)} characters): its {split!r} "
            "split would be empty. Use a longer text."
        )
    return part


@functools.lru_cache(maxsize=4)
def _local_text(path: str) -> str:
    target = Path(path)
    files = sorted(target.glob("*.txt")) if target.is_dir() else [target]
    return "\n\n".join(normalize_text(f.read_text(encoding="utf-8")) for f in files)


# ---------------------------------------------------------------- Hugging Face datasets


class HFDatasetSource(TextSource):
    """A Hugging Face dataset through the optional ``datasets`` package."""

    name: ClassVar[str] = "hf-dataset"
    remote: ClassVar[bool] = True

    @classmethod
    def matches(cls, ref: str) -> bool:
        return ref.startswith("hf:")

    def check(self, ref: str) -> None:
        parse_hf_ref(ref)
        if importlib.util.find_spec("datasets") is None:
            raise BenchError(
                f"text {ref!r} needs the 'datasets' package, which is not installed: run "
                "'pip install datasets', or use the built-in 'shakespeare' or a local .txt file."
            )
        if _datasets_offline():
            return  # datasets will read its local cache, or fail in load with its reason
        from harness.models import hub_reachable

        if not hub_reachable():
            raise BenchError(
                f"text {ref!r} needs the Hugging Face hub, which is unreachable from here: "
                "use the built-in 'shakespeare' or a local .txt file, or set "
                "HF_DATASETS_OFFLINE=1 if the dataset is in the local datasets cache."
            )

    def load(self, ref: str, split: Split) -> str:
        _check_split(split)
        self.check(ref)
        return _hf_split(ref, split)


def parse_hf_ref(ref: str) -> tuple[str, str | None]:
    """Split ``hf:DATASET[/CONFIG]`` or ``hf:ORG/DATASET/CONFIG`` into (dataset, config).

    Raises:
        BenchError: the reference has no dataset or more than three parts.
    """
    parts = ref.removeprefix("hf:").strip("/").split("/")
    if not parts[0] or len(parts) > 3:
        raise BenchError(
            f"text {ref!r}: expected 'hf:DATASET', 'hf:DATASET/CONFIG' or "
            "'hf:ORG/DATASET/CONFIG', e.g. 'hf:wikitext/wikitext-2-raw-v1'."
        )
    if len(parts) == 3:
        return f"{parts[0]}/{parts[1]}", parts[2]
    return parts[0], (parts[1] if len(parts) == 2 else None)


@functools.lru_cache(maxsize=4)
def _hf_split(ref: str, split: Split) -> str:
    import datasets  # optional dependency, checked in HFDatasetSource.check

    name, config = parse_hf_ref(ref)
    wanted = ("train",) if split == "prompt" else ("test", "validation")
    try:
        loaded: Any = datasets.load_dataset(name, config)
    except Exception as exc:  # datasets raises many unrelated types; keep its reason
        raise BenchError(f"cannot load text {ref!r}: {type(exc).__name__}: {exc}") from exc
    available = list(loaded.keys())
    chosen = next((s for s in wanted if s in available), None)
    if chosen is None:
        raise BenchError(
            f"text {ref!r} has splits {', '.join(available)}; the {split!r} split needs "
            f"{' or '.join(wanted)}."
        )
    rows = loaded[chosen]
    column = "text" if "text" in rows.column_names else None
    if column is None:
        column = next(
            (c for c, f in rows.features.items() if getattr(f, "dtype", "") == "string"), None
        )
    if column is None:
        raise BenchError(f"text {ref!r} has no string column: columns are {rows.column_names}.")
    return normalize_text("\n".join(str(line).rstrip("\n") for line in rows[column]))


def _datasets_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    )


@hookimpl
def register_text_sources() -> list[type[TextSource]]:
    """Register the built-in text sources, in the order they are asked."""
    return [ShakespeareSource, HFDatasetSource, FileSource]
