"""What a technique stack does to the analytic model: ``Shape``, ``Effect`` and storage formats.

``Shape`` is the workload an estimate is for. ``Effect`` is the stack's analytic state:
it starts as the plain model in the cell's dtype, and each technique's
``Technique.estimate(effect, arch, shape)`` returns it updated (``dataclasses.replace``),
or None for "no estimate". The formulas that read it are in ``harness.estimate.roofline``
(operations and bytes moved) and ``harness.estimate.memory`` (bytes held).

Storage formats are plain data, so a third-party technique describes its weights or KV
cache with the same fields as the built-ins: ``QuantizedWeights`` (codes of ``code_bits``
plus metadata per group, per row and per layer) and ``QuantizedKV`` (codes plus metadata
per group, a full-precision residual of recent tokens).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from harness.estimate.arch import Architecture, Linear

Quantity = Literal["memory", "prefill", "decode", "train"]
QUANTITIES: tuple[Quantity, ...] = ("memory", "prefill", "decode", "train")


@dataclass(frozen=True)
class Shape:
    """The workload: prompt (or training sequence) length, new tokens, batch.

    Attributes:
        kind: ``generate`` (prefill, then decode) or ``train`` (forward, backward, step).
        prompt_tokens: prompt tokens per sequence (``train``: the sequence length).
        new_tokens: tokens generated per sequence (the first comes from the prefill).
        batch_size: sequences processed together.
        acceptance_rate: speculative decoding only: the assumed share of drafted tokens
            the target accepts (unknown before a run; None leaves decode time unknown).
    """

    kind: Literal["generate", "train"] = "generate"
    prompt_tokens: int = 128
    new_tokens: int = 1
    batch_size: int = 1
    acceptance_rate: float | None = None

    @property
    def appended_tokens(self) -> int:
        """Tokens fed one at a time after the prompt: new_tokens − 1 (the last is never fed)."""
        return max(self.new_tokens - 1, 0) if self.kind == "generate" else 0

    @property
    def kv_tokens(self) -> int:
        """KV length of the last decode step: prompt_tokens + new_tokens − 1, at least
        prompt_tokens (the cache holds exactly this many after generation)."""
        return self.prompt_tokens + self.appended_tokens

    @classmethod
    def from_workload(cls, workload: Mapping[str, Any]) -> Shape | None:
        """The shape of a cell's workload (``{"name", "params"}``); None for a workload the
        estimate does not model (an accuracy-only or third-party measure workload)."""
        name = workload.get("name")
        params = workload.get("params", {})
        if name == "generate":
            return cls(
                "generate",
                int(params.get("prompt_tokens", 128)),
                int(params.get("new_tokens", 32)),
                int(params.get("batch_size", 1)),
            )
        if name == "train":
            return cls(
                "train", int(params.get("seq_len", 128)), 1, int(params.get("batch_size", 2))
            )
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "batch_size": self.batch_size,
            "acceptance_rate": self.acceptance_rate,
        }


@dataclass(frozen=True)
class QuantizedWeights:
    """Weights of the linear layers stored as integer (or NF4/FP4) codes with metadata.

    Bytes of one quantized layer with N = in × out weights and ``out`` rows:
    codes N × code_bits / 8 (packed ``pack`` codes per 32-bit word along the groups,
    when set: 4 × g × ⌈N / (pack × g)⌉) + group_bytes × ⌈N / group_size⌉ (per output row
    when ``group_size`` is None) + layer_bytes; a bias stays in the compute dtype.

    Attributes:
        label: readable description (``hqq int4, groups of 64, fp32 scale and zero``).
        code_bits: bits per weight of the codes.
        group_size: weights per scale group; None: one group per output row.
        group_bytes: metadata bytes per group (scales, zero points, absmax).
        layer_bytes: metadata bytes per layer (code tables, scalars).
        pack: codes per 32-bit word, when codes are packed in words along the groups.
        skip: fnmatch patterns (on qualified names, ``p`` also matching ``*.p``) of linear
            layers left unquantized.
    """

    label: str
    code_bits: float
    group_size: int | None
    group_bytes: float
    layer_bytes: float = 0.0
    pack: int | None = None
    skip: tuple[str, ...] = ()

    def quantizes(self, linear: Linear) -> bool:
        """Whether ``linear`` is quantized (not matched by ``skip``)."""
        return not any(
            fnmatch.fnmatchcase(linear.name, p) or fnmatch.fnmatchcase(linear.name, f"*.{p}")
            for p in self.skip
        )

    def code_bytes(self, linear: Linear) -> float:
        """Bytes of the packed codes of ``linear``."""
        n = linear.numel
        if self.pack:
            group = self.group_size or linear.in_features
            return 4.0 * group * math.ceil(n / (self.pack * group))
        return n * self.code_bits / 8

    def meta_bytes(self, linear: Linear) -> float:
        """Bytes of the quantization metadata of ``linear`` (scales, zero points, tables)."""
        groups = (
            math.ceil(linear.numel / self.group_size) if self.group_size else linear.out_features
        )
        return groups * self.group_bytes + self.layer_bytes


@dataclass(frozen=True)
class QuantizedKV:
    """A KV cache stored as codes with metadata and a full-precision residual (KIVI-style).

    Per layer, keys and values each: the quantized tokens' values V = b × t × kv_heads ×
    head_dim take V × code_bits / 8 + group_bytes × ⌈V / group_size⌉ (+ tensor_bytes);
    the residual of r recent tokens takes b × r × kv_heads × head_dim × dtype bytes.
    With ``requantize`` (transformers' ``QuantizedLayer``) the prompt is quantized at
    prefill and the residual is flushed into the codes each time it fills up, so after a
    tokens were appended r = a mod residual_tokens and t = prompt + a − r.

    Attributes:
        label: readable description.
        code_bits: bits per cached value.
        group_size: values per group (None: ``tensor_bytes`` only, one scale per tensor).
        group_bytes: metadata bytes per group.
        tensor_bytes: metadata bytes per layer tensor (K or V), e.g. an fp8 scale.
        residual_tokens: recent tokens kept in the compute dtype (0: none).
        dequantizes: attention runs on a dequantized full-precision copy of each layer
            (a transient of one layer's keys and values).
    """

    label: str
    code_bits: float
    group_size: int | None
    group_bytes: float
    tensor_bytes: float = 0.0
    residual_tokens: int = 0
    dequantizes: bool = True

    def split(self, prompt: int, appended: int) -> tuple[int, int]:
        """(quantized tokens, residual tokens) after ``appended`` tokens followed the prompt."""
        if self.residual_tokens <= 0:
            return prompt + appended, 0
        residual = appended % self.residual_tokens
        return prompt + appended - residual, residual

    def layer_bytes(
        self, *, batch: int, prompt: int, appended: int, width: int, dtype_bytes: float
    ) -> float:
        """Bytes of one layer's keys and values (``width`` = kv_heads × head_dim)."""
        quantized, residual = self.split(prompt, appended)
        values = batch * quantized * width
        groups = math.ceil(values / self.group_size) if self.group_size else 0
        codes = values * self.code_bits / 8 + groups * self.group_bytes + self.tensor_bytes
        return 2 * (codes + batch * residual * width * dtype_bytes)


@dataclass(frozen=True)
class Effect:
    """The analytic state of a technique stack: what each technique changed.

    Start from :func:`base_effect`; a technique's ``estimate`` returns
    ``dataclasses.replace(effect, ...)`` with its fields set (and a ``note``).

    Attributes:
        device_kind: ``cpu`` or ``cuda``: the device the estimate is for (a technique's
            choice may depend on it, e.g. ``weight-quant``'s ``auto`` back-end).
        dtype: compute and activation dtype; unquantized weights are stored in it.
        kv_heads: key/value heads after conversion (``gqa``); None: the architecture's.
        weights: the linear layers' quantized storage; None: plain ``dtype`` weights.
        kv: the KV cache's quantized storage; None: a plain cache in ``dtype``.
        kv_budget_tokens: tokens kept per head and layer (eviction); None: all.
        kv_budget_prompt_only: the budget bounds the prompt part only (SnapKV): generated
            tokens are appended beyond it.
        score_rows: prompt query rows whose attention probabilities a technique computes
            in fp32 at prefill (eviction scoring); 0: none.
        score_chunk: of which at most this many at once (the transient's size).
        score_decode: every decode step also scores its queries.
        kv_state_bytes_per_token: bytes a policy keeps per layer, KV head and kept token
            beside the keys and values (H2O's accumulated scores: 4).
        offload_weights: fraction of the weight bytes held in host memory and streamed
            over the host link in every forward pass.
        offload_kv: the KV cache lives in host memory, streamed layer by layer.
        draft_tokens: tokens drafted per target pass (speculative decoding).
        tokens_per_step: tokens emitted per target pass; None: unknown (decode time too).
        draft: architecture of a separate draft model, run once per drafted token.
        draft_layers: a self-speculative drafter runs the target's first N layers.
        extra_weights_bytes: bytes of other resident models (a draft model's weights).
        trainable_params: parameters that receive gradients; None: all (full fine-tuning).
        adapter_params: parameters added by adapters (LoRA), trainable, in float32.
        optimizer_state_bytes: optimizer state; None: AdamW's two moments and step
            (2 × trainable bytes + 4 bytes per trainable tensor).
        activation_checkpointing: only each decoder layer's input is kept for backward.
        autocast_dtype: forward under ``torch.autocast`` of this dtype.
        attention: ``fused`` (one kernel: SDPA, FlashAttention; the default) or
            ``unfused`` (Q·Kᵀ, softmax and S·V as separate kernels, scores stored: seed
            003's Table 1).
        unknown: (quantity, reason) pairs the stack cannot predict (``memory``,
            ``prefill``, ``decode``, ``train``).
        notes: what each technique contributed, in stack order.
    """

    device_kind: str = "cpu"
    dtype: str = "float32"
    kv_heads: int | None = None
    weights: QuantizedWeights | None = None
    kv: QuantizedKV | None = None
    kv_budget_tokens: int | None = None
    kv_budget_prompt_only: bool = False
    score_rows: int = 0
    score_chunk: int = 512
    score_decode: bool = False
    kv_state_bytes_per_token: float = 0.0
    offload_weights: float = 0.0
    offload_kv: bool = False
    draft_tokens: int = 0
    tokens_per_step: float | None = 1.0
    draft: Architecture | None = None
    draft_layers: int | None = None
    extra_weights_bytes: float = 0.0
    trainable_params: float | None = None
    adapter_params: float = 0.0
    optimizer_state_bytes: float | None = None
    activation_checkpointing: bool = False
    autocast_dtype: str | None = None
    attention: Literal["fused", "unfused"] = "fused"
    unknown: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()

    def note(self, text: str, **changes: Any) -> Effect:
        """This effect with ``changes`` applied and ``text`` added to the notes."""
        return replace(self, notes=(*self.notes, text), **changes)

    def cannot(self, quantity: Quantity, reason: str) -> Effect:
        """This effect with ``quantity`` marked unknown, for ``reason``."""
        return replace(self, unknown=(*self.unknown, (quantity, reason)))

    def unknown_reason(self, quantity: Quantity) -> str | None:
        """Why ``quantity`` cannot be predicted, or None when it can."""
        reasons = [why for what, why in self.unknown if what == quantity]
        return "; ".join(reasons) if reasons else None


def base_effect(
    dtype: str, device_kind: str, attention: Literal["fused", "unfused"] = "fused"
) -> Effect:
    """The plain model: weights, activations and KV cache in ``dtype`` on ``device_kind``."""
    return Effect(device_kind=device_kind, dtype=dtype, attention=attention)


def effective(arch: Architecture, effect: Effect) -> Architecture:
    """``arch`` as the stack runs it (``kv_heads`` converted)."""
    if effect.kv_heads is None or effect.kv_heads == arch.num_kv_heads:
        return arch
    return arch.with_kv_heads(effect.kv_heads)
