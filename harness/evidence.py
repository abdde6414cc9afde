"""Per-sample evidence against the reference stack: flips, greedy agreement, length drift.

An average can hide what happened to each sample: a stack that answers 80% of the passkey
trials right, as the reference does, may answer a different 80%. Tasks with per-sample
outcomes keep them as ``Value.samples`` (1 right, 0 wrong, in a fixed order); generation
keeps its tokens. :func:`sample_values`, called by ``harness.derive.relative_values`` with
the reference cell of the same run, compares them sample by sample:

- **Flips**, for a metric ``accuracy.<task>`` whose samples are outcomes and that has
  registered its flip metrics (:func:`flip_metrics`): over the N samples both cells scored,
  ``flips.<task>_right_to_wrong`` = #{right on the reference, wrong here} / N,
  ``flips.<task>_wrong_to_right`` = #{wrong on the reference, right here} / N and
  ``flips.<task>_changed`` = their sum. The accuracy difference is wrong_to_right −
  right_to_wrong, so equal accuracy can hide any amount of ``changed``.
- **Greedy token agreement** (``generate``, from ``generate.tokens``): with T the tokens of
  row r at step t, ``quality.token_agreement`` = (1/(B·S)) Σ_r Σ_t 1[T_r,t = T_ref r,t] and
  ``quality.prefix_agreement`` = (1/B) Σ_r (steps before the first mismatch of row r) / S,
  for B rows of S generated tokens.
- **Output-length drift** (``generate``, from ``generate.natural_length_tokens``, the tokens
  a row generates before the model first picks end-of-sequence, S when it never does):
  ``quality.length_drift_tokens`` = (1/B) Σ_r (L_r − L_ref r); its samples are the B
  per-row drifts (the distribution).

Nothing here imports torch or numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.results import CellResult, MetricDef, Value

TOKENS = "generate.tokens"
NATURAL_LENGTH = "generate.natural_length_tokens"
FLIP_KINDS = ("right_to_wrong", "wrong_to_right", "changed")

METRICS = [
    MetricDef(
        "quality.token_agreement",
        "fraction",
        True,
        "share of generated tokens equal to the reference stack's at the same row and step "
        "(greedy, same prompts)",
    ),
    MetricDef(
        "quality.prefix_agreement",
        "fraction",
        True,
        "mean share of each row's generated tokens before its first mismatch with the "
        "reference stack's",
    ),
    MetricDef(
        "quality.length_drift_tokens",
        "tokens",
        False,
        "mean per-row change of the natural output length (tokens before the first "
        "end-of-sequence pick) against the reference stack; samples: each row's drift",
    ),
]


def flip_names(metric: str) -> dict[str, str]:
    """The flip metric names of ``accuracy.<task>``: ``flips.<task>_<kind>`` per kind."""
    task = metric.removeprefix("accuracy.")
    return {kind: f"flips.{task}_{kind}" for kind in FLIP_KINDS}


def flip_metrics(metric: MetricDef) -> list[MetricDef]:
    """The definitions a task registers so that the runner reports ``metric``'s flips.

    Register them next to ``metric`` (whose ``Value.samples`` must be 1/0 outcomes in an
    order that is the same for every stack).
    """
    names = flip_names(metric.name)
    what = metric.description
    return [
        MetricDef(
            names["right_to_wrong"],
            "fraction",
            False,
            f"samples right on the reference stack and wrong here / samples ({what})",
        ),
        MetricDef(
            names["wrong_to_right"],
            "fraction",
            True,
            f"samples wrong on the reference stack and right here / samples ({what})",
        ),
        MetricDef(
            names["changed"],
            "fraction",
            False,
            f"samples whose outcome differs from the reference stack's / samples ({what})",
        ),
    ]


def sample_values(
    result: CellResult, reference: CellResult | None, defs: Mapping[str, MetricDef]
) -> list[Value]:
    """Flips, token agreement and length drift of ``result`` against ``reference``.

    Only metrics whose comparison metrics are registered in ``defs`` are compared. Each
    value is null with the reason when the reference is missing or its samples do not
    line up (another count, or not 1/0 outcomes).
    """
    mine = {v.name: v for v in result.values}
    theirs = {v.name: v for v in reference.values} if reference is not None else {}
    out: list[Value] = []
    for name, value in mine.items():
        names = flip_names(name)
        if not value.samples or names["changed"] not in defs:
            continue
        out.extend(_flips(value, theirs.get(name), names, reference is not None))
    if TOKENS in mine and "quality.token_agreement" in defs:
        out.extend(_agreement(mine[TOKENS], theirs.get(TOKENS), mine, reference is not None))
    if NATURAL_LENGTH in mine and "quality.length_drift_tokens" in defs:
        out.append(_drift(mine[NATURAL_LENGTH], theirs.get(NATURAL_LENGTH), reference is not None))
    return out


def _no_reference(has_reference: bool, name: str) -> str:
    if not has_reference:
        return "no ok cell of the reference stack for this model, device and workload in this run"
    return f"the reference cell has no samples of {name}"


def _flips(
    value: Value, base: Value | None, names: Mapping[str, str], has_reference: bool
) -> list[Value]:
    def null(why: str) -> list[Value]:
        return [Value(names[k], None, "fraction", reason=why) for k in FLIP_KINDS]

    if base is None or not base.samples:
        return null(_no_reference(has_reference, value.name))
    if len(base.samples) != len(value.samples):
        return null(
            f"{value.name}: {len(value.samples)} samples here, {len(base.samples)} on the "
            "reference: not the same samples"
        )
    if not _outcomes(value.samples) or not _outcomes(base.samples):
        return null(f"{value.name}: samples are not 1/0 outcomes")
    pairs = list(zip(base.samples, value.samples, strict=True))
    n = len(pairs)
    lost = sum(1 for b, v in pairs if b == 1.0 and v == 0.0)
    won = sum(1 for b, v in pairs if b == 0.0 and v == 1.0)
    source = f"vs reference {value.name}"
    return [
        Value(names["right_to_wrong"], lost / n, "fraction", n=n, source=source),
        Value(names["wrong_to_right"], won / n, "fraction", n=n, source=source),
        Value(names["changed"], (lost + won) / n, "fraction", n=n, source=source),
    ]


def _outcomes(samples: Sequence[float]) -> bool:
    return all(x in (0.0, 1.0) for x in samples)


def _rows(value: Value, mine: Mapping[str, Value]) -> int:
    """Rows of the generation: one natural length per row is stored beside the tokens."""
    lengths = mine.get(NATURAL_LENGTH)
    return len(lengths.samples) if lengths is not None and lengths.samples else 1


def _agreement(
    value: Value, base: Value | None, mine: Mapping[str, Value], has_reference: bool
) -> list[Value]:
    names = ("quality.token_agreement", "quality.prefix_agreement")
    if base is None or not base.samples:
        why = _no_reference(has_reference, value.name)
        return [Value(n, None, "fraction", reason=why) for n in names]
    if len(base.samples) != len(value.samples):
        why = f"{len(value.samples)} generated tokens here, {len(base.samples)} on the reference"
        return [Value(n, None, "fraction", reason=why) for n in names]
    rows = _rows(value, mine)
    steps = len(value.samples) // rows
    same = [a == b for a, b in zip(value.samples, base.samples, strict=True)]
    prefixes = []
    for r in range(rows):
        row = same[r * steps : (r + 1) * steps]
        prefixes.append(next((i for i, ok in enumerate(row) if not ok), steps) / steps)
    source = f"vs reference {value.name}"
    return [
        Value(names[0], sum(same) / len(same), "fraction", n=len(same), source=source),
        Value(
            names[1],
            sum(prefixes) / rows,
            "fraction",
            n=rows,
            source=source,
            samples=tuple(prefixes),
        ),
    ]


def _drift(value: Value, base: Value | None, has_reference: bool) -> Value:
    name = "quality.length_drift_tokens"
    if base is None or not base.samples:
        return Value(name, None, "tokens", reason=_no_reference(has_reference, value.name))
    if len(base.samples) != len(value.samples):
        why = f"{len(value.samples)} rows here, {len(base.samples)} on the reference"
        return Value(name, None, "tokens", reason=why)
    drift = tuple(a - b for a, b in zip(value.samples, base.samples, strict=True))
    return Value(
        name,
        sum(drift) / len(drift),
        "tokens",
        n=len(drift),
        source=f"vs reference {value.name}",
        samples=drift,
    )
