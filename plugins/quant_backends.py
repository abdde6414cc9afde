"""Weight-quantization back-ends for ``weight-quant``: which can run where, and how to apply them.

Each back-end replaces (or re-parametrizes) the model's ``torch.nn.Linear`` layers in place:

- ``bitsandbytes``: ``Linear8bitLt`` (LLM.int8(): int8 weights with a per-row absmax scale,
  outlier threshold 6.0 as in transformers; the CPU path dequantizes and has no outlier
  decomposition) and ``Linear4bit`` (NF4 or FP4 codes in blocks of ``group_size`` with one
  fp32 absmax per block, no double quantization).
- ``torchao``: ``Int8WeightOnlyConfig`` (int8, one scale per row or group) and, on CUDA,
  ``Int4WeightOnlyConfig`` in tinygemm's ``tile_packed_to_4d`` layout (bf16 only).
- ``optimum-quanto``: ``qint8`` (per-row scale), ``qint4``/``qint2`` (groups with a scale and
  a shift each).
- ``hqq``: Half-Quadratic Quantization at 8, 4, 3 or 2 bits, groups with a scale and a zero
  point each (kept in the layer's ``meta`` dict).

Facts measured on this project's CPU machine (torch 2.13, bitsandbytes 0.50.2, torchao 0.18,
optimum-quanto 0.2.7, hqq 0.2.8): torchao's int4 layouts need CUDA (``plain`` needs the mslk
package, ``tile_packed_to_4d`` asserts CUDA, ``plain_int32`` refuses the CPU); the other
back-ends run on CPU. optimum-quanto's 4- and 2-bit tensors fail under
``torch.inference_mode()`` (``Cannot set version_counter for inference tensor`` when the
packed weight is transposed), which is how the ``generate`` workload runs; their layers are
therefore run under ``torch.no_grad()`` inside an ``inference_mode(False)`` block, which
gives identical outputs.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from harness.errors import BenchError
from harness.estimate import QuantizedWeights

Backend = Literal["bitsandbytes", "torchao", "optimum-quanto", "hqq"]
Format = Literal["auto", "int", "nf4", "fp4"]
Layers = list[tuple[str, Any]]  # (qualified name, torch.nn.Linear)

BACKENDS: tuple[Backend, ...] = ("bitsandbytes", "torchao", "optimum-quanto", "hqq")
# Bit widths each back-end implements on some device.
BITS: dict[Backend, tuple[int, ...]] = {
    "bitsandbytes": (8, 4),
    "torchao": (8, 4),
    "optimum-quanto": (8, 4, 2),
    "hqq": (8, 4, 3, 2),
}
# The module each back-end is imported as (``Environment.has`` checks it).
MODULES: dict[Backend, str] = {
    "bitsandbytes": "bitsandbytes",
    "torchao": "torchao",
    "optimum-quanto": "optimum.quanto",
    "hqq": "hqq",
}
# Group sizes a back-end accepts for sub-8-bit weights (None: any that divides the rows).
GROUP_SIZES: dict[Backend, tuple[int, ...] | None] = {
    "bitsandbytes": (64, 128, 256, 512, 1024, 2048, 4096),
    "torchao": (32, 64, 128, 256),
    "optimum-quanto": None,
    "hqq": None,
}
# Back-ends with per-group (not only per-row) scales at 8 bits.
GROUPED_INT8: tuple[Backend, ...] = ("torchao", "hqq")
DEFAULT_GROUP_SIZE = 64
# ``backend: auto`` takes the first of these that runs on the device (measured on CPU: see
# docs/techniques.md for the speed of each).
AUTO_ORDER: dict[str, dict[int, tuple[Backend, ...]]] = {
    "cpu": {
        8: ("torchao", "optimum-quanto", "hqq", "bitsandbytes"),
        4: ("hqq", "optimum-quanto", "bitsandbytes"),
        3: ("hqq",),
        2: ("hqq", "optimum-quanto"),
    },
    "cuda": {
        8: ("bitsandbytes", "torchao", "optimum-quanto", "hqq"),
        4: ("bitsandbytes", "torchao", "hqq", "optimum-quanto"),
        3: ("hqq",),
        2: ("hqq", "optimum-quanto"),
    },
}


def config_error(backend: Backend, bits: int, fmt: Format, group_size: int | None) -> str | None:
    """Why a combination can run on no device (a suite error), or None when it may run."""
    if bits not in BITS[backend]:
        able = ", ".join(b for b in BACKENDS if bits in BITS[b])
        return (
            f"backend {backend} supports bits {', '.join(map(str, BITS[backend]))}; "
            f"for {bits} bits use backend {able} (or auto)"
        )
    if fmt in ("nf4", "fp4") and (backend != "bitsandbytes" or bits != 4):
        return f"format {fmt} is bitsandbytes' 4-bit data type: use backend bitsandbytes, bits 4"
    if fmt == "int" and backend == "bitsandbytes" and bits == 4:
        return "bitsandbytes stores 4-bit weights as nf4 or fp4: use format nf4, fp4 or auto"
    if group_size is None:
        return None
    if bits == 8 and backend not in GROUPED_INT8:
        return (
            f"{backend} scales 8-bit weights per row; group_size applies to its "
            f"{'/'.join(str(b) for b in BITS[backend] if b < 8)}-bit weights "
            f"(8-bit groups: {', '.join(GROUPED_INT8)})"
        )
    allowed = GROUP_SIZES[backend]
    if bits < 8 and allowed is not None and group_size not in allowed:
        return f"{backend} {bits}-bit group_size must be one of {', '.join(map(str, allowed))}"
    return None


def unavailable(backend: Backend, bits: int, device_kind: str, has: Any) -> str | None:
    """Why ``backend`` at ``bits`` cannot run on this device, or None when it can.

    Args:
        backend: the back-end.
        bits: weight bit width.
        device_kind: ``cpu`` or ``cuda``.
        has: ``Environment.has``, tells whether a module is importable.
    """
    if not has(MODULES[backend]):
        return f"needs {backend}: pip install 'bench[quant]'"
    if backend == "torchao" and bits == 4 and device_kind != "cuda":
        return (
            "torchao int4 weight-only needs CUDA (tinygemm int4 kernels); on CPU its int4 "
            "values are stored unpacked in int8 and save nothing over 8 bits"
        )
    return None


def resolve(
    bits: int, fmt: Format, group_size: int | None, device_kind: str, has: Any
) -> tuple[Backend | None, str]:
    """``backend: auto``: the first back-end of ``AUTO_ORDER`` that runs here, or a reason."""
    order = AUTO_ORDER["cuda" if device_kind == "cuda" else "cpu"][bits]
    reasons = []
    for backend in order:
        reason = config_error(backend, bits, fmt, group_size) or unavailable(
            backend, bits, device_kind, has
        )
        if reason is None:
            return backend, ""
        reasons.append(f"{backend}: {reason}")
    return None, "no weight-quantization back-end runs here (" + "; ".join(reasons) + ")"


# ---------------------------------------------------------------------------- estimate


def storage(
    backend: Backend,
    bits: int,
    fmt: Format,
    group_size: int | None,
    skip: Sequence[str],
    dtype_bytes: int,
) -> QuantizedWeights:
    """How ``backend`` stores a quantized linear layer, for ``Technique.estimate``.

    Measured on this project's CPU machine (``module_bytes`` of one quantized layer,
    N = in × out weights, ``out`` rows, s = bytes of the model's dtype, groups of g):

    - bitsandbytes 8: N + 4·out (int8 codes, fp32 row absmax ``SCB``);
      4 (NF4/FP4): N/2 + 4·N/g + 64 (fp32 absmax per block, a 16-entry fp32 code table);
    - torchao 8: N + 5 per row or group (scale, int8 zero point); int4 (CUDA): N/2 + 4 per
      group (bf16 scale and zero), the model cast to bf16;
    - optimum-quanto 8: N + s·out + 8; 4 and 2: N·bits/8 + 2·s per group (scale, shift) + 8;
    - hqq 8: N + 2·s per row; 4 and 2: N·bits/8 + 2·s per group (scale, zero);
      3: 10 codes per int32 word along the groups, 4·g·⌈N/(10·g)⌉, + 2·s per group.
    """
    if fmt == "auto":
        fmt = "nf4" if backend == "bitsandbytes" and bits == 4 else "int"
    group = group_size if group_size is not None or bits == 8 else DEFAULT_GROUP_SIZE
    where = f"groups of {group}" if group else "one scale per row"
    name = fmt if fmt in ("nf4", "fp4") else f"int{bits}"
    label = f"{backend} {name}, {where}"
    s = dtype_bytes
    skip = tuple(skip)
    if backend == "bitsandbytes":
        if bits == 8:
            return QuantizedWeights(label, 8, None, 4, skip=skip)
        return QuantizedWeights(label, 4, group, 4, layer_bytes=64, skip=skip)
    if backend == "torchao":
        if bits == 8:
            return QuantizedWeights(label, 8, group, 5, skip=skip)
        return QuantizedWeights(label, 4, group or DEFAULT_GROUP_SIZE, 4, skip=skip)
    if backend == "optimum-quanto":
        if bits == 8:
            return QuantizedWeights(label, 8, None, s, layer_bytes=8, skip=skip)
        return QuantizedWeights(label, bits, group, 2 * s, layer_bytes=8, skip=skip)
    pack = 10 if bits == 3 else None
    return QuantizedWeights(label, bits, group, 2 * s, pack=pack, skip=skip)


# ---------------------------------------------------------------------------- targets


def skipped(name: str, patterns: Sequence[str]) -> bool:
    """Whether module ``name`` matches a skip pattern (fnmatch; ``p`` also matches ``*.p``)."""
    return any(
        fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, f"*.{p}") for p in patterns
    )


def targets(model: Any, skip: Sequence[str]) -> Layers:
    """The ``torch.nn.Linear`` layers to quantize: (qualified name, module), skips removed."""
    import torch

    return [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and not skipped(name, skip)
    ]


def _replace(model: Any, name: str, new: Any) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# ---------------------------------------------------------------------------- back-ends


def quantize(
    model: Any,
    backend: Backend,
    bits: int,
    fmt: Format,
    group_size: int | None,
    skip: Sequence[str],
    device: str,
) -> int:
    """Quantize ``model``'s linear layers in place; return how many layers were quantized.

    ``group_size`` None: one scale per output row at 8 bits, groups of ``DEFAULT_GROUP_SIZE``
    below 8 bits (the same on every back-end, so their cells compare like with like).

    Raises:
        BenchError: torchao's groups must divide every layer's input features.
    """
    layers = targets(model, skip)
    if fmt == "auto":
        fmt = "nf4" if backend == "bitsandbytes" and bits == 4 else "int"
    group = group_size if group_size is not None or bits == 8 else DEFAULT_GROUP_SIZE
    if backend == "torchao" and group:
        # torchao asserts (int8) or silently leaves the layer in full precision (int4).
        for name, lin in layers:
            if lin.in_features % group:
                raise BenchError(
                    f"weight-quant: torchao group_size {group} does not divide the "
                    f"{lin.in_features} input features of {name}; use a group size that does "
                    f"(e.g. {math.gcd(group, lin.in_features)})"
                )
    apply = {
        "bitsandbytes": _bitsandbytes,
        "torchao": _torchao,
        "optimum-quanto": _quanto,
        "hqq": _hqq,
    }[backend]
    return apply(model, layers, bits, fmt, group, device)


def _bitsandbytes(
    model: Any, layers: Layers, bits: int, fmt: Format, group: int | None, device: str
) -> int:
    import bitsandbytes as bnb

    _quiet_int8_cast_warning()
    for name, lin in layers:
        bias = lin.bias is not None
        new: Any
        if bits == 8:
            new = bnb.nn.Linear8bitLt(
                lin.in_features,
                lin.out_features,
                bias,
                has_fp16_weights=False,
                threshold=6.0,
                device="meta",
            )
            new.weight = bnb.nn.Int8Params(
                lin.weight.data, requires_grad=False, has_fp16_weights=False
            )
        else:
            new = bnb.nn.Linear4bit(
                lin.in_features,
                lin.out_features,
                bias,
                compute_dtype=lin.weight.dtype,
                compress_statistics=False,
                quant_type=fmt,
                device="meta",
            )
            new.weight = bnb.nn.Params4bit(
                lin.weight.data,
                requires_grad=False,
                blocksize=group,
                compress_statistics=False,
                quant_type=fmt,
                module=new,
            )
        if bias:
            new.bias = lin.bias
        _replace(model, name, new.to(device))  # moving to the device quantizes
    return len(layers)


class _DropCastWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


def _quiet_int8_cast_warning() -> None:
    """bitsandbytes logs "inputs will be cast to float16" at every int8 matmul of non-fp16
    activations: one line per layer per token, which says nothing new after the first."""
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastWarning) for f in logger.filters):
        logger.addFilter(_DropCastWarning())


def _torchao(
    model: Any, layers: Layers, bits: int, fmt: Format, group: int | None, device: str
) -> int:
    import torch
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
        PerGroup,
        PerRow,
        quantize_,
    )

    chosen = {id(mod) for _, mod in layers}
    if bits == 8:
        config: Any = Int8WeightOnlyConfig(
            granularity=PerGroup(group) if group else PerRow(), set_inductor_config=False
        )
    else:
        model.to(torch.bfloat16)  # tinygemm's int4 kernel takes bf16 activations only
        config = Int4WeightOnlyConfig(
            group_size=group or DEFAULT_GROUP_SIZE,
            int4_packing_format="tile_packed_to_4d",
            set_inductor_config=False,
        )
    quantize_(model, config, filter_fn=lambda mod, fqn: id(mod) in chosen)
    return len(layers)


def _quanto(
    model: Any, layers: Layers, bits: int, fmt: Format, group: int | None, device: str
) -> int:
    from optimum.quanto import freeze, qint2, qint4, qint8, quantize
    from optimum.quanto.nn import QModuleMixin

    qtype = {8: qint8, 4: qint4, 2: qint2}[bits]
    quantize(model, weights=qtype, include=[name for name, _ in layers])
    for _, mod in model.named_modules():
        if isinstance(mod, QModuleMixin) and bits < 8 and group:
            in_features = mod.weight.numel() // mod.weight.shape[0]
            # quanto falls back to one scale per row where the group does not divide a row.
            mod.weight_group_size = group if in_features % group == 0 else None
    freeze(model)
    if bits < 8:
        for _, mod in model.named_modules():
            if isinstance(mod, QModuleMixin):
                _outside_inference_mode(mod)
    return len(layers)


def _outside_inference_mode(module: Any) -> None:
    """Run ``module`` under ``no_grad`` with inference mode off (see the module docstring)."""
    import torch

    forward = module.forward

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(False), torch.no_grad():
            return forward(*args, **kwargs)

    module.forward = run


def _hqq(model: Any, layers: Layers, bits: int, fmt: Format, group: int | None, device: str) -> int:
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    config = BaseQuantizeConfig(nbits=bits, group_size=group)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, lin in layers:
            new = HQQLinear(
                lin,
                quant_config=config,
                compute_dtype=lin.weight.dtype,
                device=device,
                del_orig=True,
            )
            _replace(model, name, new)
    return len(layers)
