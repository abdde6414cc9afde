"""Model sources: how a suite's model id is recognised, validated and loaded.

Four built-in sources, asked in this order (plugins' sources are asked before them):

- ``builtin``: a name in ``harness.assets.BUILTIN_MODELS``, provisioned offline.
- ``gguf``: a path ending in ``.gguf``, dequantized by transformers into a plain model.
- ``local``: a folder with a ``config.json`` (any ``save_pretrained`` output).
- ``hub``: an ``org/name`` Hugging Face hub id; respects ``HF_HUB_OFFLINE``.

``check`` is cheap (no model loading, no network) so ``bench check`` can validate a suite
before any worker starts; ``load`` runs in the worker. torch and transformers are imported
inside functions so importing this module stays fast.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlparse

from harness.assets import BUILTIN_MODELS, load_gguf_plain, provision
from harness.errors import ModelError
from harness.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to measure.

    Attributes:
        model: transformers ``PreTrainedModel`` in eval mode, on the requested device.
        tokenizer: its tokenizer; ``pad_token`` is set (to ``eos_token`` if it had none).
        source: name of the source that loaded it (``builtin``, ``local``, ...).
        path: resolved local path, or the hub id.
    """

    model: Any
    tokenizer: Any
    source: str
    path: str


class ModelSource:
    """Recognises one kind of model id and loads it.

    Subclasses set ``name`` and implement ``matches``, ``check`` and ``load``.
    """

    name: ClassVar[str]

    @classmethod
    def matches(cls, model_id: str) -> bool:
        """Return True when this source is responsible for ``model_id`` (syntax only)."""
        raise NotImplementedError

    def check(self, model_id: str) -> None:
        """Validate ``model_id`` cheaply, without loading or network.

        Raises:
            ModelError: the id cannot be loaded; the message says how to fix it.
        """

    def load(
        self,
        model_id: str,
        *,
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        device: str = "cpu",
    ) -> LoadedModel:
        """Load the model and its tokenizer.

        Args:
            model_id: the suite's model id.
            dtype: ``auto`` (the checkpoint's config dtype, float32 if it names none),
                ``float32``/``fp32``, ``bfloat16``/``bf16`` or ``float16``/``fp16``.
            revision: hub revision (branch, tag or commit); ignored by local sources.
            trust_remote_code: allow the checkpoint's own modelling code.
            device: torch device string, e.g. ``cpu`` or ``cuda:0``.

        Raises:
            ModelError: the model cannot be loaded.
        """
        raise NotImplementedError


def resolve_source(
    model_id: str, sources: Sequence[type[ModelSource]], *, key: str = "models[].id"
) -> ModelSource:
    """Return an instance of the first source whose ``matches`` accepts ``model_id``.

    Args:
        model_id: the suite's model id.
        sources: source classes in priority order.
        key: where the id came from, for the error message (``models[0].id``).

    Raises:
        ModelError: no source accepts the id.
    """
    for source in sources:
        if source.matches(model_id):
            return source()
    builtins = ", ".join(BUILTIN_MODELS)
    close = difflib.get_close_matches(model_id, BUILTIN_MODELS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ModelError(
        f"unknown model {model_id!r}: not a built-in ({builtins}), a local folder with "
        f"config.json, a .gguf file, or a hub id 'org/name'.{hint} Check the suite's {key}."
    )


def torch_dtype(name: str) -> torch.dtype | None:
    """Map a dtype name to a ``torch.dtype``; ``auto`` maps to None (the checkpoint decides).

    Raises:
        ModelError: the name is not one of auto, float32/fp32, bfloat16/bf16, float16/fp16.
    """
    if name == "auto":
        return None
    canonical = _DTYPES.get(name.lower().removeprefix("torch."))
    if canonical is None:
        allowed = "auto, " + ", ".join(_DTYPES)
        raise ModelError(f"unknown dtype {name!r}: allowed are {allowed}.")
    import torch

    dtype: torch.dtype = getattr(torch, canonical)
    return dtype


# ---------------------------------------------------------------- sources


class BuiltinSource(ModelSource):
    """Built-in offline models (``harness.assets.BUILTIN_MODELS``)."""

    name: ClassVar[str] = "builtin"

    @classmethod
    def matches(cls, model_id: str) -> bool:
        return model_id in BUILTIN_MODELS

    def load(
        self,
        model_id: str,
        *,
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        device: str = "cpu",
    ) -> LoadedModel:
        folder = provision(model_id)
        return _load_pretrained(
            str(folder), source=self.name, dtype=dtype, device=device, local_files_only=True
        )


class GGUFSource(ModelSource):
    """A ``.gguf`` file, dequantized at load into a plain model techniques can transform."""

    name: ClassVar[str] = "gguf"

    @classmethod
    def matches(cls, model_id: str) -> bool:
        return model_id.lower().endswith(".gguf")

    def check(self, model_id: str) -> None:
        path = Path(model_id).expanduser()
        if not path.is_file():
            raise ModelError(
                f"GGUF file {model_id!r} not found (resolved to {path.resolve()}): "
                "fix the path in the suite's models[].id."
            )

    def load(
        self,
        model_id: str,
        *,
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        device: str = "cpu",
    ) -> LoadedModel:
        self.check(model_id)
        from transformers import AutoTokenizer

        path = Path(model_id).expanduser().resolve()
        try:
            model = load_gguf_plain(path, dtype=torch_dtype(dtype), **_device_kwargs(device))
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"cannot load GGUF file {model_id!r}: {_first_line(exc)}") from exc
        return _finish(model, tokenizer, device, source=self.name, path=str(path))


