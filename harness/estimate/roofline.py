"""Per-layer operations, bytes moved and roofline time, for prefill and one decode step.

The method of seed 003 (Yuan et al. 2024, "LLM Inference Unveiled: Survey and Roofline
Model Insights", §2.3 and Table 1; its tool LLM-Viewer): every operator of a decoder
layer is a row with its operations (one multiply-accumulate = 2 operations) and the bytes
it moves (weights loaded, activations loaded and stored, KV cache loaded and stored).

    arithmetic intensity  I = ops / bytes                                   (ops/byte)
    turning point         T = peak / bandwidth                              (ops/byte)
    bound                 memory if I < T, else compute
    attainable            P = min(peak, I × bandwidth)                      (ops/s)
    time                  t = ops / P = max(ops / peak, bytes / bandwidth)  (s)

For b sequences of q query tokens over a KV length n, model width H, heads h (head dim
d), KV heads k, MLP width I, activation bytes a, KV bytes per value c:

    linear in×out    ops 2·b·q·in·out; weights in·out·w (quantized: codes + scales);
                     loads b·q·in·a; stores b·q·out·a (k_proj, v_proj: into the KV cache, c)
    qk_matmul        ops 2·b·q·n·d·h; loads b·q·h·d·a (Q) and b·n·k·d·c (K); stores b·h·q·n·a
    softmax          ops 5·b·h·q·n (max, sub, exp, sum, div); loads and stores b·h·q·n·a
    sv_matmul        ops 2·b·q·n·d·h; loads b·h·q·n·a and b·n·k·d·c (V); stores b·q·h·d·a
    norm (RMS)       ops 7·b·q·H; loads and stores b·q·H·a
    add (residual)   ops b·q·H; loads and stores b·q·H·a
    mlp_act          ops 2·b·q·I (SiLU, product); loads 2·b·q·I·a; stores b·q·I·a

These are LLM-Viewer's conventions (prefill attention over the full q×n product, no
causal halving; norm weights not counted), except ``mlp_act``, which LLM-Viewer sizes
with H where the tensors are I wide. The three attention rows are the unfused kernels
(``Effect.attention = "unfused"``, seed 003's Table 1); by default attention is one fused
kernel, as PyTorch's SDPA and FlashAttention run it (:func:`fused_attention`):

    attention        ops 4·b·q·n·d·h + 5·b·h·q·n; loads b·q·h·d·a (Q) and
                     ⌈q / 128⌉ · 2·b·n·k·d·c (K, V once per block of 128 queries);
                     stores b·q·h·d·a Beyond a decoder layer: the embedding lookup, the
final norm and the output head over the positions whose logits are computed (the last
one at prefill in ``generate``, every one in training), which LLM-Viewer leaves out.
Offloaded weights and KV cache add rows over the host link (PCIe), timed at its
bandwidth; a drafter adds its own rows to the decode step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from harness.estimate.arch import DTYPE_BYTES, Architecture, Linear

if TYPE_CHECKING:
    from harness.estimate.devices import Device
    from harness.estimate.effect import Effect, Shape

Stage = Literal["prefill", "decode", "train"]
#: Queries per block of a fused attention kernel (FlashAttention-2's B_r on current GPUs).
QUERY_BLOCK = 128
Link = Literal["memory", "host"]


@dataclass(frozen=True)
class Row:
    """One operator: operations and bytes of one occurrence, and how often it occurs.

    Attributes:
        stage: ``prefill``, ``decode`` or ``train`` (a training forward pass).
        name: operator (``q_proj``, ``qk_matmul``, ..., ``lm_head``, ``offload_weights``).
        count: occurrences per forward (the layer count for decoder-layer rows).
        ops: operations of one occurrence.
        load_weight: weight bytes loaded.
        load_act: activation bytes loaded.
        store_act: activation bytes stored.
        load_kv: KV-cache bytes loaded.
        store_kv: KV-cache bytes stored.
        link: ``memory`` (device memory) or ``host`` (streamed over the host link).
    """

    stage: Stage
    name: str
    count: int
    ops: float
    load_weight: float = 0.0
    load_act: float = 0.0
    store_act: float = 0.0
    load_kv: float = 0.0
    store_kv: float = 0.0
    link: Link = "memory"

    @property
    def memory_access(self) -> float:
        """Bytes moved by one occurrence: every load and store."""
        return self.load_weight + self.load_act + self.store_act + self.load_kv + self.store_kv


@dataclass(frozen=True)
class Analysed:
    """A row on a device's roofline.

    Attributes:
        row: the operator.
        intensity: ops / bytes (ops/byte); 0 when it moves no bytes.
        performance: attainable ops/s, min(peak, intensity × bandwidth).
        bound: ``compute`` or ``memory`` (``host`` for rows over the host link).
        time_s: time of one occurrence, max(ops / peak, bytes / bandwidth), s.
    """

    row: Row
    intensity: float
    performance: float
    bound: str
    time_s: float

    @property
    def total_time_s(self) -> float:
        """Time of every occurrence: count × time_s, s."""
        return self.row.count * self.time_s


def analyse(row: Row, peak: float, bandwidth: float) -> Analysed:
    """Place ``row`` on the roofline of ``peak`` ops/s and ``bandwidth`` bytes/s."""
    moved = row.memory_access
    intensity = row.ops / moved if moved else 0.0
    if row.link == "host":
        return Analysed(row, intensity, intensity * bandwidth, "host", moved / bandwidth)
    turning = peak / bandwidth
    if moved and intensity < turning:
        return Analysed(row, intensity, intensity * bandwidth, "memory", moved / bandwidth)
    time = row.ops / peak if row.ops else moved / bandwidth
    return Analysed(row, intensity, peak, "compute", time)


def linear_bytes(linear: Linear, effect: Effect) -> float:
    """Bytes a linear layer's parameters hold: codes and metadata if quantized, else the
    weights in ``effect.dtype``; a bias in ``effect.dtype``."""
    a = DTYPE_BYTES[effect.dtype]
    bias = linear.out_features * a if linear.bias else 0.0
    w = effect.weights
    if w is not None and w.quantizes(linear):
        return w.code_bytes(linear) + w.meta_bytes(linear) + bias
    return linear.numel * a + bias


def kv_value_bytes(effect: Effect) -> float:
    """Bytes per cached value as written: the compute dtype, or the codes and their share
    of the group metadata of a quantized cache (the ideal of a fused kernel)."""
    kv = effect.kv
    if kv is None:
        return float(DTYPE_BYTES[effect.dtype])
    meta = kv.group_bytes / kv.group_size if kv.group_size else 0.0
    return kv.code_bits / 8 + meta


def attended(shape: Shape, effect: Effect, kv_tokens: int) -> int:
    """KV entries a decode step attends over: all, or the eviction budget's share."""
    budget = effect.kv_budget_tokens
    if budget is None:
        return kv_tokens
    if effect.kv_budget_prompt_only:
        return min(shape.prompt_tokens, budget) + (kv_tokens - shape.prompt_tokens)
    return min(kv_tokens, budget + 1)  # the new token is attended to, then evicted


