"""Bytes held: weights, KV cache, activations, optimizer state, and the predicted peak.

Resident bytes follow the survey "Optimizing Memory Usage for LLM Training and
Inference" §1.1 (REFERENCE.md): parameters n_params × bits / 8 (eq. 1); KV cache
b × n × l × 2 × h × c × bytes (eq. 2, n = prompt + new − 1 tokens after generation);
training adds gradients and AdamW's two moments (eq. 4). They are exact for a plain model
and a plain dynamic cache: the same elements ``harness.footprint`` counts from the tensors
(parameters with a tied head once, the rotary buffers, every cached key and value).

Activations are the transient working set above the resident bytes, modelled on what
PyTorch keeps alive at the largest moment of a forward pass (one layer at a time):

    prefill     b·p·(4H + 3I + 2d)·a   at the last layer's MLP: the embeddings, the layer's
                                       input, residual and normed input, SiLU(gate), up and
                                       their product, RoPE's cos and sin (measured exactly
                                       on SmolLM2 with the torch profiler)
                + 3·b·h·r·p·4          eviction scoring of r query rows at a time (fp32)
                on top of the prompt's KV cache;
    decode      b·q·V·(2a + 4)         the previous and the current step's logits and
                                       generate's fp32 copy (q = 1 + drafted tokens)
                + b·n·k·d·a            one layer's keys (or values) being concatenated
                                       (×4 for a quantized cache: dequantized copies)
                on top of the final KV cache; the window's peak is the larger of the two
    training    L·b·s·(6H + 4I + 2k·d + h·d)·a + 3·b·s·V·4   kept for backward, logits
                and the loss's log-softmax (fp32); with activation checkpointing only
                each layer's input L·b·s·H·a plus one layer's intermediates

Peak = weights + other resident models + KV cache + activations (+ gradients and optimizer
state in training). Framework overhead (CUDA context, kernels: 0.3-2 GB, eq. 3) is not in
the allocator's peak that bench measures; ``overhead_bytes`` reports a CUDA context's
typical 512 MiB separately and pre-flight adds it to what must fit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from harness.estimate.arch import DTYPE_BYTES, Architecture
from harness.estimate.roofline import linear_bytes

if TYPE_CHECKING:
    from harness.estimate.effect import Effect, Shape

MiB = 2**20
CUDA_OVERHEAD_BYTES = 512 * MiB  # a CUDA context and kernels, outside the allocator's peak
#: Bytes of AdamW's state per trainable tensor besides its moments: the fp32 ``step``.
ADAMW_STEP_BYTES = 4


@dataclass(frozen=True)
class Memory:
    """The memory breakdown of a cell, bytes.

    Attributes:
        weights_bytes: parameters and buffers on the device (offloaded part excluded).
        quant_meta_bytes: of which quantization metadata (scales, zero points, tables).
        offloaded_bytes: weight bytes held in host memory instead (offload).
        extra_weights_bytes: other resident models (a draft model).
        kv_cache_bytes: the KV cache after generation (host-resident when offloaded).
        activations_bytes: the transient working set above the resident bytes.
        gradient_bytes: gradients of the trainable parameters (training).
        optimizer_state_bytes: optimizer state (training).
        overhead_bytes: framework overhead outside the allocator (CUDA context).
        peak_bytes: predicted allocator peak: everything above but the overhead.
        floor_bytes: what must be resident whatever the activations: weights, other
            models, KV cache, gradients and optimizer state, plus the overhead.
    """

    weights_bytes: float
    quant_meta_bytes: float
    offloaded_bytes: float
    extra_weights_bytes: float
    kv_cache_bytes: float
    activations_bytes: float
    gradient_bytes: float
    optimizer_state_bytes: float
    overhead_bytes: float
    peak_bytes: float
    floor_bytes: float


def weights(arch: Architecture, effect: Effect) -> tuple[float, float]:
    """(bytes of every parameter and buffer, of which quantization metadata).

    A tied output head shares the embedding's storage and counts once, unless it is
    quantized: then the embedding keeps its matrix and the head holds its own codes.
    """
    a = DTYPE_BYTES[effect.dtype]
    linear = 0.0
    meta = 0.0
    w = effect.weights
    for lin in arch.linears():
        quantized = w is not None and w.quantizes(lin)
        if lin.kind == "lm_head" and arch.tie_word_embeddings and not quantized:
            continue
        linear += linear_bytes(lin, effect)
        if quantized and w is not None:
            meta += w.meta_bytes(lin)
    plain = (arch.embedding_params + arch.norm_params + arch.buffer_elements) * a
    return linear + plain, meta


def kv_tokens_kept(shape: Shape, effect: Effect) -> int:
    """Tokens per head and layer the cache holds after generation (eviction applied)."""
    n = shape.kv_tokens
    budget = effect.kv_budget_tokens
    if budget is None:
        return n
    if effect.kv_budget_prompt_only:
        return min(shape.prompt_tokens, budget) + shape.appended_tokens
    return min(n, budget)


def kv_cache(arch: Architecture, shape: Shape, effect: Effect) -> float:
    """Bytes of the KV cache after generation.

    Plain: L × 2 × b × n × k × d × a (REFERENCE eq. 2). Quantized: ``QuantizedKV.layer_bytes``
    per layer. Eviction bounds n; a policy's score state adds L × b × k × n × 4 (H2O).
    """
    if shape.kind != "generate":
        return 0.0
    a = DTYPE_BYTES[effect.dtype]
    kept = kv_tokens_kept(shape, effect)
    b, width = shape.batch_size, arch.kv_dim
    if effect.kv is not None:
        appended = min(shape.appended_tokens, kept)
        layer = effect.kv.layer_bytes(
            batch=b, prompt=kept - appended, appended=appended, width=width, dtype_bytes=a
        )
    else:
        layer = 2.0 * b * kept * width * a
    state = b * arch.num_kv_heads * kept * effect.kv_state_bytes_per_token
    return arch.num_layers * (layer + state)


def inference_activations(arch: Architecture, shape: Shape, effect: Effect) -> float:
    """Transient bytes of a generation above weights and the final KV cache (see module).

    The window's peak is the larger of the prefill's (the prompt's KV cache plus the last
    layer's MLP working set) and the last decode step's (the full KV cache plus logits and
    one layer's keys or values being concatenated); this returns that peak minus the
    final KV cache.
    """
    a = DTYPE_BYTES[effect.dtype]
    b, h, d, width = shape.batch_size, arch.num_heads, arch.head_dim, arch.kv_dim
    hidden, inter = arch.hidden_size, arch.intermediate_size
    final = kv_cache(arch, shape, effect)
    prompt_kv = kv_cache(arch, replace(shape, new_tokens=1), effect)
    per_token = (4 * hidden + 3 * inter + 2 * d) * a
    prefill = float(b * shape.prompt_tokens * per_token)
    rows = min(effect.score_rows, effect.score_chunk)
    prefill += 3.0 * b * h * rows * shape.prompt_tokens * 4  # eviction scoring, fp32
    n = kv_tokens_kept(shape, effect)
    one_layer = float(b * n * width * a)
    if effect.kv is not None and effect.kv.dequantizes:
        one_layer *= 4  # dequantized keys and values, and their concatenation
    q = 1 + effect.draft_tokens  # a speculative step verifies its drafts in one pass
    decode = b * q * (arch.vocab_size * (2 * a + 4) + per_token) + one_layer
    return max(prompt_kv + prefill, final + decode) - final


def training_activations(arch: Architecture, shape: Shape, effect: Effect) -> float:
    """Bytes kept for backward in one training step (see module), in the autocast dtype."""
    a = DTYPE_BYTES[effect.autocast_dtype or effect.dtype]
    b, s = shape.batch_size, shape.prompt_tokens
    hidden, inter = arch.hidden_size, arch.intermediate_size
    per_layer = b * s * (6 * hidden + 4 * inter + 2 * arch.kv_dim + arch.q_dim) * a
    logits = 3.0 * b * s * arch.vocab_size * 4
    if effect.activation_checkpointing:
        return arch.num_layers * b * s * hidden * a + per_layer + logits
    return arch.num_layers * per_layer + logits


def training_state(arch: Architecture, effect: Effect) -> tuple[float, float]:
    """(gradient bytes, optimizer state bytes) of a training step.

    Trainable parameters: ``effect.trainable_params`` (default: all) plus the adapters
    (fp32). Gradients: their bytes. Optimizer: ``effect.optimizer_state_bytes``, else
    AdamW's two moments (2 × the trainable bytes) and a 4-byte ``step`` per tensor.
    """
    a = DTYPE_BYTES[effect.dtype]
    base = arch.n_params if effect.trainable_params is None else effect.trainable_params
    grads = base * a + effect.adapter_params * 4
    if effect.optimizer_state_bytes is not None:
        return grads, effect.optimizer_state_bytes
    tensors = arch.num_layers * 9 + 2  # 7 linears and 2 norms per layer, embedding, final norm
    return grads, 2 * grads + ADAMW_STEP_BYTES * tensors


def memory(arch: Architecture, shape: Shape, effect: Effect) -> Memory:
    """The memory breakdown and predicted peak of ``shape`` on ``arch`` with ``effect``."""
    total, meta = weights(arch, effect)
    total += effect.adapter_params * 4
    offloaded = effect.offload_weights * total
    on_device = total - offloaded
    kv = kv_cache(arch, shape, effect)
    resident_kv = 0.0 if effect.offload_kv else kv
    if shape.kind == "train":
        grads, state = training_state(arch, effect)
        activations = training_activations(arch, shape, effect)
    else:
        grads = state = 0.0
        activations = inference_activations(arch, shape, effect)
    overhead = CUDA_OVERHEAD_BYTES if effect.device_kind == "cuda" else 0.0
    resident = on_device + effect.extra_weights_bytes + resident_kv + grads + state
    return Memory(
        weights_bytes=on_device,
        quant_meta_bytes=meta,
        offloaded_bytes=offloaded,
        extra_weights_bytes=effect.extra_weights_bytes,
        kv_cache_bytes=kv,
        activations_bytes=activations,
        gradient_bytes=grads,
        optimizer_state_bytes=state,
        overhead_bytes=overhead,
        peak_bytes=resident + activations,
        floor_bytes=resident + overhead,
    )
