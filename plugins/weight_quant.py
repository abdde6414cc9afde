"""``weight-quant``: weight-only quantization of the linear layers (8, 4, 3 or 2 bits).

The model's ``torch.nn.Linear`` layers (except ``skip_modules``, by default the output head
``lm_head`` as the libraries do) get integer (or NF4/FP4) weights with per-row or per-group
scales from one of four back-ends (``plugins.quant_backends``). Activations stay in the
model's dtype. Embeddings and norms are not touched.

What it saves: linear-layer weight bytes fall to about bits/16 of bf16 plus the scales
(for groups of g with an fp32 scale and zero point: + 64/g bits per weight).
"""

from __future__ import annotations

from typing import Any, Literal

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
from harness.environment import package_versions
from harness.estimate import Architecture, Effect, Shape
from harness.estimate.arch import DTYPE_BYTES
from harness.footprint import component_bytes, module_bytes
from plugins import quant_backends as qb


class WeightQuantConfig(Config):
    bits: Literal[8, 4, 3, 2] = Field(description="bits per weight (before scales)")
    backend: Literal["auto", "bitsandbytes", "torchao", "optimum-quanto", "hqq"] = Field(
        "auto", description="quantization library; auto picks one that runs on the device"
    )
    format: Literal["auto", "int", "nf4", "fp4"] = Field(
        "auto",
        description="integer codes, or bitsandbytes' 4-bit NF4/FP4 data types; "
        "auto: nf4 for bitsandbytes at 4 bits, int otherwise",
    )
    group_size: int | None = Field(
        None,
        ge=1,
        description="weights per scale; default: one per row at 8 bits, 64 below 8 bits",
    )
    skip_modules: list[str] = Field(
        ["lm_head"],  # a plain default (pydantic copies it), so labels leave it out
        description="modules left unquantized (fnmatch patterns on qualified names)",
    )

    @model_validator(mode="after")
    def _combination(self) -> WeightQuantConfig:
        if self.backend != "auto":
            reason = qb.config_error(self.backend, self.bits, self.format, self.group_size)
            if reason:
                raise ValueError(reason)
        elif self.format in ("nf4", "fp4") and self.bits != 4:
            raise ValueError(f"format {self.format} is a 4-bit data type: use bits 4")
        return self


class WeightQuant(Technique[WeightQuantConfig]):
    """Replace linear weights by quantized ones (bitsandbytes, torchao, quanto or hqq)."""

    name = "weight-quant"
    kind = frozenset({"inference"})
    Config = WeightQuantConfig
    mutates_weights = True

    def check(self, env: Environment) -> None:
        self.backend_for(env)

    def backend_for(self, env: Environment) -> qb.Backend:
        """The back-end this config runs with on ``env``.

        Raises:
            Skip: it cannot run there (library missing, device unsupported).
        """
        c = self.config
        if c.backend == "auto":
            backend, reason = qb.resolve(c.bits, c.format, c.group_size, env.device_kind, env.has)
            if backend is None:
                raise Skip(reason)
            return backend
        unavailable = qb.unavailable(c.backend, c.bits, env.device_kind, env.has)
        if unavailable:
            raise Skip(unavailable)
        return c.backend

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        c = self.config
        backend = self.backend_for(ctx.env)
        model = prepared.model
        ctx.state["linear_numel"] = _linear_numel(model)
        ctx.state["targets"] = [name for name, _ in qb.targets(model, c.skip_modules)]
        # per targeted layer: a tied head counts as linear only once untied and quantized
        ctx.state["target_bytes_before"] = _targets_bytes(model, ctx.state["targets"])
        count = qb.quantize(
            model, backend, c.bits, c.format, c.group_size, c.skip_modules, ctx.device
        )
        if count == 0:
            raise BenchError(
                f"weight-quant: skip_modules {c.skip_modules} leave no linear layer to quantize; "
                "narrow skip_modules in the suite"
            )
        ctx.state["model"] = model
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """Codes and scales of the back-end this config runs with on the estimate's device
        (``quant_backends.storage``); torchao's int4 casts the model to bf16 first."""
        c = self.config
        backend: qb.Backend | None = None if c.backend == "auto" else c.backend
        if backend is None:
            backend, reason = qb.resolve(
                c.bits, c.format, c.group_size, effect.device_kind, Environment.has
            )
            if backend is None:
                return effect.cannot("memory", f"weight-quant: {reason}")
        dtype = "bfloat16" if backend == "torchao" and c.bits == 4 else effect.dtype
        stored = qb.storage(
            backend, c.bits, c.format, c.group_size, c.skip_modules, DTYPE_BYTES[dtype]
        )
        return effect.note(f"weight-quant: {stored.label}", weights=stored, dtype=dtype)

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """Every targeted linear layer was replaced by a quantized one, and the targeted
        layers hold fewer bytes than before (``weight_quant.replaced_share``)."""
        model = ctx.state["model"]
        names = ctx.state["targets"]
        replaced = [n for n in names if is_quantized(model.get_submodule(n))]
        before = ctx.state["target_bytes_before"]
        after = _targets_bytes(model, names)
        share = len(replaced) / len(names) if names else 0.0
        evidence = {"weight_quant.replaced_share": share}
        found = (
            f"{len(replaced)} of {len(names)} targeted linear layers quantized; their bytes "
            f"{before / 2**20:.3g} MiB → {after / 2**20:.3g} MiB"
        )
        if len(replaced) < len(names):
            missed = ", ".join(n for n in names if n not in replaced)[:200]
            return Applied(False, f"{found} (still full precision: {missed})", evidence)
        if after >= before:
            return Applied(False, f"{found}: nothing was packed", evidence)
        return Applied(True, found, evidence)

    def metrics(self, ctx: Context) -> dict[str, float]:
        """Component bytes of the quantized model and the effective bits per linear weight.

        ``weight_quant.bits_per_weight`` = 8 × ``memory.linear_weights_bytes`` / number of
        linear-layer weight and bias elements before quantization (scales, zero points and
        unquantized linear layers included).
        """
        parts = component_bytes(ctx.state["model"])
        numel = ctx.state["linear_numel"]
        out = {
            "memory.linear_weights_bytes": float(parts["linear"]),
            "memory.embedding_bytes": float(parts["embedding"]),
        }
        if numel:
            out["weight_quant.bits_per_weight"] = 8.0 * parts["linear"] / numel
        return out


