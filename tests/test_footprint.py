"""harness/footprint.py: bytes counted from tensors, quantization state included."""

from __future__ import annotations

import pytest
import torch

from harness.footprint import component_bytes, module_bytes, tensor_bytes


class _QuantState:
    """Stands for bitsandbytes' QuantState: an object on the parameter holding tensors."""

    def __init__(self) -> None:
        self.absmax = torch.zeros(8, dtype=torch.float32)  # 32 bytes
        self.nested = {"code": torch.zeros(16, dtype=torch.float32)}  # 64 bytes


class MetaDictLinear(torch.nn.Module):
    """hqq-like: packed weight parameter, scales and zeros in a plain dict attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.in_features, self.out_features = 16, 4
        self.W_q = torch.nn.Parameter(torch.zeros(4, 8, dtype=torch.uint8), requires_grad=False)
        self.meta = {"scale": torch.zeros(4, 1), "zero": torch.zeros(4, 1), "nbits": 4}
        self.W_q.quant_state = _QuantState()  # type: ignore[attr-defined]
        self._hf_hook = {"offloaded": torch.zeros(1000)}  # hooks' tensors are not weights
        self.parent_ref = [self]  # a module reached through an attribute is not walked


def test_views_of_one_storage_count_once() -> None:
    t = torch.zeros(10, 10)  # 400 bytes
    assert tensor_bytes([t, t[2:], t.view(100)]) == 400
    assert tensor_bytes({"a": t, "b": [t.T, torch.zeros(3, dtype=torch.int8)]}) == 403


def test_module_bytes_follow_parameter_and_module_attributes() -> None:
    layer = MetaDictLinear()
    # W_q 32 + quant_state (32 + 64) + meta scale 16 + zero 16; the hook's 4000 are left out.
    assert module_bytes(layer) == 32 + 96 + 32
    wrapper = torch.nn.Sequential(layer, layer)  # one module twice: counted once
    assert module_bytes(wrapper) == 160


def test_meta_tensors_hold_nothing() -> None:
    lin = torch.nn.Linear(8, 8, device="meta")
    assert module_bytes(lin) == 0


def test_tensor_subclasses_count_their_inner_tensors() -> None:
    class Packed(torch.Tensor):
        @staticmethod
        def __new__(cls, data: torch.Tensor, scale: torch.Tensor) -> Packed:
            return torch.Tensor._make_wrapper_subclass(cls, (4, 4), dtype=torch.float32)

        def __init__(self, data: torch.Tensor, scale: torch.Tensor) -> None:
            self.data_, self.scale_ = data, scale

        def __tensor_flatten__(self) -> tuple[list[str], None]:
            return ["data_", "scale_"], None

        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # type: ignore[override]
            raise NotImplementedError

    packed = Packed(torch.zeros(8, dtype=torch.uint8), torch.zeros(4, dtype=torch.float16))
    assert tensor_bytes([packed]) == 8 + 8


def test_component_bytes_split_add_up_and_tied_heads_count_as_embedding() -> None:
    emb = torch.nn.Embedding(100, 8)  # 3200 bytes
    head = torch.nn.Linear(8, 100, bias=False)
    head.weight = emb.weight  # tied
    model = torch.nn.ModuleDict(
        {
            "emb": emb,
            "proj": torch.nn.Linear(8, 8),  # 256 + 32
            "hqq": MetaDictLinear(),  # 160, a linear by its in/out features
            "norm": torch.nn.LayerNorm(8),  # 64
            "head": head,
        }
    )
    parts = component_bytes(model)
    assert parts == {"embedding": 3200, "linear": 288 + 160, "other": 64}
    assert sum(parts.values()) == module_bytes(model)


@pytest.mark.parametrize("model_id", ["tiny-random-llama"])
def test_component_bytes_of_the_tiny_llama(model_id: str) -> None:
    from transformers import AutoModelForCausalLM

    from harness.assets import TINY_LLAMA_CONFIG, provision

    model = AutoModelForCausalLM.from_pretrained(str(provision(model_id)))
    c = TINY_LLAMA_CONFIG
    h, i, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    per_layer = h * d * (2 * c["num_attention_heads"] + 2 * c["num_key_value_heads"]) + 3 * h * i
    linear = 4 * c["num_hidden_layers"] * per_layer
    norms = 4 * h * (2 * c["num_hidden_layers"] + 1)
    buffers = sum(b.nbytes for b in model.buffers())
    parts = component_bytes(model)
    assert parts == {
        "embedding": 4 * c["vocab_size"] * h,
        "linear": linear,
        "other": norms + buffers,
    }
    assert sum(parts.values()) == module_bytes(model)
