"""The Hugging Face hub, seen from a machine that may be offline: flags, cache, reachability."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from harness.assets.names import BUILTIN_MODELS


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, read at call time."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def in_hub_cache(model_id: str, revision: str | None = None) -> bool:
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


def hub_message(model_id: str, reason: str) -> str:
    """The one-line error for a hub model that cannot be loaded, with the two ways out."""
    folder = model_id.split("/")[-1]
    return (
        f"cannot load hub model {model_id!r} ({reason}). Where the hub is reachable run "
        f"'hf download {model_id} --local-dir ./{folder}' and set models[].id to ./{folder}, "
        f"or use a built-in: {', '.join(BUILTIN_MODELS)}."
    )
