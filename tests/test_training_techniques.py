"""Optimizer-state byte accounting of each training technique on the tiny model (exact)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from harness.environment import Environment
from harness.errors import Skip
from harness.footprint import tensor_bytes
from harness.models import BuiltinSource
from harness.technique import Context, Prepared, Technique
from harness.workloads.train import adamw_reference_bytes, trainable

RANK = 16


def _model() -> Any:
    return BuiltinSource().load("tiny-random-llama").model


def _stepped(technique: Technique, model: Any = None) -> tuple[Any, Any]:
    """(model, optimizer) after prepare and one optimizer step on a real loss."""
    import torch

    model = model if model is not None else _model()
    ctx = Context("cpu", "tiny-random-llama", None, {"name": "train", "params": {}}, _env())
    prepared = technique.prepare(Prepared(model=model), ctx)
    model = prepared.model
    params = trainable(model)
    factory = prepared.optimizer_factory
    optimizer = factory(model) if factory else torch.optim.AdamW(params, lr=1e-4)
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return model, optimizer


def _env() -> Environment:
    return Environment.detect("cpu")


def _make(name: str, **config: Any) -> Technique:
    from harness.plugins import get_plugin_manager
    from harness.registry import Registry

    cls = Registry(get_plugin_manager()).techniques[name]
    technique = cls(cls.Config.model_validate(config))
    technique.check(_env())
    return technique


def _targets(model: Any) -> list[Any]:
    from plugins.optim import projected_params

    return projected_params(model, ["self_attn", "mlp"])


def test_adamw_holds_two_moments_and_a_step_per_tensor() -> None:
    model, optimizer = _stepped(_make("baseline"))
    params = trainable(model)
    # exp_avg + exp_avg_sq (2·m·n fp32 each matrix) + torch's 0-d fp32 ``step`` per tensor.
    assert tensor_bytes(optimizer.state) == adamw_reference_bytes(params) + 4 * len(params)
    assert adamw_reference_bytes(params) == 2 * 4 * 3_219_776


def test_galore_state_follows_the_library_layout() -> None:
    model, optimizer = _stepped(_make("galore", rank=RANK))
    targets = _targets(model)
    assert len(targets) == 14  # 7 linear layers × 2 decoder layers
    for p in targets:
        m, n = p.shape
        r, short, long = RANK, min(m, n), max(m, n)
        # Moments r×long (2·r·max(m,n) floats); the projection is a view of the full SVD
        # factor, whose min(m,n)² storage stays alive (paper: r·min(m,n) for it).
        assert tensor_bytes(optimizer.state[p]) == 4 * (2 * r * long + short * short)
        moments = optimizer.state[p]["exp_avg"].numel() + optimizer.state[p]["exp_avg_sq"].numel()
        projection = optimizer.state[p]["projector"].ortho_matrix.numel()
        assert moments + projection == 2 * r * long + r * short  # paper's m·r + 2·n·r, m ≤ n
    others = [p for p in trainable(model) if all(p is not t for t in targets)]
    expected = sum(tensor_bytes(optimizer.state[p]) for p in targets) + adamw_reference_bytes(
        others
    )  # galore's step is a Python int: no tensor
    assert tensor_bytes(optimizer.state) == expected


def test_apollo_state_is_moments_of_a_random_projection() -> None:
    rank = 8
    for name, extra in (("apollo", {"rank": rank}), ("apollo-mini", {})):
        model, optimizer = _stepped(_make(name, **extra))
        r = rank if name == "apollo" else 1
        for p in _targets(model):
            m, n = p.shape
            # moments 2·r·max(m,n), its own random projection r·min(m,n), 0-d scaled_grad.
            expected = 4 * (2 * r * max(m, n) + r * min(m, n) + 1)
            assert tensor_bytes(optimizer.state[p]) == expected, (name, m, n)


def test_adam8bit_state_is_a_quarter_of_adamw() -> None:
    model, optimizer = _stepped(_make("adam-8bit"))
    params = trainable(model)
    big = [p for p in params if p.numel() >= 4096]
    small = [p for p in params if p.numel() < 4096]
    # uint8 codes (1 byte per moment element) + one fp32 absmax per 256-block per moment;
    # fp32 moments below min_8bit_size; two 256-entry fp32 code tables shared by all.
    expected = (
        sum(2 * p.numel() + 2 * 4 * math.ceil(p.numel() / 256) for p in big)
        + sum(2 * 4 * p.numel() for p in small)
        + 2 * 256 * 4
    )
    state = tensor_bytes(optimizer.state)
    assert state == expected
    assert state <= 0.27 * adamw_reference_bytes(params)


def test_lora_optimizer_holds_only_adapter_moments() -> None:
    model, optimizer = _stepped(_make("lora", rank=4))
    params = trainable(model)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    # A: r×in, B: out×r for q,k,v,o,gate,up,down of 2 layers (hidden 64, kv 32, mlp 128).
    per_layer = 4 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    assert sum(p.numel() for p in params) == 2 * per_layer
    assert tensor_bytes(optimizer.state) == adamw_reference_bytes(params) + 4 * len(params)


def test_qlora_quantizes_the_base_to_4_bit() -> None:
    import bitsandbytes as bnb

    model, _ = _stepped(_make("qlora", rank=4))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_cpu_skips() -> None:
    with pytest.raises(Skip, match="CUDA"):
        _make("mixed-precision", dtype="fp16")
    with pytest.raises(Skip, match="GPU"):
        _make("galore", optimizer="adamw8bit")