def is_quantized(module: object) -> bool:
    """Whether a (formerly ``torch.nn.Linear``) module holds quantized weights: a library's
    layer class (bitsandbytes, optimum-quanto, hqq), a tensor-subclass weight (torchao) or
    integer weights."""
    import torch

    weight = getattr(module, "weight", None)
    if type(module) is not torch.nn.Linear:
        return True
    return type(weight) not in (torch.nn.Parameter, torch.Tensor) or not (
        weight is not None and weight.is_floating_point()
    )


def _linear_numel(model: object) -> int:
    """Elements of the storages ``component_bytes`` counts as linear (tied heads excluded)."""
    import torch

    embedded = {
        p.untyped_storage().data_ptr()
        for m in model.modules()  # type: ignore[attr-defined]
        if isinstance(m, torch.nn.Embedding)
        for p in m.parameters()
    }
    seen: dict[int, int] = {}
    for m in model.modules():  # type: ignore[attr-defined]
        if isinstance(m, torch.nn.Linear):
            for p in m.parameters(recurse=False):
                ptr = p.untyped_storage().data_ptr()
                if ptr not in embedded:
                    seen[ptr] = p.numel()
    return sum(seen.values())


METRICS = [
    MetricDef(
        "memory.linear_weights_bytes",
        "bytes",
        False,
        "bytes held by the linear layers (weights, biases, scales, zero points); an output "
        "head tied to the embedding counts as embedding",
    ),
    MetricDef(
        "memory.embedding_bytes",
        "bytes",
        False,
        "bytes held by embedding layers (and output heads tied to them)",
    ),
    MetricDef(
        "weight_quant.replaced_share",
        "fraction",
        True,
        "share of the targeted linear layers holding quantized weights after prepare "
        "(verify: 1 when the technique took effect)",
    ),
    MetricDef(
        "weight_quant.bits_per_weight",
        "bits",
        False,
        "8 × linear-layer bytes / linear-layer elements: effective bits per linear weight, "
        "scales and zero points included",
    ),
]


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [WeightQuant]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS


@hookimpl
def environment_info() -> dict[str, str]:
    """Versions of the weight quantization back-ends, stored with every run."""
    return package_versions("bitsandbytes", "torchao", "optimum-quanto", "hqq")


def _targets_bytes(model: Any, names: list[str]) -> int:
    """Bytes of the named layers' weights (``harness.footprint.module_bytes``)."""
    return sum(module_bytes(model.get_submodule(n)) for n in names)
