"""The ``verify`` step of the cell pipeline: proof that each technique took effect.

After the measure workload, every technique of the stack checks its own effect
(``Technique.verify`` → ``Applied``): layers replaced, tokens evicted, drafts verified,
optimizer state in the expected dtype and rank. The outcome is stored with the cell:

- ``check.applied`` = 1 when every technique's check passed, 0 otherwise; its reason holds
  each technique's sentence (``name: reason``), so every reader sees what was checked;
- each check's evidence as the registered metrics it names.

A failed check makes the cell ``not-applied`` (``harness.errors.NotApplied``) with the
failing techniques' reasons: its numbers describe a stack that did not run as labelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.results import MetricDef, Value
from harness.technique import Context, Prepared, Technique

METRICS = [
    MetricDef(
        "check.applied",
        "flag",
        True,
        "1 when every technique of the stack verified that it took effect "
        "(Technique.verify); the reason lists each check",
    ),
]


def verify_stack(
    techniques: Sequence[Technique],
    prepared: Prepared,
    ctx: Context,
    defs: Mapping[str, MetricDef],
) -> tuple[dict[str, Value], str | None]:
    """Run every technique's ``verify``; returns the values and the failure (None if none).

    Args:
        techniques: the stack, in order.
        prepared: what the stack prepared (after the measure workload ran on it).
        ctx: the cell's technique context (``ctx.state`` holds what ``prepare`` kept).
        defs: registered metrics, for the units of the evidence.
    """
    checks = [(t, t.verify(prepared, ctx)) for t in techniques]
    values: dict[str, Value] = {}
    for technique, applied in checks:
        for name, number in applied.evidence.items():
            unit = defs[name].unit if name in defs else ""
            values[name] = Value(name, float(number), unit, source=f"verify {technique.name}")
    failed = [f"{t.name}: {a.reason}" for t, a in checks if not a.ok]
    summary = "; ".join(f"{t.name}: {a.reason}" for t, a in checks)
    values["check.applied"] = Value(
        "check.applied",
        0.0 if failed else 1.0,
        "flag",
        n=len(checks),
        source="verify",
        reason=summary or None,
    )
    return values, "; ".join(failed) or None
