"""The YAML suite format as pydantic models (docs/suites.md, suites/schema.json).

Parsed suites are expanded into cells by ``harness.matrix``; ``harness.suite`` loads them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from harness.strict import StrictNumbers

#: A device a suite may name. A well-formed one this machine lacks is a skipped cell.
DEVICE_NAME = re.compile(r"auto|cpu|all-gpus|cuda(:(0|[1-9][0-9]*))?")


class _Strict(StrictNumbers):
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
    memory_limit_gib: float | None = Field(
        None,
        gt=0,
        description="cap on what a cell may allocate, GiB (CPU: RLIMIT_DATA of the worker; "
        "CUDA: the per-process memory fraction); pre-flight and boundary searches use it",
    )
    preflight: bool = Field(
        True,
        description="skip a cell before its model loads when its predicted resident memory "
        "exceeds the device's (bench run --no-preflight turns it off)",
    )


StackItem = str | dict[str, dict[str, Any] | None]


class SearchAxis(_Strict):
    """One out-of-memory boundary search: the largest value of a workload parameter that fits."""

    up_to: int = Field(ge=1, description="largest value tried")
    at_least: int = Field(1, ge=1, description="smallest value tried")
    tolerance: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="stop when the largest fitting and the smallest failing values are within "
        "this fraction of each other (or adjacent)",
    )
    max_probes: int = Field(12, ge=1, description="most real runs per search")


class Search(_Strict):
    """Out-of-memory boundary searches per stack (harness/boundary.py, docs/estimate.md)."""

    max_prompt_tokens: SearchAxis | None = Field(
        None, description="largest prompt_tokens that fits, each other parameter as in the cell"
    )
    max_batch_size: SearchAxis | None = Field(
        None, description="largest batch_size that fits, each other parameter as in the cell"
    )


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
    search: Search | None = Field(
        None,
        description="out-of-memory boundary searches: bisection seeded by the estimate, "
        "confirmed by real runs (docs/estimate.md)",
    )
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
            if not DEVICE_NAME.fullmatch(d):
                raise ValueError(
                    f"unknown device {d!r}: use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or all-gpus"
                )
        return v


def json_schema() -> dict[str, Any]:
    """The JSON schema of the suite format, committed as suites/schema.json."""
    schema = SuiteFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bench suite"
    return schema