def layer_rows(
    stage: Stage,
    arch: Architecture,
    effect: Effect,
    *,
    batch: int,
    q: int,
    n: int,
    count: int | None = None,
) -> list[Row]:
    """The rows of one decoder layer for ``batch`` sequences of ``q`` new tokens attending
    over ``n`` KV entries; ``count`` occurrences (default: every layer)."""
    a = DTYPE_BYTES[effect.dtype]
    c = kv_value_bytes(effect)
    h, d, k = arch.num_heads, arch.head_dim, arch.num_kv_heads
    hidden, inter = arch.hidden_size, arch.intermediate_size
    layers = count if count is not None else arch.num_layers
    per_kind: dict[str, float] = {}
    for layer in range(arch.num_layers):
        for lin in arch.layer_linears(layer):
            per_kind[lin.kind] = per_kind.get(lin.kind, 0.0) + linear_bytes(lin, effect)
    x = float(batch * q * hidden * a)
    rows = [Row(stage, "attn_norm", layers, 7 * batch * q * hidden, 0, x, x)]
    for lin in arch.layer_linears():
        weight = per_kind[lin.kind] / arch.num_layers
        ops = 2.0 * batch * q * lin.numel
        load = batch * q * lin.in_features * a
        out = batch * q * lin.out_features
        if lin.kind in ("k_proj", "v_proj"):
            rows.append(Row(stage, lin.kind, layers, ops, weight, load, store_kv=out * c))
        else:
            rows.append(Row(stage, lin.kind, layers, ops, weight, load, out * a))
        if lin.kind == "v_proj" and effect.attention == "fused":
            rows.append(fused_attention(stage, arch, effect, batch=batch, q=q, n=n, count=layers))
        elif lin.kind == "v_proj":  # attention follows the q/k/v projections
            scores = batch * h * q * n * a
            rows += [
                Row(
                    stage,
                    "qk_matmul",
                    layers,
                    2.0 * batch * q * n * d * h,
                    0,
                    batch * q * h * d * a,
                    scores,
                    load_kv=batch * n * k * d * c,
                ),
                Row(stage, "softmax", layers, 5.0 * batch * h * q * n, 0, scores, scores),
                Row(
                    stage,
                    "sv_matmul",
                    layers,
                    2.0 * batch * q * n * d * h,
                    0,
                    scores,
                    batch * q * h * d * a,
                    load_kv=batch * n * k * d * c,
                ),
            ]
        elif lin.kind == "o_proj":
            residual = batch * q * hidden * a
            rows += [
                Row(stage, "attn_add", layers, batch * q * hidden, 0, residual, residual),
                Row(stage, "mlp_norm", layers, 7 * batch * q * hidden, 0, residual, residual),
            ]
        elif lin.kind == "up_proj":
            act = batch * q * inter * a
            rows.append(Row(stage, "mlp_act", layers, 2.0 * batch * q * inter, 0, 2 * act, act))
    residual = batch * q * hidden * a
    rows.append(Row(stage, "mlp_add", layers, batch * q * hidden, 0, residual, residual))
    return rows


