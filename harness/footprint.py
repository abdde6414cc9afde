"""Bytes held by tensors: weights, KV caches, optimizer states, counted from the objects.

Quantized tensor subclasses (torchao, optimum-quanto, ...) are counted through their inner
tensors (``__tensor_flatten__``), so packed data, scales and zero points all count. Views of
one storage are counted once (storages are keyed by device and data pointer).

Quantization libraries also keep state outside parameters and buffers: bitsandbytes hangs
the int8 row scales (``Int8Params.SCB``) and the 4-bit ``QuantState`` (absmax, code table)
on the parameter object, hqq keeps scales and zero points in a ``meta`` dict on the module.
``module_bytes`` therefore also follows the attributes of every parameter and the
non-parameter attributes of every module, without descending into other modules. Attributes
whose name contains ``hook`` are left out: hooks (accelerate's ``_hf_hook``, torch's hook
registries) are plumbing that wraps a module's call, and whatever they hold (an offloaded
copy of the weights) is reported by the technique that installed them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# torch.nn.Module's own containers: parameters, buffers and submodules are walked explicitly.
_MODULE_CONTAINERS = frozenset({"_parameters", "_buffers", "_modules"})

COMPONENTS: tuple[str, ...] = ("embedding", "linear", "other")


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
    """Bytes of a module's weights: parameters, buffers and quantization state.

    Counts the distinct storages of every parameter and buffer, of tensors reachable from the
    attributes of those tensors (bitsandbytes ``SCB``, ``quant_state``), and of tensors held
    in non-parameter attributes of every submodule (hqq's ``meta`` scales and zero points).
    Meta-device tensors hold no memory and count zero.

    Returns:
        bytes.
    """
    seen: dict[tuple[str, int], int] = {}
    for mod in module.modules():
        for t in _own_tensors(mod):
            _storages(t, seen)
    return sum(seen.values())


def component_bytes(module: Any) -> dict[str, int]:
    """Weight bytes split into ``embedding``, ``linear`` and ``other`` (norms, buffers, ...).

    A module is an embedding if it is a ``torch.nn.Embedding``, a linear layer if it is a
    ``torch.nn.Linear`` (bitsandbytes, optimum-quanto and torchao keep that class) or has
    integer ``in_features`` and ``out_features`` (hqq's ``HQQLinear``). Each storage counts
    once, in the first of embedding, linear, other that holds it: an output head tied to the
    input embedding counts as embedding. The three parts add up to ``module_bytes(module)``.

    Returns:
        bytes per component, keys ``COMPONENTS``.
    """
    kinds: dict[str, list[Any]] = {k: [] for k in COMPONENTS}
    for mod in module.modules():
        kinds[_component(mod)].append(mod)
    claimed: dict[tuple[str, int], int] = {}
    out: dict[str, int] = {}
    for kind in COMPONENTS:
        seen: dict[tuple[str, int], int] = {}
        for mod in kinds[kind]:
            for t in _own_tensors(mod):
                _storages(t, seen)
        fresh = {k: v for k, v in seen.items() if k not in claimed}
        claimed.update(fresh)
        out[kind] = sum(fresh.values())
    return out


def _component(mod: Any) -> str:
    import torch

    if isinstance(mod, torch.nn.Embedding):
        return "embedding"
    if isinstance(mod, torch.nn.Linear) or (
        isinstance(getattr(mod, "in_features", None), int)
        and isinstance(getattr(mod, "out_features", None), int)
    ):
        return "linear"
    return "other"


def _own_tensors(mod: Any) -> list[Any]:
    """Tensors a module holds itself (not its submodules'), quantization state included."""
    found: list[Any] = []
    seen: set[int] = set()
    for p in mod._parameters.values():
        if p is not None:
            found.append(p)
            found.extend(_attribute_tensors(_attributes(p), seen))
    found.extend(b for b in mod._buffers.values() if b is not None)
    extra = {k: v for k, v in vars(mod).items() if k not in _MODULE_CONTAINERS and "hook" not in k}
    found.extend(_attribute_tensors(extra.values(), seen))
    return found


def _attributes(obj: Any) -> Iterable[Any]:
    try:
        return list(vars(obj).values())
    except TypeError:  # objects without a __dict__
        return []


def _attribute_tensors(items: Iterable[Any], seen: set[int]) -> list[Any]:
    """Tensors reachable from ``items`` through containers and objects, modules excluded."""
    import torch

    found: list[Any] = []
    for obj in items:
        if id(obj) in seen or isinstance(obj, (torch.nn.Module, type)) or callable(obj):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found.append(obj)
            found.extend(_attribute_tensors(_attributes(obj), seen))
        elif isinstance(obj, dict):
            found.extend(_attribute_tensors(obj.values(), seen))
        elif isinstance(obj, (list, tuple, set, frozenset)):
            found.extend(_attribute_tensors(obj, seen))
        elif hasattr(obj, "__dict__"):
            found.extend(_attribute_tensors(_attributes(obj), seen))
    return found


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
