"""Loading a transformers checkpoint for a ``LoadRequest``: dtype, device placement, finish.

torch and transformers are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.errors import ModelError
from harness.models.base import LoadedModel, LoadRequest, torch_dtype

if TYPE_CHECKING:
    import torch


def load_pretrained(
    request: LoadRequest,
    *,
    source: str,
    name_or_path: str | None = None,
    local_files_only: bool = False,
) -> LoadedModel:
    """Load a transformers checkpoint (folder or hub id) with its tokenizer.

    Args:
        request: what to load; its ``model_id`` is reported as the loaded model's path.
        source: name of the source loading it (``LoadedModel.source``).
        name_or_path: where to load from, if not ``request.model_id`` (a resolved folder).
        local_files_only: never contact the hub.

    Raises:
        ModelError: the checkpoint or its tokenizer cannot be read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where = name_or_path or request.model_id
    common: dict[str, Any] = {
        "revision": request.revision,
        "trust_remote_code": request.trust_remote_code,
        "local_files_only": local_files_only,
    }
    try:
        config = AutoConfig.from_pretrained(where, **common)
        model = AutoModelForCausalLM.from_pretrained(
            where,
            config=config,
            dtype=resolve_dtype(request.dtype, config),
            **device_kwargs(request.device),
            **common,
        )
        tokenizer = AutoTokenizer.from_pretrained(where, **common)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load {where!r}: {first_line(exc)}") from exc
    return finish(model, tokenizer, request.device, source=source, path=where)


def resolve_dtype(name: str, config: Any) -> torch.dtype:
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


def device_kwargs(device: str) -> dict[str, Any]:
    """Load straight onto an accelerator (no host copy first); CPU needs no device map."""
    return {} if device == "cpu" else {"device_map": {"": device}}


def finish(model: Any, tokenizer: Any, device: str, *, source: str, path: str) -> LoadedModel:
    """Put the model in eval mode on ``device`` and give the tokenizer a pad token."""
    model.eval()
    if str(model.device) != device:
        model.to(device)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, path=path)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
