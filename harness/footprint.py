"""Bytes held by tensors: weights, KV caches, optimizer states, counted from the objects.

Quantized tensor subclasses (torchao, optimum-quanto, ...) are counted through their inner
tensors (``__tensor_flatten__``), so packed data, scales and zero points all count. Views of
one storage are counted once.
"""

from __future__ import annotations

from typing import Any


def _storages(t: Any, seen: dict[tuple[str, int], int]) -> None:
    import torch

    flatten = getattr(t, "__tensor_flatten__", None)
    if type(t) not in (torch.Tensor, torch.nn.Parameter) and flatten is not None:
        names, _ = flatten()
        for name in names:
            _storages(getattr(t, name), seen)
        return
    if t.device.type == "meta":
        return
    storage = t.untyped_storage()
    seen[(str(t.device), storage.data_ptr())] = storage.nbytes()


def tensor_bytes(tensors: Any) -> int:
    """Total bytes of the distinct storages behind ``tensors`` (any nesting of objects)."""
    seen: dict[tuple[str, int], int] = {}
    for t in iter_tensors(tensors):
        _storages(t, seen)
    return sum(seen.values())


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers (weights, including quantization state)."""
    return tensor_bytes([*module.parameters(), *module.buffers()])


def iter_tensors(obj: Any, _seen: set[int] | None = None) -> list[Any]:
    """Every tensor reachable from ``obj`` through lists, tuples, dicts and attributes."""
    import torch

    seen = _seen if _seen is not None else set()
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, torch.nn.Module):
        return [*obj.parameters(), *obj.buffers()]
    if isinstance(obj, dict):
        items: Any = obj.values()
    elif isinstance(obj, (list, tuple, set)):
        items = obj
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = vars(obj).values()
    else:
        return []
    found = []
    for item in items:
        found.extend(iter_tensors(item, seen))
    return found
