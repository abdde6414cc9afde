"""The YAML suite format as pydantic models (docs/suites.md, suites/schema.json).

Parsed suites are expanded into cells by ``harness.matrix``; ``harness.suite`` loads them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A model to benchmark: built-in asset name, local folder, .gguf file or hub id."""

    id: str = Field(description="built-in name (smollm2-135m), folder, .gguf file or hub id")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = None
    trust_remote_code: bool = False


class Policy(_Strict):
    """How each cell is measured: unmeasured warm-up runs, measured repeats, a time limit."""

    warmup: int = Field(2, ge=0, description="unmeasured runs before the measured ones")
    repeats: int = Field(5, ge=1, description="measured runs; medians and 95% CIs over them")
    timeout_s: float = Field(600, gt=0, description="a cell running longer is stopped")
    min_energy_window_s: float = Field(
        1.0,
        ge=0,
        description="where an energy meter exists, each timed window repeats the generation "
        "until it lasts this long, s (energy counters update every ~100 ms)",
    )
    target_ci: float | None = Field(
        None,
        gt=0,
        description="adaptive repeats: measure until the 95% CI half-width of TPOT is at most "
        "this fraction of its median (e.g. 0.02), or max_repeats is reached",
    )
    max_repeats: int = Field(20, ge=1, description="most measured runs when target_ci is set")


StackItem = str | dict[str, dict[str, Any] | None]


class GateRule(_Strict):
    """Bounds of one metric against the reference stack (``harness.gates``); one or more."""

    max_ratio: float | None = Field(None, gt=0, description="value / reference ≤ this")
    min_ratio: float | None = Field(None, ge=0, description="value / reference ≥ this")
    min_recovery: float | None = Field(
        None, ge=0, description="value / reference ≥ this: the share of the reference kept"
    )
    max_delta: float | None = Field(None, description="value − reference ≤ this")
    min_delta: float | None = Field(None, description="value − reference ≥ this")
    max: float | None = Field(None, description="value ≤ this (no reference needed)")
    min: float | None = Field(None, description="value ≥ this (no reference needed)")

    @model_validator(mode="after")
    def _some_rule(self) -> GateRule:
        if not self.rules():
            raise ValueError(
                "a gate needs at least one rule: max_ratio, min_ratio, min_recovery, "
                "max_delta, min_delta, max or min"
            )
        return self

    def rules(self) -> tuple[tuple[str, float], ...]:
        """The rules that are set, as (rule name, bound), in field order."""
        return tuple((k, float(v)) for k, v in self.model_dump().items() if v is not None)


class SuiteFile(_Strict):
    """The YAML suite format (see docs/suites.md). Lists in parameters expand a matrix."""

    name: str
    description: str = ""
    models: list[ModelSpec | str] = Field(min_length=1)
    devices: list[str] = Field(default_factory=lambda: ["auto"])
    workload: dict[str, dict[str, Any]] = Field(
        description="exactly one workload, e.g. {generate: {prompt_tokens: [128, 512]}}"
    )
    techniques: list[StackItem | list[StackItem]] | None = Field(
        None,
        description="each entry is one technique stack to compare (default: the reference)",
    )
    reference: StackItem | list[StackItem] | None = Field(
        None,
        description="the stack every other stack is compared with (speedups, deltas); one "
        "of the techniques; default: the installed reference technique (baseline)",
    )
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    accuracy: list[str | dict[str, dict[str, Any] | None]] = Field(default_factory=list)
    policy: Policy = Field(default_factory=Policy)
    gates: dict[str, GateRule] = Field(
        default_factory=dict,
        description="quality gates per registered metric, judged against the reference "
        "stack (e.g. accuracy.perplexity: {max_ratio: 1.05}); stored as gate.passed",
    )

    @field_validator("workload")
    @classmethod
    def _one_workload(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(v) != 1:
            raise ValueError("give exactly one workload, e.g. 'generate: {...}'")
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        for d in v:
            if d not in ("auto", "cpu", "all-gpus") and not d.startswith("cuda"):
                raise ValueError(f"unknown device {d!r}: use auto, cpu, cuda:N or all-gpus")
        return v


def json_schema() -> dict[str, Any]:
    """The JSON schema of the suite format, committed as suites/schema.json."""
    schema = SuiteFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bench suite"
    return schema