def fused_attention(
    stage: Stage, arch: Architecture, effect: Effect, *, batch: int, q: int, n: int, count: int
) -> Row:
    """Attention as one fused kernel (FlashAttention-2, PyTorch's SDPA): the scores never
    leave the chip. The operations of qk_matmul, softmax and sv_matmul; loads Q once and K
    and V once per block of ``QUERY_BLOCK`` queries; stores the output."""
    a = DTYPE_BYTES[effect.dtype]
    c = kv_value_bytes(effect)
    h, d, k = arch.num_heads, arch.head_dim, arch.num_kv_heads
    ops = 4.0 * batch * q * n * d * h + 5.0 * batch * h * q * n
    blocks = -(-q // QUERY_BLOCK)
    qo = batch * q * h * d * a
    return Row(
        stage, "attention", count, ops, 0, qo, qo, load_kv=blocks * 2.0 * batch * n * k * d * c
    )


def model_rows(
    stage: Stage, arch: Architecture, effect: Effect, *, batch: int, q: int, logits: int
) -> list[Row]:
    """Embedding lookup, final norm and output head (over ``logits`` positions each)."""
    a = DTYPE_BYTES[effect.dtype]
    x = batch * q * arch.hidden_size * a
    head = arch.lm_head
    rows = [
        Row(stage, "embedding", 1, 0, x, 0, x),
        Row(stage, "final_norm", 1, 7 * batch * q * arch.hidden_size, 0, x, x),
    ]
    positions = batch * logits
    return [
        *rows,
        Row(
            stage,
            "lm_head",
            1,
            2.0 * positions * head.numel,
            linear_bytes(head, effect),
            positions * head.in_features * a,
            positions * head.out_features * a,
        ),
    ]


def scoring_rows(
    stage: Stage, arch: Architecture, effect: Effect, *, batch: int, q: int, n: int
) -> list[Row]:
    """Eviction scoring: fp32 softmax(q·kᵀ) of ``q`` query rows over ``n`` keys per layer."""
    if q <= 0:
        return []
    h, d = arch.num_heads, arch.head_dim
    probs = batch * h * q * n * 4
    ops = 2.0 * batch * q * n * d * h + 5.0 * batch * h * q * n
    return [Row(stage, "kv_scores", arch.num_layers, ops, 0, 2 * probs, probs)]


def offload_rows(stage: Stage, effect: Effect, weights_bytes: float, kv_bytes: float) -> list[Row]:
    """Bytes streamed over the host link in one forward pass: offloaded weights, and the
    KV cache when it lives in host memory (read for attention, the new tokens written)."""
    rows = []
    if effect.offload_weights > 0:
        rows.append(
            Row(stage, "offload_weights", 1, 0, effect.offload_weights * weights_bytes, link="host")
        )
    if effect.offload_kv and kv_bytes:
        rows.append(Row(stage, "offload_kv", 1, 0, load_kv=kv_bytes, link="host"))
    return rows


def stage_time(rows: Sequence[Analysed]) -> float:
    """Time of a stage: the sum of its rows' total times (no overlap between operators), s."""
    return sum(r.total_time_s for r in rows)


def peak_for(device: Device, effect: Effect, training: bool = False) -> tuple[float | None, str]:
    """The compute peak the stack runs at (its compute dtype; autocast in training)."""
    dtype = (effect.autocast_dtype if training else None) or effect.dtype
    peak = device.peak(dtype)
    if peak is None:
        return None, f"device {device.name} has no {dtype} peak in the table"
    return peak, dtype
