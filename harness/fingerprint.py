"""Cell fingerprints: what exactly a cell measured, so results can be matched across runs.

A fingerprint is a JSON document (``cells.fingerprint``) with one section per part of
the measurement (``docs/compare.md`` lists every field):

    model      id, dtype, revision, trust_remote_code (the suite's spec); the source that
               loaded it, its path, the hub commit, sha256 over its files, each file's digest
    workload   name and params; ``texts``: sha256 and length of every text the cell's tasks
               read; ``tokenizer``: its class and sha256; ``inputs``: what the workload
               says identifies its inputs (``generate``: the sha256 of its prompt token ids)
    accuracy   the accuracy tasks with their params (``accuracy_inputs`` their own inputs)
    stack      the technique stack with the resolved configs
    device     name and kind; the GPU and its compute capability, the CPU model
    policy     warm-up, repeats and the adaptive-repeat settings
    software   python, the core libraries, every plugin's libraries and distribution, the
               git commit of the working directory
    host       the machine's 1-minute load average and CPU count as the cell began, and
               ``calibration``: a fixed workload's timings (``harness.calibration``): not
               part of what was measured, but what explains two runs' different timings

Two places fill it: :func:`describe` gives what the suite says (the runner and the worker
both know it, so a timed-out cell still has it); the worker adds what only it can know
once the model is loaded (``harness.cell.identify``: files, tokenizer, token ids).

:func:`identity` picks the fields that must be equal for two cells to have measured the
same thing (:data:`IDENTITY`); ``cells.fingerprint_hash`` is :func:`identity_hash` of it.
Everything else (software, model files, GPU, policy) may differ between two compared
cells: that is what a comparison is about, and ``bench compare`` names it.

Nothing here imports torch; the file and text digests are cached per process, so a worker
hashes each file once per run.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.matrix import Cell
    from harness.registry import Registry

#: Bumped when the layout of the fingerprint changes.
FINGERPRINT_VERSION = 1

#: Files up to this size are hashed whole (configs, tokenizers, small checkpoints), bytes.
FULL_HASH_MAX_BYTES = 64 * 2**20
#: Larger files are hashed by their size, their first and last EDGE_BYTES and
#: SAMPLE_COUNT evenly spaced chunks of SAMPLE_BYTES: a few MiB read per weight file.
EDGE_BYTES = 2**20
SAMPLE_BYTES = 64 * 2**10
SAMPLE_COUNT = 8

#: The fields (paths into the fingerprint) that must be equal for two cells to match.
IDENTITY: tuple[tuple[str, ...], ...] = (
    ("model", "id"),
    ("model", "dtype"),
    ("model", "trust_remote_code"),
    ("workload", "name"),
    ("workload", "params"),
    ("workload", "inputs"),
    ("workload", "texts"),
    ("accuracy",),
    ("accuracy_inputs",),
    ("stack",),
    ("device", "name"),
)

# Fields left out of flatten(): file-level detail summarised by ``model.sha256``.
_DETAIL: frozenset[tuple[str, ...]] = frozenset({("model", "files")})


def canonical(document: Any) -> str:
    """Compact JSON with sorted keys: equal documents give equal strings."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    """sha256 of a string's UTF-8 bytes, hex."""
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- what the suite says


def describe(cell: Cell) -> dict[str, Any]:
    """The part of a cell's fingerprint that its suite defines (no model needed)."""
    policy = cell.policy.model_dump(mode="json")
    policy.pop("timeout_s", None)  # a limit, not a setting of the measurement
    return {
        "version": FINGERPRINT_VERSION,
        "model": cell.model.model_dump(mode="json"),
        "workload": cell.workload.as_dict(),
        "accuracy": [task.as_dict() for task in cell.accuracy],
        "stack": [entry.as_dict() for entry in cell.stack],
        "device": {"name": cell.device, "kind": cell.device.split(":")[0]},
        "policy": policy,
    }


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, section by section (nested mappings merge)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- identity


