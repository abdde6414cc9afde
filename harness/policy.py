"""The measurement policy of a suite (``policy:``): warm-up, repeats, time limit.

Its own module because both sides use it: suites parse it (``harness.suite``) and workloads
follow it (``WorkloadContext.policy``); neither may import the other's module.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Policy(BaseModel):
    """How each cell is measured: unmeasured warm-up runs, measured repeats, a time limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
