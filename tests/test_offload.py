"""plugins/offload.py: config, the CPU skip, byte accounting; the CUDA path is marked gpu."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from harness import Environment, Skip, testing
from plugins.offload import Offload, OffloadConfig, off_device_bytes


def test_config_needs_something_to_offload() -> None:
    with pytest.raises(ValidationError, match="nothing to offload"):
        OffloadConfig(weights=0.0)
    with pytest.raises(ValidationError):
        OffloadConfig(weights=1.5)
    assert OffloadConfig(weights=0.0, kv_cache=True).kv_cache


def test_cpu_devices_skip_with_the_reason() -> None:
    with pytest.raises(Skip, match="nothing to offload to"):
        Offload(OffloadConfig()).check(Environment("cpu", cuda=False))
    r = testing.run_technique({"offload": {"weights": 0.5, "kv_cache": True}})
    assert r.status == "skipped"
    assert r.reason is not None and "on a CPU device" in r.reason


def test_off_device_bytes_count_the_cpu_modules_once() -> None:
    emb = torch.nn.Embedding(10, 4)  # 160 bytes
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied: counted once
    model = torch.nn.ModuleDict({"emb": emb, "body": torch.nn.Linear(4, 4), "head": head})
    device_map: dict[str, int | str] = {"emb": "cpu", "body": 0, "head": "cpu"}
    assert off_device_bytes(model, device_map) == 160
    assert off_device_bytes(model, {"": "cpu"}) == 160 + 64 + 16


def test_dispatch_hooks_keep_outputs_and_bytes() -> None:
    """accelerate's hooks (forced even for a one-device map) change neither tokens nor bytes."""
    from transformers import AutoModelForCausalLM

    from harness.assets import provision
    from harness.footprint import module_bytes
    from plugins.offload import dispatch

    folder = str(provision("tiny-random-llama"))
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    dispatch(model, {"": "cpu"}, "cpu")
    assert hasattr(model, "_hf_hook")
    assert module_bytes(model) == module_bytes(base)
    ids = torch.tensor([[1, 5, 9, 200, 31]])
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=5, do_sample=False)
        ref = base.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(out, ref)


@pytest.mark.gpu
@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_weights_offload_on_cuda(fraction: float) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    base = testing.run_technique("baseline", model="smollm2-135m", device="cuda:0")
    r = testing.run_technique(
        {"offload": {"weights": fraction}}, model="smollm2-135m", device="cuda:0"
    )
    assert r.status == "ok", r.reason
    off = r.value("offload.bytes_off_device")
    total = base.value("memory.weights_bytes")
    assert off is not None and total is not None and 0 < off <= total
    # What left the device is no longer counted as the module's weights.
    assert r.value("memory.weights_bytes") == pytest.approx(total - off, abs=1)


@pytest.mark.gpu
def test_kv_cache_offload_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    base = testing.run_technique("baseline", model="smollm2-135m", device="cuda:0")
    r = testing.run_technique(
        {"offload": {"weights": 0.0, "kv_cache": True}}, model="smollm2-135m", device="cuda:0"
    )
    assert r.status == "ok", r.reason
    kv = base.value("memory.kv_cache_bytes")
    off = r.value("offload.kv_bytes_off_device")
    # Every layer but the one prefetched for the next step stays in CPU memory.
    assert kv is not None and off is not None
    assert kv * 28 / 30 <= off <= kv