def identity(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`IDENTITY` fields present in ``fingerprint``, by dotted path."""
    flat = {}
    for path in IDENTITY:
        found, value = _get(fingerprint, path)
        if found:
            flat[".".join(path)] = value
    return flat


def identity_hash(fingerprint: Mapping[str, Any] | None) -> str | None:
    """sha256 of the canonical JSON of :func:`identity`; None without a fingerprint."""
    if not fingerprint:
        return None
    return sha256_text(canonical(identity(fingerprint)))


def flatten(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Every leaf of ``fingerprint`` by dotted path; lists as canonical JSON strings.

    The file digests (``model.files``) are left out: ``model.sha256`` summarises them.
    Identity fields are kept whole (``stack``, ``workload.params``) so each compares as one.
    """
    flat: dict[str, Any] = {}
    whole = set(IDENTITY)

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if path in _DETAIL:
            return
        if isinstance(value, Mapping) and path not in whole:
            for key in sorted(value, key=str):
                walk(value[key], (*path, str(key)))
        elif isinstance(value, list | tuple | Mapping):
            flat[".".join(path)] = canonical(value)
        else:
            flat[".".join(path)] = value

    walk(fingerprint, ())
    return flat


def is_identity(path: str) -> bool:
    """Whether a dotted path of :func:`flatten` is an identity field (or inside one)."""
    return any(path == ".".join(p) or path.startswith(".".join(p) + ".") for p in IDENTITY)


def _get(document: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    value: Any = document
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return False, None
        value = value[key]
    return True, value


# ---------------------------------------------------------------- files and texts


def file_digest(path: Path) -> str:
    """A digest of one file's content, cached per process by (path, size, mtime).

    Files up to ``FULL_HASH_MAX_BYTES`` give ``sha256:<hex>`` of their bytes. Larger files
    (weights) give ``sampled-sha256:<hex>`` of their size, their first and last
    ``EDGE_BYTES`` and ``SAMPLE_COUNT`` chunks of ``SAMPLE_BYTES`` at evenly spaced offsets:
    a copy of the same file gives the same digest (the modification time only keys the
    cache), and any change to the header (tensor names, shapes, dtypes, offsets), the edges
    or the sampled chunks changes it; a change confined elsewhere is not seen.
    """
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        if size <= FULL_HASH_MAX_BYTES:
            for chunk in iter(lambda: file.read(2**20), b""):
                digest.update(chunk)
            return f"sha256:{digest.hexdigest()}"
        digest.update(f"{size}\0".encode())
        step = size // (SAMPLE_COUNT + 1)
        spans = [(0, EDGE_BYTES)]
        spans += [(step * i, SAMPLE_BYTES) for i in range(1, SAMPLE_COUNT + 1)]
        spans.append((size - EDGE_BYTES, EDGE_BYTES))
        for offset, length in spans:
            file.seek(offset)
            digest.update(file.read(length))
    return f"sampled-sha256:{digest.hexdigest()}"


def folder_files(path: Path) -> dict[str, str]:
    """:func:`file_digest` of every file under ``path`` (or of ``path`` itself, a file),
    by path relative to it; hidden files and folders (``.cache``, ``.git``) are skipped."""
    if path.is_file():
        return {path.name: file_digest(path)}
    files = {}
    for item in sorted(path.rglob("*")):
        relative = item.relative_to(path)
        if item.is_file() and not any(part.startswith(".") for part in relative.parts):
            files[relative.as_posix()] = file_digest(item)
    return files


def files_hash(files: Mapping[str, str]) -> str | None:
    """sha256 over the sorted ``name\\0digest`` lines of ``files``; None when empty."""
    if not files:
        return None
    return sha256_text("".join(f"{name}\0{files[name]}\n" for name in sorted(files)))


@functools.lru_cache(maxsize=16)
def text_digest(text: str) -> dict[str, Any]:
    """``{"sha256", "chars"}`` of a text: its version, whatever its source calls it."""
    return {"sha256": sha256_text(text), "chars": len(text)}


_TOKENIZERS: dict[int, tuple[Any, dict[str, Any]]] = {}


def tokenizer_digest(tokenizer: Any) -> dict[str, Any]:
    """``{"class", "sha256"}`` of a tokenizer, cached per tokenizer object.

    A fast tokenizer hashes its full serialisation (``backend_tokenizer.to_str()``:
    vocabulary, merges, normaliser, pre-tokeniser, added tokens); any other hashes its
    sorted vocabulary and special tokens.
    """
    hit = _TOKENIZERS.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        text = str(backend.to_str())
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        special = getattr(tokenizer, "special_tokens_map", {})
        text = canonical({"vocab": vocab, "special": special})
    digest = {"class": type(tokenizer).__name__, "sha256": sha256_text(text)}
    if len(_TOKENIZERS) >= 8:
        _TOKENIZERS.clear()
    _TOKENIZERS[id(tokenizer)] = (tokenizer, digest)
    return digest


# ---------------------------------------------------------------- models


def model_section(model_id: str, revision: str | None, loaded: Any) -> dict[str, Any]:
    """What identifies the loaded model's files.

    Args:
        model_id: the suite's model id.
        revision: the suite's hub revision, if any.
        loaded: the ``harness.models.LoadedModel``; its ``path`` is a folder or a file for
            local sources, the hub id for the hub (then the files are found in the local
            hub cache, at the commit the model was loaded from).

    Returns:
        ``source``, ``path``, ``commit`` (the hub commit, else None), ``files`` (digest per
        file, :func:`file_digest`), ``sha256`` (:func:`files_hash`; None when no file was
        found, with ``files_reason``).
    """
    config = getattr(loaded.model, "config", None)
    commit = getattr(config, "_commit_hash", None)
    where = Path(str(loaded.path)).expanduser()
    section: dict[str, Any] = {"source": loaded.source, "path": str(loaded.path), "commit": commit}
    folder: Path | None = where if where.exists() else None
    if folder is None:
        folder = _hub_snapshot(model_id, commit or revision)
    if folder is None:
        section.update(files={}, sha256=None, files_reason="no local files (not in the hub cache)")
        return section
    files = folder_files(folder)
    section.update(files=files, sha256=files_hash(files))
    return section


def _hub_snapshot(model_id: str, revision: str | None) -> Path | None:
    """The local hub cache folder of ``model_id`` at ``revision``, without the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except (ImportError, OSError, ValueError):  # not installed, not cached, bad id
        return None


# ---------------------------------------------------------------- software and device


def software_section(registry: Registry) -> dict[str, Any]:
    """Python, the core libraries, the plugins' libraries and distributions, git commit.

    Computed once per process and registry (it reads package metadata and runs git).
    """
    return _software(registry)


@functools.cache
def _software(registry: Registry) -> dict[str, Any]:
    from harness.environment import git_commit, library_versions

    section: dict[str, Any] = dict(library_versions())
    section.update(registry.environment_info())
    distributions = {
        dist.project_name: dist.version for _, dist in registry.pm.list_plugin_distinfo()
    }
    section["plugins"] = dict(sorted(distributions.items()))
    section["git_commit"] = git_commit()
    return section


def device_facts(gpu_name: str | None, capability: Iterable[int] | None) -> dict[str, Any]:
    """The device facts a worker knows: GPU name and compute capability, the CPU model."""
    from harness.environment import machine_info

    return {
        "gpu": gpu_name,
        "capability": ".".join(str(part) for part in capability) if capability else None,
        "cpu": machine_info()["cpu"],
    }