class LocalSource(ModelSource):
    """A local folder written by ``save_pretrained`` (has ``config.json``)."""

    name: ClassVar[str] = "local"

    @classmethod
    def matches(cls, model_id: str) -> bool:
        explicit = model_id.startswith(("/", "./", "../", "~")) or model_id in (".", "..")
        return explicit or Path(model_id).is_dir()

    def check(self, model_id: str) -> None:
        path = Path(model_id).expanduser()
        if not path.is_dir():
            raise ModelError(
                f"model folder {model_id!r} not found (resolved to {path.resolve()}): fix the "
                "path in the suite's models[].id, or use a built-in: "
                f"{', '.join(BUILTIN_MODELS)}."
            )
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model folder {model_id!r} has no config.json: point models[].id at a folder "
                "written by save_pretrained()."
            )
        if not any(any(path.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
            raise ModelError(
                f"model folder {model_id!r} has no weights (*.safetensors or *.bin): point "
                "models[].id at a folder written by save_pretrained()."
            )

    def load(
        self,
        model_id: str,
        *,
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        device: str = "cpu",
    ) -> LoadedModel:
        self.check(model_id)
        folder = str(Path(model_id).expanduser().resolve())
        return _load_pretrained(
            folder,
            source=self.name,
            dtype=dtype,
            device=device,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )


class HubSource(ModelSource):
    """A Hugging Face hub id ``org/name``, loaded with ``from_pretrained``."""

    name: ClassVar[str] = "hub"

    @classmethod
    def matches(cls, model_id: str) -> bool:
        return bool(_HUB_ID.match(model_id))

    def check(self, model_id: str) -> None:
        # No network here. Offline, the only thing that can work is the local hub cache.
        if _hub_offline() and not _in_hub_cache(model_id):
            raise ModelError(_hub_message(model_id, "HF_HUB_OFFLINE is set and it is not cached"))

    def load(
        self,
        model_id: str,
        *,
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        device: str = "cpu",
    ) -> LoadedModel:
        offline = _hub_offline()
        if not offline and not hub_reachable():
            # Saves the ~25 s of retries transformers spends before giving up.
            offline = True
            if not _in_hub_cache(model_id, revision):
                raise ModelError(_hub_message(model_id, "the hub is unreachable from here"))
        try:
            return _load_pretrained(
                model_id,
                source=self.name,
                dtype=dtype,
                device=device,
                revision=revision,
                trust_remote_code=trust_remote_code,
                local_files_only=offline,
                path=model_id,
            )
        except ModelError as exc:
            reason = str(exc).removeprefix(f"cannot load {model_id!r}: ")
            raise ModelError(_hub_message(model_id, reason)) from exc


@hookimpl
def register_model_sources() -> list[type[ModelSource]]:
    """Register the built-in model sources, in the order they are asked."""
    return [BuiltinSource, GGUFSource, LocalSource, HubSource]


# ---------------------------------------------------------------- loading helpers


def _load_pretrained(
    name_or_path: str,
    *,
    source: str,
    dtype: str,
    device: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    local_files_only: bool = False,
    path: str | None = None,
) -> LoadedModel:
    """Load a transformers checkpoint (folder or hub id) with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    common: dict[str, Any] = {
        "revision": revision,
        "trust_remote_code": trust_remote_code,
        "local_files_only": local_files_only,
    }
    try:
        config = AutoConfig.from_pretrained(name_or_path, **common)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            config=config,
            dtype=_resolve_dtype(dtype, config),
            **_device_kwargs(device),
            **common,
        )
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **common)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load {name_or_path!r}: {_first_line(exc)}") from exc
    return _finish(model, tokenizer, device, source=source, path=path or name_or_path)


def _resolve_dtype(name: str, config: Any) -> torch.dtype:
    """``auto``: the config's dtype (``dtype`` or legacy ``torch_dtype``), else float32."""
    import torch

    explicit = torch_dtype(name)
    if explicit is not None:
        return explicit
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(declared, torch.dtype):
        return declared
    if isinstance(declared, str) and declared != "auto":
        return torch_dtype(declared) or torch.float32
    return torch.float32


def _device_kwargs(device: str) -> dict[str, Any]:
    """Load straight onto an accelerator (no host copy first); CPU needs no device map."""
    return {} if device == "cpu" else {"device_map": {"": device}}


def _finish(model: Any, tokenizer: Any, device: str, *, source: str, path: str) -> LoadedModel:
    """Put the model in eval mode on ``device`` and give the tokenizer a pad token."""
    model.eval()
    if str(model.device) != device:
        model.to(device)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, path=path)


# ---------------------------------------------------------------- hub helpers


def _hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, read at call time."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def _in_hub_cache(model_id: str, revision: str | None = None) -> bool:
    """True when the hub cache on disk holds the model's config.json (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    return isinstance(found, str)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when a TCP connection to the hub endpoint opens within ``timeout_s`` seconds.

    With a proxy configured the direct probe says nothing, so it is assumed reachable.
    """
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _hub_message(model_id: str, reason: str) -> str:
    folder = model_id.split("/")[-1]
    return (
        f"cannot load hub model {model_id!r} ({reason}). Where the hub is reachable run "
        f"'hf download {model_id} --local-dir ./{folder}' and set models[].id to ./{folder}, "
        f"or use a built-in: {', '.join(BUILTIN_MODELS)}."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
