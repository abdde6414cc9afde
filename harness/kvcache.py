"""How techniques compose the KV cache of a generation: builders, storages and codecs.

Two roles, each taken by at most one technique of a stack:

* a **builder** makes the cache object a generation runs with (eviction keeps a budget of
  tokens, offloading keeps layers in CPU memory). It is a callable
  ``build(codecs) -> cache``; ``codecs`` is None, or one :class:`KVCodec` per decoder layer
  when a storage is in the stack and the builder declared ``stores_codes``.
* a **storage** decides how the tensors are held (quantization). It implements
  :class:`KVStorage`: a whole cache of its own when no builder is in the stack, and per-layer
  codecs that a builder stores its tensors through otherwise.

Any technique may take either role through :meth:`harness.technique.Prepared.set_cache`
and :meth:`~harness.technique.Prepared.set_cache_storage`; the order of the stack does not
matter. A third-party eviction method stacks with the built-in quantizers by declaring
``stores_codes=True`` and keeping its tensors as ``codec.encode(...)`` codes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

#: Which tensor of a layer a code holds.
KVKind = Literal["key", "value"]


class KVCodec(Protocol):
    """Stores one decoder layer's keys or values in fewer bytes, and gives them back.

    Attributes:
        residual_length: recent tokens a builder should keep in full precision before
            encoding them (KIVI's residual); 0 means encode after every step.
    """

    residual_length: int

    def encode(self, tensor: Any, kind: KVKind) -> Any:
        """Codes of ``tensor`` (batch, kv_heads, tokens, head_dim), whatever they are."""

    def decode(self, codes: Any) -> Any:
        """The full-precision tensor ``codes`` were made from (up to the codec's error)."""


class KVStorage(Protocol):
    """How the KV tensors are held (a quantizer), for a whole cache or through a builder."""

    def cache(self) -> Any:
        """A fresh cache object for one generation, used when no builder is in the stack."""

    def codecs(self) -> Sequence[KVCodec]:
        """Fresh codecs, one per decoder layer, for the builder of the stack."""


#: A builder: ``build(codecs)`` returns a fresh cache object for one generation.
KVBuilder = Callable[[Sequence[KVCodec] | None], Any]
