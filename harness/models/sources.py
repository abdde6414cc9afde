"""The four built-in model sources, asked in this order (plugins' sources before them):

- ``builtin``: a name in ``harness.assets.BUILTIN_MODELS``, provisioned offline.
- ``gguf``: a path ending in ``.gguf``, dequantized by transformers into a plain model.
- ``local``: a folder with a ``config.json`` (any ``save_pretrained`` output).
- ``hub``: an ``org/name`` Hugging Face hub id; respects ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from harness.assets import provision
from harness.assets.builtin_models import load_gguf_plain
from harness.assets.names import BUILTIN_MODELS
from harness.errors import ModelError
from harness.markers import hookimpl
from harness.models.base import LoadedModel, LoadRequest, ModelSource, torch_dtype
from harness.models.hub import hub_message, hub_offline, hub_reachable, in_hub_cache
from harness.models.loading import device_kwargs, finish, first_line, load_pretrained

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


class BuiltinSource(ModelSource):
    """Built-in offline models (``harness.assets.BUILTIN_MODELS``)."""

    name: ClassVar[str] = "builtin"

    @classmethod
    def matches(cls, model_id: str) -> bool:
        return model_id in BUILTIN_MODELS

    def open(self, request: LoadRequest) -> LoadedModel:
        folder = str(provision(request.model_id))
        return load_pretrained(
            request, source=self.name, name_or_path=folder, local_files_only=True
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

    def open(self, request: LoadRequest) -> LoadedModel:
        self.check(request.model_id)
        from transformers import AutoTokenizer

        path = Path(request.model_id).expanduser().resolve()
        dtype = torch_dtype(request.dtype)
        try:
            model = load_gguf_plain(path, dtype=dtype, **device_kwargs(request.device))
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(
                f"cannot load GGUF file {request.model_id!r}: {first_line(exc)}"
            ) from exc
        return finish(model, tokenizer, request.device, source=self.name, path=str(path))


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

    def open(self, request: LoadRequest) -> LoadedModel:
        self.check(request.model_id)
        folder = str(Path(request.model_id).expanduser().resolve())
        return load_pretrained(
            request, source=self.name, name_or_path=folder, local_files_only=True
        )


class HubSource(ModelSource):
    """A Hugging Face hub id ``org/name``, loaded with ``from_pretrained``."""

    name: ClassVar[str] = "hub"

    @classmethod
    def matches(cls, model_id: str) -> bool:
        return bool(_HUB_ID.match(model_id))

    def check(self, model_id: str) -> None:
        # No network here. Offline, the only thing that can work is the local hub cache.
        if hub_offline() and not in_hub_cache(model_id):
            raise ModelError(hub_message(model_id, "HF_HUB_OFFLINE is set and it is not cached"))

    def open(self, request: LoadRequest) -> LoadedModel:
        model_id = request.model_id
        offline = hub_offline()
        if not offline and not hub_reachable():
            # Saves the ~25 s of retries transformers spends before giving up.
            offline = True
            if not in_hub_cache(model_id, request.revision):
                raise ModelError(hub_message(model_id, "the hub is unreachable from here"))
        try:
            return load_pretrained(request, source=self.name, local_files_only=offline)
        except ModelError as exc:
            reason = str(exc).removeprefix(f"cannot load {model_id!r}: ")
            raise ModelError(hub_message(model_id, reason)) from exc


@hookimpl
def register_model_sources() -> list[type[ModelSource]]:
    """Register the built-in model sources, in the order they are asked."""
    return [BuiltinSource, GGUFSource, LocalSource, HubSource]
