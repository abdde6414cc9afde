"""``offload``: keep part of the weights, and optionally the KV cache, in CPU memory.

Weights: accelerate places whole decoder blocks on the accelerator until a budget of
``(1 − weights) ×`` the model's weight bytes is used (``infer_auto_device_map`` with
``max_memory``), the rest in CPU memory; ``dispatch_model`` then streams each offloaded
block to the accelerator for its forward pass (hooks, ``AlignDevicesHook``). The offloaded
weights no longer count in ``memory.weights_bytes`` (they are held by the hooks, not the
module): ``offload.bytes_off_device`` reports them.

KV cache: ``DynamicCache(offloading=True)`` (transformers) keeps every layer's keys and
values in CPU memory except the layer being computed, prefetching the next one on a side
stream.

What it saves: accelerator memory, at the cost of host-to-device copies (PCIe bandwidth)
in every forward pass. On a CPU-only device there is nothing to offload to: the cell is
skipped.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from harness import (
    Applied,
    BenchError,
    Config,
    Context,
    Environment,
    MetricDef,
    Prepared,
    Skip,
    Technique,
    hookimpl,
)
from harness.estimate import Architecture, Effect, Shape
from harness.footprint import module_bytes, tensor_bytes


class OffloadConfig(Config):
    weights: float = Field(
        0.5, ge=0.0, le=1.0, description="fraction of the weight bytes kept in CPU memory"
    )
    kv_cache: bool = Field(False, description="keep the KV cache in CPU memory, layer by layer")

    @model_validator(mode="after")
    def _something(self) -> OffloadConfig:
        if self.weights == 0 and not self.kv_cache:
            raise ValueError("nothing to offload: set weights > 0 or kv_cache: true")
        return self


class Offload(Technique[OffloadConfig]):
    """Weights (accelerate device map) and KV cache (offloaded dynamic cache) in CPU memory."""

    name = "offload"
    kind = frozenset({"inference"})
    Config = OffloadConfig
    mutates_weights = True

    def check(self, env: Environment) -> None:
        if env.device_kind != "cuda":
            raise Skip(
                "offload moves weights and the KV cache from an accelerator to CPU memory; "
                "on a CPU device there is nothing to offload to"
            )

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        c = self.config
        model = prepared.model
        ctx.state["weights_off"] = 0
        if c.weights > 0:
            device_map = plan(model, c.weights, ctx.device)
            ctx.state["weights_off"] = off_device_bytes(model, device_map)
            dispatch(model, device_map, ctx.device)
        if c.kv_cache:
            from transformers import DynamicCache

            config = model.config
            caches: list[Any] = []
            ctx.state["caches"] = caches

            def build(codecs: object) -> Any:  # stores no codes: a storage skips the cell
                cache = DynamicCache(config=config, offloading=True)
                caches[:] = [cache]  # the latest only: metrics count what it holds
                return cache

            prepared.set_cache(build, self.name)
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """``weights`` of the weight bytes in host memory, streamed over the host link in
        every forward pass (accelerate places whole blocks: the real share is close to it);
        the KV cache in host memory, every layer read over the link at each step."""
        if effect.device_kind != "cuda":
            return effect.cannot(
                "memory", "offload moves weights from an accelerator: on a CPU it is skipped"
            )
        c = self.config
        parts = [f"{c.weights:.0%} of the weights"] if c.weights else []
        parts += ["the KV cache"] if c.kv_cache else []
        return effect.note(
            f"offload: {' and '.join(parts)} in host memory, streamed each forward pass",
            offload_weights=c.weights,
            offload_kv=c.kv_cache,
        )

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """Bytes are resident off the accelerator: weights held by accelerate's hooks in CPU
        memory (``offload.bytes_off_device``), and with ``kv_cache`` the last generation's
        cache layers in CPU memory (``offload.kv_bytes_off_device``)."""
        out = self.metrics(ctx)
        parts = [f"{out['offload.bytes_off_device'] / 2**20:.1f} MiB of weights in CPU memory"]
        failed = []
        if self.config.weights > 0 and out["offload.bytes_off_device"] <= 0:
            failed.append("no weights were placed in CPU memory")
        if self.config.kv_cache:
            kv = out.get("offload.kv_bytes_off_device", 0.0)
            parts.append(f"{kv / 2**20:.2f} MiB of the KV cache in CPU memory")
            if kv <= 0:
                failed.append("no KV-cache bytes were held in CPU memory")
        found = "; ".join(parts)
        return Applied(not failed, found + (f": {', '.join(failed)}" if failed else ""), out)

    def metrics(self, ctx: Context) -> dict[str, float]:
        """Bytes held in CPU memory instead of the accelerator.

        ``offload.bytes_off_device``: weight bytes of the blocks the device map put on the
        CPU. ``offload.kv_bytes_off_device``: bytes of the latest generation's KV cache held
        on the CPU when it ended (all layers but the prefetched one).
        """
        out = {"offload.bytes_off_device": float(ctx.state["weights_off"])}
        caches = ctx.state.get("caches")
        if caches:
            out["offload.kv_bytes_off_device"] = float(
                tensor_bytes([t for t in _cache_tensors(caches[0]) if t.device.type == "cpu"])
            )
        return out


def _cache_tensors(cache: Any) -> list[Any]:
    from harness.footprint import iter_tensors

    return iter_tensors(cache)


def plan(model: Any, fraction: float, device: str) -> dict[str, int | str]:
    """Device map keeping about ``(1 − fraction)`` of the weight bytes on ``device``.

    accelerate's ``infer_auto_device_map`` fills the accelerator in module order with whole
    blocks (``model._no_split_modules``) until ``max_memory`` is reached, keeping room for the
    largest offloaded block; everything else goes to ``"cpu"``.

    Raises:
        BenchError: the map would need the disk (the CPU budget is too small).
    """
    import psutil
    import torch
    from accelerate import infer_auto_device_map

    index = torch.device(device).index or 0
    budget = int(module_bytes(model) * (1.0 - fraction))
    device_map: dict[str, int | str] = infer_auto_device_map(
        model,
        max_memory={index: budget, "cpu": psutil.virtual_memory().total},
        no_split_module_classes=getattr(model, "_no_split_modules", None) or [],
    )
    if "disk" in device_map.values():
        raise BenchError(
            "offload: the weights do not fit in CPU memory; lower offload.weights in the suite"
        )
    return device_map


def off_device_bytes(model: Any, device_map: dict[str, int | str]) -> int:
    """Bytes of the distinct storages of the modules that ``device_map`` puts on ``"cpu"``."""
    cpu = [model.get_submodule(name) for name, where in device_map.items() if where == "cpu"]
    return tensor_bytes(cpu)


def dispatch(model: Any, device_map: dict[str, int | str], device: str) -> None:
    """Move ``model`` to the CPU, then let accelerate place and hook it by ``device_map``."""
    from accelerate import dispatch_model

    model.to("cpu")  # the offloaded blocks' weights map must hold CPU tensors
    dispatch_model(
        model,
        device_map=device_map,
        main_device=device,
        # As transformers does: never move the KV cache with the inputs.
        skip_keys=getattr(model, "_skip_keys_device_placement", None),
        # A map that is all "cpu" must still stream to the device, not run on the CPU.
        force_hooks=True,
    )


METRICS = [
    MetricDef(
        "offload.bytes_off_device",
        "bytes",
        False,
        "weight bytes kept in CPU memory and streamed to the accelerator per forward pass",
    ),
    MetricDef(
        "offload.kv_bytes_off_device",
        "bytes",
        False,
        "KV-cache bytes held in CPU memory at the end of the latest generation",
    ),
]


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Offload]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
