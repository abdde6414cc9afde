"""``speculative``: draft several tokens cheaply, verify them in one target forward pass.

Three drafters, all through transformers' assisted generation (greedy verification, so
the output equals the target's own greedy output token for token):

* ``prompt-lookup``: candidates are copied from the prompt where the last n-gram occurred
  before (``prompt_lookup_num_tokens``); no extra model.
* ``draft``: a smaller model with the same tokenizer (``draft_model``, any id the built-in
  model sources resolve) drafts ``num_draft_tokens`` tokens per step.
* ``layer-skip``: self-speculation: the target's first ``exit_layer`` decoder layers, its
  final norm and head draft (transformers' ``assistant_early_exit``; weights shared, no
  extra memory). Models not trained for early exit accept few drafts.

Assisted generation runs one sequence at a time: batch sizes above 1 are skipped.

Counting (not timing): a forward pre-hook on the target's *last* decoder layer sees every
target pass and no draft pass (a layer-skip draft exits earlier). Per ``generate`` call of
prompt length p emitting E tokens in P target passes, of query lengths q_1..q_P:
drafted = (q_1 − p) + Σ_{i>1} (q_i − 1) (the first pass prefills the prompt and verifies
the first drafts; later passes feed the last accepted token plus the drafts) and
accepted = E − P (every pass emits its accepted drafts plus one token of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import Field, model_validator

from harness import (
    Applied,
    BenchError,
    Config,
    Context,
    MetricDef,
    Prepared,
    Skip,
    Technique,
    hookimpl,
)
from harness.estimate import Architecture, Effect, Shape
from harness.footprint import module_bytes


class SpeculativeConfig(Config):
    method: Literal["prompt-lookup", "draft", "layer-skip"] = Field(
        description="where the draft tokens come from"
    )
    num_draft_tokens: int = Field(
        10, ge=1, description="tokens drafted per step (prompt lookup: tokens copied)"
    )
    draft_model: str | None = Field(
        None, description="model id of the drafter (method draft; same tokenizer)"
    )
    exit_layer: int = Field(
        4, ge=1, description="decoder layers the layer-skip drafter runs (method layer-skip)"
    )
    max_ngram: int = Field(2, ge=1, description="longest n-gram prompt lookup matches")

    @model_validator(mode="after")
    def _method_fields(self) -> SpeculativeConfig:
        if self.method == "draft" and not self.draft_model:
            raise ValueError("method draft needs draft_model: the id of a smaller model")
        if self.method != "draft" and self.draft_model:
            raise ValueError(f"draft_model is used by method draft only, not {self.method}")
        return self


@dataclass
class PassCounter:
    """Target-pass counts over the ``generate`` calls of a cell (see module docstring)."""

    calls: int = 0
    passes: int = 0
    drafted: int = 0
    emitted: int = 0
    active: bool = False
    prompt: int = 0
    first: bool = False

    def begin(self, prompt_len: int) -> None:
        self.active, self.prompt, self.first = True, prompt_len, True
        self.calls += 1

    def target_pass(self, query_len: int) -> None:
        if not self.active:
            return
        self.passes += 1
        self.drafted += query_len - (self.prompt if self.first else 1)
        self.first = False

    def end(self, emitted: int) -> None:
        self.active = False
        self.emitted += emitted

    def metrics(self) -> dict[str, float]:
        """``spec.acceptance_rate`` = (E − P) / drafted, ``spec.tokens_per_target_pass`` =
        E / P, summed over calls; ``spec.drafted_per_pass`` = drafted / P."""
        if self.passes == 0:
            return {}
        out = {
            "spec.tokens_per_target_pass": self.emitted / self.passes,
            "spec.drafted_per_pass": self.drafted / self.passes,
        }
        if self.drafted > 0:
            out["spec.acceptance_rate"] = (self.emitted - self.passes) / self.drafted
        return out


class Speculative(Technique[SpeculativeConfig]):
    """Speculative decoding by prompt lookup, a draft model or the target's first layers."""

    name = "speculative"
    kind = frozenset({"inference"})
    Config = SpeculativeConfig

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        c = self.config
        params = ctx.workload.get("params", {})
        if ctx.workload.get("name") != "generate":
            raise Skip(f"speculative decoding speeds up generation, not {ctx.workload.get('name')}")
        if params.get("batch_size", 1) > 1:
            raise Skip(
                "transformers' assisted generation runs batch size 1 only "
                "('assisted generate is only supported for batch_size = 1')"
            )
        model = prepared.model
        if c.method == "prompt-lookup":
            prepared.generate_kwargs.update(
                prompt_lookup_num_tokens=c.num_draft_tokens, max_matching_ngram_size=c.max_ngram
            )
        elif c.method == "draft":
            draft = _load_draft(c.draft_model or "", model, ctx)
            _constant_drafts(draft, c.num_draft_tokens, prepared)
            prepared.generate_kwargs["assistant_model"] = draft
            ctx.state["draft_weights_bytes"] = module_bytes(draft)
        else:
            layers = _decoder_layers(model)
            if c.exit_layer >= len(layers):
                raise Skip(
                    f"exit_layer {c.exit_layer} must be below the model's {len(layers)} layers"
                )
            _constant_drafts(model, c.num_draft_tokens, prepared)
            prepared.generate_kwargs["assistant_early_exit"] = c.exit_layer
        counter = PassCounter()
        ctx.state["counter"] = counter
        _install_counter(model, counter, prepared)
        return prepared

    def estimate(self, effect: Effect, arch: Architecture, workload: Shape) -> Effect | None:
        """A target pass verifies ``num_draft_tokens`` + 1 tokens and emits, for an
        acceptance rate α, (1 − α^(γ+1)) / (1 − α) of them (Leviathan et al. 2023; γ + 1
        at α = 1). α is known only after a run: without ``workload.acceptance_rate`` the
        decode time is unknown. A draft model adds its weights and KV cache and runs once
        per drafted token; layer-skip runs the first ``exit_layer`` layers per drafted token.
        """
        c = self.config
        if workload.kind != "generate" or workload.batch_size > 1:
            return effect.cannot(
                "memory", "speculative decoding runs generation at batch size 1 only"
            )
        gamma = c.num_draft_tokens
        alpha = workload.acceptance_rate
        out = effect.note(f"speculative: {c.method}, {gamma} drafted tokens per target pass")
        if alpha is None:
            out = out.cannot(
                "decode",
                "speculative: tokens per target pass depend on the acceptance rate, "
                "known only after a run (bench estimate --acceptance-rate)",
            )
            per_step = None
        else:
            per_step = gamma + 1.0 if alpha >= 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
        out = replace(out, draft_tokens=gamma, tokens_per_step=per_step)
        if c.method == "layer-skip":
            return replace(out, draft_layers=min(c.exit_layer, arch.num_layers))
        if c.method == "draft":
            from harness.estimate import load_architecture
            from harness.estimate.memory import kv_cache, weights

            try:
                draft = load_architecture(c.draft_model or "")
            except BenchError as exc:
                return out.cannot("memory", f"speculative: draft model: {exc}")
            plain = replace(effect, weights=None, kv=None, kv_budget_tokens=None)
            held = weights(draft, plain)[0] + kv_cache(draft, workload, plain)
            return replace(out, draft=draft, extra_weights_bytes=effect.extra_weights_bytes + held)
        return out

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        """Target passes verified drafted tokens in the cell's generations
        (``spec.generate_calls``, ``spec.drafted_tokens``; the acceptance rate is a metric)."""
        counter: PassCounter = ctx.state["counter"]
        evidence = {
            "spec.generate_calls": float(counter.calls),
            "spec.drafted_tokens": float(counter.drafted),
        }
        accepted = counter.emitted - counter.passes
        found = (
            f"{counter.calls} generate calls, {counter.passes} target passes verified "
            f"{counter.drafted} drafted tokens ({self.config.method}), {accepted} accepted"
        )
        if counter.calls == 0 or counter.drafted <= 0:
            return Applied(False, f"{found}: nothing was drafted", evidence)
        return Applied(True, found, evidence)

    def metrics(self, ctx: Context) -> dict[str, float]:
        out = ctx.state["counter"].metrics() if "counter" in ctx.state else {}
        if "draft_weights_bytes" in ctx.state:
            out["spec.draft_weights_bytes"] = float(ctx.state["draft_weights_bytes"])
        return out


