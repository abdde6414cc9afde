"""``lora`` and ``qlora``: low-rank adapters (Hu et al. 2021) with peft; QLoRA's NF4 base.

LoRA freezes the base model and trains B·A (rank r, scaling α/r) beside each target linear
layer; only the adapters receive gradients and optimizer state, so the optimizer (AdamW by
default, or whatever a stacked optimizer technique supplies) holds 2 × adapter bytes.
QLoRA (Dettmers et al. 2023) first quantizes the base linear layers to 4-bit NF4 with
bitsandbytes (blocks of 64, as in the paper; the output head is kept), then adds the same
adapters in fp32.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness import Applied, Config, Context, Environment, MetricDef, Prepared, Technique, hookimpl
from harness.environment import package_versions
from harness.estimate import Architecture, Effect, QuantizedWeights, Shape
from plugins.optim import TRAIN_EXTRA

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraConfig(Config):
    rank: int = Field(8, ge=1, description="adapter rank r")
    alpha: int = Field(16, ge=1, description="scaling numerator: update = α/r · B·A")
    dropout: float = Field(0.0, ge=0, lt=1, description="adapter input dropout")
    targets: list[str] = Field(list(TARGETS), description="module names that get adapters")


def add_adapters(model: Any, c: LoraConfig) -> Any:
    """Wrap ``model`` in a peft ``PeftModel`` with LoRA adapters on ``c.targets``."""
    import peft

    config = peft.LoraConfig(
        r=c.rank,
        lora_alpha=c.alpha,
        lora_dropout=c.dropout,
        target_modules=list(c.targets),
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


class Lora(Technique[LoraConfig]):
    """Frozen base, trainable low-rank adapters."""

    name = "lora"
    kind = frozenset({"training"})
    Config = LoraConfig
    mutates_weights = True

    def check(self, env: Environment) -> None:
        env.require("peft", install=TRAIN_EXTRA)

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        prepared.model = add_adapters(prepared.model, self.config)
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """A (r × in) and B (out × r) fp32 adapters beside each target linear layer are the
        only trainable parameters; AdamW holds 2 × their bytes and a step per tensor."""
        c = self.config
        targets = [lin for lin in arch.linears() if lin.name.rsplit(".", 1)[-1] in c.targets]
        adapters = sum(c.rank * (lin.in_features + lin.out_features) for lin in targets)
        return effect.note(
            f"{self.name}: rank {c.rank} adapters on {len(targets)} layers, base frozen",
            trainable_params=0.0,
            adapter_params=float(adapters),
            optimizer_state_bytes=8.0 * adapters + 4.0 * 2 * len(targets),
        )

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """Only adapter weights are trainable, and there are some (``lora.trainable_share``:
        trainable / all parameters)."""
        named = list(prepared.model.named_parameters())
        trainable = [(n, p) for n, p in named if p.requires_grad]
        adapters = [n for n, _ in trainable if "lora_" in n]
        total = sum(p.numel() for _, p in named)
        share = sum(p.numel() for _, p in trainable) / total if total else 0.0
        found = (
            f"{len(adapters)} adapter tensors of {len(trainable)} trainable tensors "
            f"({share:.2%} of the parameters train)"
        )
        ok = bool(adapters) and len(adapters) == len(trainable)
        return Applied(ok, found, {"lora.trainable_share": share})


class Qlora(Lora):
    """LoRA adapters on a 4-bit NF4 (bitsandbytes) base model."""

    name = "qlora"

    def check(self, env: Environment) -> None:
        super().check(env)
        env.require("bitsandbytes", install=TRAIN_EXTRA)

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        from plugins.quant_backends import quantize

        quantize(prepared.model, "bitsandbytes", 4, "nf4", 64, ["lm_head"], ctx.device)
        for p in prepared.model.parameters():
            p.requires_grad_(False)
        return super().prepare(prepared, ctx)

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """LoRA's adapters over a bitsandbytes NF4 base (blocks of 64, fp32 absmax, a
        16-entry code table per layer; the output head kept)."""
        base = QuantizedWeights("bitsandbytes nf4, groups of 64", 4, 64, 4, 64, skip=("lm_head",))
        out = super().estimate(effect.note("qlora: NF4 base", weights=base), arch, workload)
        return out

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """LoRA's check, and the base linear layers are bitsandbytes 4-bit layers."""
        import bitsandbytes as bnb

        adapters = super().verify(prepared, ctx)
        base = sum(isinstance(m, bnb.nn.Linear4bit) for m in prepared.model.modules())
        found = f"{adapters.reason}; {base} 4-bit NF4 base layers"
        return Applied(adapters.ok and base > 0, found, adapters.evidence)


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Lora, Qlora]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return [
        MetricDef(
            "lora.trainable_share",
            "fraction",
            False,
            "trainable / all parameters of the adapted model (verify: only adapters train)",
        )
    ]


@hookimpl
def environment_info() -> dict[str, str]:
    """Versions of LoRA (peft) and QLoRA's 4-bit weights (bitsandbytes), stored with every run."""
    return package_versions("peft", "bitsandbytes")
