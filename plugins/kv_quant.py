"""``kv-quant``: store the KV cache in 2, 4 or 8 bits (KIVI-style, transformers' QuantizedCache).

Each generation gets a fresh ``transformers.QuantizedCache``. With the ``quanto`` and
``hqq`` back-ends a layer keeps its past keys and values as integer codes with one scale
and zero point per ``group_size`` values, plus a full-precision *residual* of at most
``residual_length`` recent tokens; when the residual fills up, everything is dequantized,
concatenated and re-quantized (the prompt is quantized right after prefill). Attention
runs on dequantized copies, so compute is unchanged and only the stored bytes shrink.
The ``fp8`` back-end stores ``float8_e4m3fn`` codes with one fp32 scale per layer and K/V,
frozen at prefill; new tokens are appended (no residual).

Bytes (what ``memory.kv_cache_bytes`` counts by walking the cache object, so packed codes,
scales, zero points and the residual are all included): per layer and per K or V, with
n quantized values, r residual tokens, dtype size s (bytes):
  int back-ends ≈ n·bits/8 + (n/group_size)·2·4 (fp32 scale + zero) + r·heads·head_dim·s
  fp8            = n + 4.

kv-quant is the stack's KV *storage* (``harness.kvcache``): alone it makes the whole cache;
stacked with a cache builder that stores codes (``kv-evict``), the builder keeps its tokens
through this back-end's codecs (``QuantizedCodec``) instead; a builder that cannot
(offload's KV cache) skips the cell.

Axes: ``axis_key`` / ``axis_value`` choose the dimension the groups run along; KIVI
quantizes keys per channel and values per token. transformers' defaults (0, 0) are kept;
quanto accepts 0 or −1, hqq 0 or 1.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from harness import (
    Applied,
    Config,
    Context,
    Environment,
    MetricDef,
    Prepared,
    Skip,
    Technique,
    hookimpl,
)
from harness.environment import package_versions
from harness.estimate import Architecture, Effect, QuantizedKV, Shape
from harness.estimate.arch import DTYPE_BYTES
from harness.kvcache import KVKind

#: transformers' ``QuantizedCache`` defaults for the integer back-ends.
DEFAULT_GROUP_SIZE = 64
DEFAULT_RESIDUAL = 128

#: Import name of each back-end's library (None: plain torch).
_LIBRARIES = {"quanto": "optimum.quanto", "hqq": "hqq", "fp8": None}
_BITS = {"quanto": (2, 4), "hqq": (2, 4, 8), "fp8": (8,)}
_AXES = {"quanto": (0, -1), "hqq": (0, 1)}


class KVQuantConfig(Config):
    bits: Literal[2, 4, 8] = Field(4, description="bits per cached value (before scales)")
    backend: Literal["quanto", "hqq", "fp8"] = Field(
        "quanto", description="quantizer: optimum-quanto, hqq (integer groups) or fp8 e4m3"
    )
    residual_length: int | None = Field(
        None, ge=1, description="recent tokens kept in full precision (int back-ends; 128)"
    )
    group_size: int | None = Field(
        None, ge=1, description="values per scale and zero point (int back-ends; 64)"
    )
    axis_key: int | None = Field(None, description="grouping axis of keys (int back-ends; 0)")
    axis_value: int | None = Field(None, description="grouping axis of values (int back-ends; 0)")

    @model_validator(mode="after")
    def _combination(self) -> KVQuantConfig:
        if self.bits not in _BITS[self.backend]:
            raise ValueError(
                f"backend {self.backend} stores {'/'.join(map(str, _BITS[self.backend]))} "
                f"bits, not {self.bits}"
            )
        group_wise = {
            "residual_length": self.residual_length,
            "group_size": self.group_size,
            "axis_key": self.axis_key,
            "axis_value": self.axis_value,
        }
        if self.backend == "fp8":
            given = [k for k, v in group_wise.items() if v is not None]
            if given:
                raise ValueError(
                    f"backend fp8 scales per tensor and takes no {', '.join(given)}; "
                    "use backend quanto or hqq for group-wise options"
                )
            return self
        for name in ("axis_key", "axis_value"):
            axis = group_wise[name]
            if axis is not None and axis not in _AXES[self.backend]:
                raise ValueError(
                    f"{name} {axis} is not one of {_AXES[self.backend]} for backend {self.backend}"
                )
        return self


class KVQuant(Technique[KVQuantConfig]):
    """Quantize the KV cache with transformers' QuantizedCache."""

    name = "kv-quant"
    kind = frozenset({"inference"})
    Config = KVQuantConfig

    def check(self, env: Environment) -> None:
        c = self.config
        library = _LIBRARIES[c.backend]
        if library is None:
            return
        parts = library.split(".")
        if not all(env.has(".".join(parts[: i + 1])) for i in range(len(parts))):
            package = "optimum-quanto" if c.backend == "quanto" else "hqq"
            raise Skip(f"backend {c.backend} needs {package}: pip install {package}")

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        config = prepared.model.config
        kinds = set(getattr(config.get_text_config(decoder=True), "layer_types", None) or [])
        if kinds - {"full_attention"}:
            raise Skip(
                f"QuantizedCache supports full-attention layers only; the model has {sorted(kinds)}"
            )
        storage = QuantizedStorage(self.config, config)
        ctx.state["storage"] = storage
        prepared.set_cache_storage(storage, self.name)
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """Codes of ``bits`` with a scale and a zero point (model dtype) per group of
        ``group_size`` values and a full-precision residual (int back-ends); fp8: one byte
        per value and one fp32 scale per layer tensor, no residual."""
        c = self.config
        if c.backend == "fp8":
            stored = QuantizedKV("fp8 e4m3, one scale per tensor", 8, None, 0, tensor_bytes=4)
        else:
            group = c.group_size or DEFAULT_GROUP_SIZE
            residual = c.residual_length or DEFAULT_RESIDUAL
            stored = QuantizedKV(
                f"{c.backend} int{c.bits}, groups of {group}, last {residual} tokens in full",
                c.bits,
                group,
                2 * DTYPE_BYTES[effect.dtype],
                residual_tokens=residual,
            )
        return effect.note(f"kv-quant: {stored.label}", kv=stored)

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """Every layer of the cell's last KV cache quantized its tensors at least once
        (``kv_quant.quantized_layers``), whole-cache or as a builder's codecs."""
        counts = ctx.state["storage"].counts
        if not counts:
            return Applied(False, "no generation built a quantized KV cache")
        quantized = sum(1 for n in counts if n > 0)
        evidence = {"kv_quant.quantized_layers": float(quantized)}
        found = (
            f"{quantized} of {len(counts)} cache layers stored {self.config.bits}-bit codes "
            f"({self.config.backend}; {sum(counts)} quantizations in the last generation)"
        )
        return Applied(quantized == len(counts), found, evidence)


