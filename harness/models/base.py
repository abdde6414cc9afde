"""The model source contract: a load request, the loaded model, and the source base class.

A leaf of the import graph (it imports only ``harness.errors`` and the asset names), so the
hook specifications and the registry can name ``ModelSource`` without an import cycle.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.assets.names import BUILTIN_MODELS
from harness.errors import ModelError

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


@dataclass(frozen=True)
class LoadRequest:
    """What to load: the one argument every model source's ``open`` receives.

    Attributes:
        model_id: the suite's model id.
        dtype: ``auto`` (the checkpoint's config dtype, float32 if it names none),
            ``float32``/``fp32``, ``bfloat16``/``bf16`` or ``float16``/``fp16``.
        revision: hub revision (branch, tag or commit); ignored by local sources.
        trust_remote_code: allow the checkpoint's own modelling code.
        device: torch device string, e.g. ``cpu`` or ``cuda:0``.
    """

    model_id: str
    dtype: str = "auto"
    revision: str | None = None
    trust_remote_code: bool = False
    device: str = "cpu"


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

    Subclasses set ``name`` and implement ``matches``, ``check`` and ``open``; callers use
    ``load``, whose keyword signature is defined here once for every source.
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

    def open(self, request: LoadRequest) -> LoadedModel:
        """Load the model and tokenizer that ``request`` describes.

        Raises:
            ModelError: the model cannot be loaded; the message says how to fix it.
        """
        raise NotImplementedError

    def load(
        self,
        model_id: str,
        *,
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        device: str = "cpu",
    ) -> LoadedModel:
        """Load a model: builds the ``LoadRequest`` (see its attributes) and calls ``open``.

        Raises:
            ModelError: the model cannot be loaded.
        """
        return self.open(LoadRequest(model_id, dtype, revision, trust_remote_code, device))


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
