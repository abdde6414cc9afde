"""Model sources: how a suite's model id is recognised, validated and loaded.

``check`` is cheap (no model loading, no network) so ``bench check`` can validate a suite
before any worker starts; ``load`` runs in the worker. torch and transformers are imported
inside functions so importing this package stays fast.

The built-in plugin is ``harness.models.sources``. The parts:

- ``base``: the contract (``ModelSource``, ``LoadRequest``, ``LoadedModel``,
  ``resolve_source``, ``torch_dtype``), a leaf the hook specifications import.
- ``sources``: the built-in sources and their ``register_model_sources`` implementation.
- ``loading``: loading a transformers checkpoint for a request.
- ``hub``: offline flags, the hub cache and reachability.
"""

from __future__ import annotations

from harness.models.base import LoadedModel, LoadRequest, ModelSource, resolve_source, torch_dtype
from harness.models.hub import hub_reachable
from harness.models.sources import BuiltinSource, GGUFSource, HubSource, LocalSource

__all__ = [
    "BuiltinSource",
    "GGUFSource",
    "HubSource",
    "LoadRequest",
    "LoadedModel",
    "LocalSource",
    "ModelSource",
    "hub_reachable",
    "resolve_source",
    "torch_dtype",
]