class QuantizedStorage:
    """kv-quant as a ``harness.kvcache.KVStorage``: transformers' ``QuantizedCache``, whole or
    as one codec per layer."""

    def __init__(self, c: KVQuantConfig, model_config: Any) -> None:
        self.c = c
        self.model_config = model_config
        #: quantizations per layer of the cache built last (what ``verify`` reads)
        self.counts: list[int] = []

    def cache(self) -> Any:
        cache = make_cache(self.c, self.model_config)
        self.counts = [0] * len(cache.layers)
        for i, layer in enumerate(cache.layers):
            layer._quantize = _counting(layer._quantize, self.counts, i)
        return cache

    def codecs(self) -> list[QuantizedCodec]:
        return [QuantizedCodec(layer) for layer in self.cache().layers]


class QuantizedCodec:
    """One layer of a ``QuantizedCache`` as a ``harness.kvcache.KVCodec``.

    Borrows the layer's private ``_quantize``/``_dequantize`` (transformers 5.x): the integer
    back-ends group along ``axis_key``/``axis_value``, fp8 scales per tensor. The byte and
    identity tests of tests/test_kv_evict.py catch a change of those methods.
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.residual_length = int(getattr(layer, "residual_length", 0))

    def encode(self, tensor: Any, kind: KVKind) -> Any:
        from transformers.cache_utils import QuantizedLayer

        layer = self.layer
        layer.keys = tensor.new_empty(0)  # hqq and fp8 take the dtype and device from it
        if isinstance(layer, QuantizedLayer):
            axis = layer.axis_key if kind == "key" else layer.axis_value
            return layer._quantize(tensor.contiguous(), axis=axis)
        return layer._quantize(tensor)  # fp8: one scale per tensor

    def decode(self, codes: Any) -> Any:
        return self.layer._dequantize(codes)


def _counting(quantize: Any, counts: list[int], i: int) -> Any:
    """``quantize`` that counts its calls in ``counts[i]`` (an instance attribute shadows
    the layer's method, so the cache and the codecs' calls both go through it)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        counts[i] += 1
        return quantize(*args, **kwargs)

    return run


def make_cache(c: KVQuantConfig, model_config: Any) -> Any:
    """A fresh ``QuantizedCache`` for one generation."""
    from transformers import QuantizedCache

    if c.backend == "fp8":
        return QuantizedCache("fp8", model_config)
    return QuantizedCache(
        c.backend,
        model_config,
        nbits=c.bits,
        axis_key=c.axis_key,
        axis_value=c.axis_value,
        q_group_size=c.group_size,
        residual_length=c.residual_length,
    )


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [KVQuant]


METRICS = [
    MetricDef(
        "kv_quant.quantized_layers",
        "layers",
        True,
        "cache layers that stored quantized codes in the cell's last generation (verify)",
    ),
]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS


@hookimpl
def environment_info() -> dict[str, str]:
    """Versions of the KV-cache quantization back-ends, stored with every run."""
    return package_versions("optimum-quanto", "hqq")
