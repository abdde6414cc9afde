"""A decoder-only transformer's shape, read offline from its ``config.json``.

The estimate needs only what the config says: hidden size, layers, heads and key/value
heads, head dimension, MLP width, vocabulary, tied head and dtype. ``Architecture`` holds
them; ``load_architecture`` finds the config of a registered built-in model, a local model
folder, a bare ``config.json`` or a hub id already in the local hub cache, without network
and without loading weights. Llama-style models (Llama, Mistral, Qwen2/3, SmolLM, Gemma's
layout without its extras) are supported: a gated MLP (gate, up, down) after attention
with separate q/k/v/o projections. Mixture-of-experts configs are refused with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import ModelError

#: Config ``dtype`` / ``torch_dtype`` spellings -> torch dtype names.
DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
#: Bytes per element of each floating dtype.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: Config keys that mark a mixture-of-experts model (not modelled).
_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")
#: Model types whose q/k/v projections carry a bias though their config does not say so.
_QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_vl"})


@dataclass(frozen=True)
class Linear:
    """One linear layer of the architecture: its qualified name and shape.

    Attributes:
        name: qualified module name as transformers names it (``model.layers.0.mlp.up_proj``).
        kind: the row name in the roofline table (``q_proj`` ... ``down_proj``, ``lm_head``).
        in_features: input features.
        out_features: output features.
        bias: whether it has a bias vector.
    """

    name: str
    kind: str
    in_features: int
    out_features: int
    bias: bool = False

    @property
    def numel(self) -> int:
        """Weight elements (bias excluded)."""
        return self.in_features * self.out_features


@dataclass(frozen=True)
class Architecture:
    """The shape of a Llama-style decoder, everything the estimate reads from a config.

    Attributes:
        name: what it was read from (model id or path), for messages.
        hidden_size: model width H.
        num_layers: decoder layers L.
        num_heads: query heads.
        num_kv_heads: key/value heads (GQA: fewer than ``num_heads``).
        head_dim: channels per head.
        intermediate_size: MLP width I (gate and up project H -> I, down I -> H).
        vocab_size: vocabulary V.
        tie_word_embeddings: the output head shares the input embedding's matrix.
        dtype: torch dtype name of the checkpoint (``float32``, ``bfloat16``, ``float16``).
        attention_bias: q/k/v (and o) projections have biases.
        mlp_bias: MLP projections have biases.
        qk_norm: per-head RMS norms on queries and keys (Qwen3).
        model_type: the config's ``model_type``.
    """

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    dtype: str = "float32"
    attention_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    model_type: str = "llama"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str = "config.json") -> Architecture:
        """Read a transformers ``config.json`` dict (a nested ``text_config`` is used).

        Raises:
            ModelError: a required key is missing, or the model is a mixture of experts.
        """
        text = config.get("text_config")
        cfg = text if isinstance(text, Mapping) and "hidden_size" in text else config
        moe = [k for k in _MOE_KEYS if cfg.get(k)]
        if moe:
            raise ModelError(
                f"{name}: a mixture-of-experts model ({moe[0]} = {cfg[moe[0]]}); the estimate "
                "models dense decoders only. Estimate a dense model of the same width instead."
            )
        required = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
        )
        missing = [k for k in required if not isinstance(cfg.get(k), int)]
        if missing:
            raise ModelError(
                f"{name}: the config has no integer {', '.join(missing)}; the estimate reads "
                "Llama-style configs (hidden_size, num_hidden_layers, num_attention_heads, "
                "intermediate_size, vocab_size). Pass the model's own config.json."
            )
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        model_type = str(cfg.get("model_type") or config.get("model_type") or "llama")
        raw_dtype = cfg.get("dtype") or cfg.get("torch_dtype") or config.get("torch_dtype")
        tie = config.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
        return cls(
            name=name,
            hidden_size=hidden,
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            tie_word_embeddings=bool(tie),
            dtype=DTYPE_NAMES.get(str(raw_dtype).removeprefix("torch."), "float32"),
            attention_bias=bool(cfg.get("attention_bias", model_type in _QKV_BIAS_TYPES)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=model_type.startswith("qwen3"),
            model_type=model_type,
        )

    def with_kv_heads(self, kv_heads: int) -> Architecture:
        """The same model with ``kv_heads`` key/value heads (what ``gqa`` converts to)."""
        return replace(self, num_kv_heads=kv_heads)

    @property
    def q_dim(self) -> int:
        """Query projection width: heads × head_dim."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Key (and value) projection width: kv_heads × head_dim."""
        return self.num_kv_heads * self.head_dim

    def layer_linears(self, layer: int = 0) -> list[Linear]:
        """The seven linear layers of decoder layer ``layer``, in execution order."""
        h, i, prefix = self.hidden_size, self.intermediate_size, f"model.layers.{layer}"
        attn, mlp = self.attention_bias, self.mlp_bias
        return [
            Linear(f"{prefix}.self_attn.q_proj", "q_proj", h, self.q_dim, attn),
            Linear(f"{prefix}.self_attn.k_proj", "k_proj", h, self.kv_dim, attn),
            Linear(f"{prefix}.self_attn.v_proj", "v_proj", h, self.kv_dim, attn),
            Linear(f"{prefix}.self_attn.o_proj", "o_proj", self.q_dim, h, False),
            Linear(f"{prefix}.mlp.gate_proj", "gate_proj", h, i, mlp),
            Linear(f"{prefix}.mlp.up_proj", "up_proj", h, i, mlp),
            Linear(f"{prefix}.mlp.down_proj", "down_proj", i, h, mlp),
        ]

    def linears(self) -> Iterator[Linear]:
        """Every linear layer of the model: each decoder layer's, then the output head."""
        for layer in range(self.num_layers):
            yield from self.layer_linears(layer)
        yield self.lm_head

    @property
    def lm_head(self) -> Linear:
        """The output head (tied to the embedding when ``tie_word_embeddings``)."""
        return Linear("lm_head", "lm_head", self.hidden_size, self.vocab_size)

    @property
    def embedding_params(self) -> int:
        """Elements of the input embedding, V × H."""
        return self.vocab_size * self.hidden_size

    @property
    def norm_params(self) -> int:
        """Elements of every RMS norm weight: two per layer (+ q/k norms), plus the final."""
        per_layer = 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)
        return self.num_layers * per_layer + self.hidden_size

    @property
    def buffer_elements(self) -> int:
        """Elements of the model's buffers: the rotary embedding's ``inv_freq`` and
        ``original_inv_freq`` (transformers 5), head_dim / 2 each."""
        return 2 * (self.head_dim // 2)

    @property
    def n_params(self) -> int:
        """Parameters, a tied head counted once (biases included)."""
        linear = sum(
            lin.numel + (lin.out_features if lin.bias else 0) for lin in self.layer_linears()
        )
        head = 0 if self.tie_word_embeddings else self.lm_head.numel
        return self.num_layers * linear + self.embedding_params + head + self.norm_params

    def as_dict(self) -> dict[str, Any]:
        """The fields, for JSON output."""
        return {
            "name": self.name,
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "dtype": self.dtype,
            "params": self.n_params,
        }


def read_config(model: str) -> tuple[dict[str, Any], str]:
    """The ``config.json`` of ``model`` as a dict, read from disk only.

    ``model`` is a path to a ``.json`` file, a folder holding ``config.json``, a built-in
    model name (``tiny-random-llama`` from its fixed config; ``smollm2-135m`` provisioned
    into the cache on first use, offline), or a hub id found in the local hub cache.

    Returns:
        (config, where it was read from).

    Raises:
        ModelError: no config can be found offline; the message names what was tried.
    """
    from harness.assets import BUILTIN_MODELS, TINY_LLAMA_CONFIG, cache_dir

    path = Path(model).expanduser()
    if path.is_file():
        return _read_json(path), str(path)
    if (path / "config.json").is_file():
        return _read_json(path / "config.json"), str(path / "config.json")
    if model == "tiny-random-llama":
        return {**TINY_LLAMA_CONFIG, "dtype": "float32", "model_type": "llama"}, model
    if model in BUILTIN_MODELS:
        cached = cache_dir() / "models" / model / "config.json"
        if not cached.is_file():
            from harness.assets import provision

            provision(model)
        return _read_json(cached), str(cached)
    found = _hub_cache(model)
    if found is not None:
        return _read_json(found), str(found)
    raise ModelError(
        f"cannot read the architecture of {model!r} offline: it is not a config.json file, a "
        "folder with a config.json, a built-in model or a hub id in the local hub cache. "
        "Pass --model path/to/config.json."
    )


def load_architecture(model: str) -> Architecture:
    """The ``Architecture`` of ``model`` (see :func:`read_config` for what it may be)."""
    config, where = read_config(model)
    return Architecture.from_config(config, name=model if model != where else where)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read it as JSON ({exc}). Pass a config.json.") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: a config.json is a JSON object. Pass the model's config.json.")
    return data


def _hub_cache(model: str) -> Path | None:
    """``config.json`` of a hub id in the local hub cache, or None (never the network)."""
    if "/" not in model or model.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None