def _decoder_layers(model: Any) -> Any:
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise Skip(f"{type(model).__name__} has no decoder layer list 'layers' to count passes")
    return layers


def _constant_drafts(model: Any, n: int, prepared: Prepared) -> None:
    """Draft exactly ``n`` tokens per step.

    transformers' defaults adapt ``n`` between calls (schedule ``heuristic``) and stop a
    draft early once the drafter's top probability falls below 0.4
    (``assistant_confidence_threshold``); both are turned off so every step drafts ``n``.
    """
    gc = model.generation_config
    names = (
        "num_assistant_tokens",
        "num_assistant_tokens_schedule",
        "assistant_confidence_threshold",
    )
    old = [getattr(gc, k) for k in names]
    for k, v in zip(names, (n, "constant", 0.0), strict=True):
        setattr(gc, k, v)

    def restore() -> None:
        for k, v in zip(names, old, strict=True):
            setattr(gc, k, v)

    prepared.cleanup.append(restore)


def _install_counter(model: Any, counter: PassCounter, prepared: Prepared) -> None:
    """Hook the last decoder layer and wrap ``model.generate`` (undone by cleanup)."""
    last = _decoder_layers(model)[-1]

    def pre_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        counter.target_pass(int(hidden.shape[1]))

    handle = last.register_forward_pre_hook(pre_hook, with_kwargs=True)
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        if counter.active:  # the layer-skip drafter is the model itself: its own generate
            return original(*args, **kwargs)
        ids: Any = kwargs.get("input_ids", args[0] if args else None)
        counter.begin(int(ids.shape[1]))
        try:
            out = original(*args, **kwargs)
        finally:
            counter.active = False
        sequences = out.sequences if hasattr(out, "sequences") else out
        counter.end(int(sequences.shape[1]) - int(ids.shape[1]))
        return out

    model.generate = generate

    def undo() -> None:
        handle.remove()
        del model.generate

    prepared.cleanup.append(undo)


def _load_draft(model_id: str, target: Any, ctx: Context) -> Any:
    """Load the drafter through the installed model sources, in the target's dtype."""
    from harness.models import resolve_source
    from harness.plugins import get_plugin_manager
    from harness.registry import Registry

    sources = Registry(get_plugin_manager()).model_sources
    dtype = str(target.dtype).removeprefix("torch.")
    loaded = resolve_source(model_id, sources, key="speculative.draft_model").load(
        model_id, dtype=dtype, device=ctx.device
    )
    if loaded.tokenizer.get_vocab() != ctx.tokenizer.get_vocab():
        raise Skip(
            f"draft model {model_id} has a different tokenizer than {ctx.model_id}; "
            "pick a drafter of the same family"
        )
    return loaded.model


METRICS = [
    MetricDef(
        "spec.acceptance_rate",
        "ratio",
        True,
        "accepted / drafted tokens over the cell's generate calls: (emitted − target passes)"
        " / drafted",
    ),
    MetricDef(
        "spec.tokens_per_target_pass",
        "tok/pass",
        True,
        "tokens emitted per target forward pass (1 without speculation)",
    ),
    MetricDef("spec.drafted_per_pass", "tok/pass", False, "draft tokens verified per target pass"),
    MetricDef("spec.draft_weights_bytes", "bytes", False, "weight bytes of the draft model"),
    MetricDef(
        "spec.generate_calls",
        "calls",
        False,
        "generate calls that went through assisted generation in the measure workload",
    ),
    MetricDef(
        "spec.drafted_tokens",
        "tokens",
        False,
        "draft tokens the target verified over those calls (verify: more than 0)",
    ),
]


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Speculative]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return METRICS
