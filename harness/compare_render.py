"""``bench compare`` output: a terminal table, JSON, or Markdown for a pull-request comment."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from harness.compare import CellPair, Comparison, Difference, OneSided, Row, readable
from harness.compare_stats import LEVEL, QUANTILES, Measured

#: Verdicts in the order tables list them (worst news first).
ORDER = ("regressed", "missing", "inconclusive", "changed", "improved", "unchanged")
_STYLE = {
    "regressed": "bold red",
    "improved": "green",
    "unchanged": "dim",
    "inconclusive": "yellow",
    "changed": "magenta",
    "missing": "red",
}
_MARK = {
    "regressed": "🔴",
    "improved": "🟢",
    "unchanged": "⚪",
    "inconclusive": "🟡",
    "changed": "🟣",
    "missing": "⚫",
}


# ---------------------------------------------------------------- numbers


def format_value(value: float | None, unit: str) -> str:
    """A value in a readable unit: seconds as ms below 1 s, bytes as MiB or GiB."""
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "s":
        return f"{value * 1e3:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    if unit == "bytes":
        if abs(value) >= 10 * 2**30:
            return f"{value / 2**30:.2f} GiB"
        return f"{value / 2**20:.1f} MiB"
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit and unit not in ("ratio", "fraction", "flag") else text


def format_ratio(row: Row) -> tuple[str, str]:
    """(ratio, its interval) as text: ``1.012×`` and ``[0.981, 1.049]``."""
    ratio = row.ratio
    if ratio is None or not math.isfinite(ratio.ratio):
        return "-", "-"
    point = f"{ratio.ratio:.3f}×"
    if not (math.isfinite(ratio.low) and math.isfinite(ratio.high)):
        return point, "none"
    if ratio.method == "exact":
        return point, "exact"
    interval = f"[{ratio.low:.3f}, {ratio.high:.3f}]"
    if row.level > LEVEL:
        interval += f" at {_percent(row.level)}"  # corrected for the rows beyond the band
    return point, interval


def _ratio_header(comparison: Comparison) -> str:
    """The ratio column's title: with ``÷ speed`` when timings are machine-relative."""
    return "ratio ÷ speed" if comparison.relative else "ratio"


def _percent(level: float) -> str:
    return f"{level * 100:.4g}%"


def format_verdict(row: Row) -> str:
    """The verdict, with the repeats that would settle an inconclusive one, or its note."""
    text: str = row.verdict
    if row.repeats_needed is not None:
        more = "runs" if row.ratio is not None and row.ratio.method == "runs" else "repeats"
        text += f" (≈{row.repeats_needed} more {more})"
    elif row.note:
        text += f" ({row.note})"
    return text


def _value(m: Measured | None, unit: str) -> str:
    return format_value(m.value if m is not None else None, unit)


def _cell(pair: CellPair, short: Mapping[str, str] | None = None) -> str:
    device = pair.device
    if pair.candidate_device and pair.candidate_device != pair.device:
        device = f"{pair.device}→{pair.candidate_device}"
    workload = short.get(pair.workload, pair.workload) if short else pair.workload
    return f"{pair.model} · {device} · {pair.technique} · {workload}"


def short_workloads(labels: Sequence[str]) -> dict[str, str]:
    """Workload labels cut to the parameters that vary among them.

    ``generate(batch_size=1,new_tokens=8)`` and ``generate(batch_size=2,new_tokens=8)``
    become ``batch_size=1`` and ``batch_size=2``; a single label keeps only its name.
    """
    unique = list(dict.fromkeys(labels))
    parsed = {
        label: dict(re.findall(r"(\w+)=(\[[^\]]*\]|\"[^\"]*\"|[^,()]+)", label)) for label in unique
    }
    keys = [
        k
        for k in dict.fromkeys(k for p in parsed.values() for k in p)
        if len({p.get(k) for p in parsed.values()}) > 1
    ]
    out = {}
    for label, params in parsed.items():
        name = label.split("(", 1)[0]
        out[label] = " ".join(f"{k}={params.get(k, '-')}" for k in keys) if keys else name
    return out


def load_line(comparison: Comparison) -> str | None:
    """The machines' median 1-minute load average over each side's cells, when recorded."""
    base, candidate = comparison.load
    if base is None and candidate is None:
        return None
    on = f" on {comparison.cores} cores" if comparison.cores else ""
    text = f"load average {_load(base)} → {_load(candidate)}{on}"
    cores = comparison.cores
    if base is not None and candidate is not None and cores and abs(candidate - base) > cores / 2:
        text += ": other work on the machine changed; timings may differ for that reason"
    return text


def speed_line(comparison: Comparison) -> str | None:
    """The ratio of the two sides' calibrations, and whether timings were judged by it."""
    machine = comparison.machine
    if machine is None:
        return None
    pace = "slower" if machine.ratio > 1 else "faster"
    text = (
        f"calibration ×{machine.ratio:.3f} [{machine.low:.3f}, {machine.high:.3f}] "
        f"(the candidate's machine {pace}); "
    )
    if comparison.relative:
        return text + "timings are judged relative to it (--machine-relative)"
    if comparison.options.machine_relative:
        return text + "timings are judged as measured: the calibration's own software differs"
    return text + "timings are judged as measured (--machine-relative: relative to it)"


def _load(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _one_line(differences: Sequence[Difference]) -> str:
    if not differences:
        return "nothing recorded (same software, model files and machine)"
    return "; ".join(str(d) for d in differences)


def method_line(comparison: Comparison) -> str:
    """How the numbers were made, in one sentence."""
    options = comparison.options
    low, high = QUANTILES
    gates = ", ".join(f"{g.pattern} ±{g.threshold:.3g}" for g in options.gates)
    if comparison.history:
        runs = (
            "values that are not exact: pooled t interval over each side's runs, the spread "
            f"between runs also from {comparison.history} other runs of the same software "
            "(--no-history: without); others: "
        )
    elif any(r.ratio is not None and r.ratio.method == "runs" for r in comparison.rows):
        runs = "values that are not exact: pooled t interval over each side's runs; others: "
    else:
        runs = (
            "one run a side, so the CIs see only the noise within a run, not between runs "
            "(name several runs a side, e.g. 'smoke~1,smoke~2', to see it); "
        )
    corrected = comparison.corrected
    if corrected:
        beyond, noisy, level = corrected
        correction = (
            f" The {beyond} rows beyond the band at 95% (of {noisy} with a noisy interval) "
            f"were judged again at {_percent(level)} (false coverage-rate correction, "
            "Benjamini-Yekutieli; --uncorrected: 95% each)."
        )
    else:
        correction = ""
    return (
        f"ratio = candidate / base; {runs}95% CIs by percentile bootstrap of the stored repeats "
        f"({options.resamples} resamples, seed {options.seed}, {low:.1%}-{high:.1%}), else "
        f"from the stored intervals; unchanged = CI inside ±{options.threshold:.3g}"
        + (f" (gated: {gates})" if gates else "")
        + "."
        + correction
        + " docs/compare.md"
    )


# ---------------------------------------------------------------- table


def print_table(comparison: Comparison, *, only_changes: bool = False) -> None:
    """The comparison as a terminal table with a header and the one-sided cells."""
    from rich.table import Table

    from harness.report import console

    console.print(f"[bold]base[/]       {comparison.base}")
    console.print(f"[bold]candidate[/]  {comparison.candidate}")
    console.print(f"[bold]differs[/]    {_one_line(comparison.differences)}", markup=True)
    load = load_line(comparison)
    if load:
        console.print(f"[bold]machine[/]    {load}", markup=True)
    speed = speed_line(comparison)
    if speed:
        console.print(f"[bold]speed[/]      {speed}", markup=True)
    short = short_workloads([r.pair.workload for r in comparison.rows])
    table = Table(
        "cell", "metric", "base", "candidate", _ratio_header(comparison), "95% CI", "verdict"
    )
    table.columns[0].overflow = "fold"
    last = None
    for row in comparison.rows:
        if only_changes and row.verdict == "unchanged":
            continue
        cell = _cell(row.pair, short)
        ratio, interval = format_ratio(row)
        table.add_row(
            cell if cell != last else "",
            row.metric,
            _value(row.base, row.unit),
            _value(row.candidate, row.unit),
            ratio,
            interval,
            f"[{_STYLE[row.verdict]}]{format_verdict(row)}[/]",
        )
        last = cell
    console.print(table)
    for line in _cell_notes(comparison):
        console.print(line, markup=False)
    counts = ", ".join(f"{n} {v}" for v, n in comparison.counts().items() if n)
    console.print(f"[bold]{counts or 'no metric compared'}[/]")
    console.print(method_line(comparison), markup=False)


def _cell_notes(comparison: Comparison) -> list[str]:
    lines = []
    for pair in comparison.pairs:
        if pair.differences:
            lines.append(f"also differs in {_cell(pair)}: {_one_line(pair.differences)}")
    for pair in comparison.broken:
        lines.append(
            f"no longer ok: {_cell(pair)}: {pair.base_status} → {pair.candidate_status}"
            + (f" ({pair.candidate_reason})" if pair.candidate_reason else "")
        )
    for pair in comparison.mismatched:
        what = ", ".join(sorted({readable(d.field) for d in pair.mismatch}))
        lines.append(f"not comparable: {_cell(pair)}: {what} differ")
    for one in (*comparison.only_base, *comparison.only_candidate):
        lines.append(f"only in {one.side}: {_one_cell(one)}")
    return lines


def _one_cell(one: OneSided) -> str:
    return f"{one.model} · {one.device} · {one.technique} · {one.workload} ({one.status})"


# ---------------------------------------------------------------- JSON


def to_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as a JSON-ready document (NaN as null, times as ISO strings)."""
    options = comparison.options
    document = {
        "base": comparison.base,
        "candidate": comparison.candidate,
        "differences": [_difference(d) for d in comparison.differences],
        "method": {
            "ratio": "candidate / base",
            "confidence": 0.95,
            "bootstrap": {"resamples": options.resamples, "seed": options.seed},
            "threshold": options.threshold,
            "history_runs": comparison.history,
            "corrected": (
                dict(zip(("beyond", "noisy", "level"), comparison.corrected, strict=True))
                if comparison.corrected
                else None
            ),
            "gates": [
                {"metric": g.pattern, "threshold": g.threshold, "sign": g.sign}
                for g in options.gates
            ],
        },
        "counts": comparison.counts(),
        "load_average": {"base": comparison.load[0], "candidate": comparison.load[1]},
        "calibration": (
            {
                "ratio": comparison.machine.ratio,
                "ci_low": comparison.machine.low,
                "ci_high": comparison.machine.high,
                "timings_relative": comparison.relative,
            }
            if comparison.machine
            else None
        ),
        "rows": [_row(r) for r in comparison.rows],
        "failures": [_row(r) for r in comparison.failures()],
        "no_longer_ok": [_pair(p) for p in comparison.broken],
        "not_comparable": [
            {**_pair(p), "differs": [_difference(d) for d in p.mismatch]}
            for p in comparison.mismatched
        ],
        "only_base": [_one(o) for o in comparison.only_base],
        "only_candidate": [_one(o) for o in comparison.only_candidate],
    }
    clean: dict[str, Any] = _clean(document)
    return clean


def _difference(d: Difference) -> dict[str, Any]:
    return {"field": d.field, "name": readable(d.field), "base": d.base, "candidate": d.candidate}


def _pair(pair: CellPair) -> dict[str, Any]:
    return {
        "model": pair.model,
        "device": pair.device,
        "candidate_device": pair.candidate_device,
        "technique": pair.technique,
        "workload": pair.workload,
        "base_key": pair.base_key,
        "candidate_key": pair.candidate_key,
        "base_status": pair.base_status,
        "candidate_status": pair.candidate_status,
        "candidate_reason": pair.candidate_reason,
        "differences": [_difference(d) for d in pair.differences],
    }


def _one(one: OneSided) -> dict[str, Any]:
    return {
        "model": one.model,
        "device": one.device,
        "technique": one.technique,
        "workload": one.workload,
        "status": one.status,
    }


def _measured(m: Measured | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "value": m.value,
        "ci_low": m.low,
        "ci_high": m.high,
        "n": m.n,
        "samples": len(m.samples),
        "exact": m.exact,
        "runs": list(m.runs),
    }


def _row(row: Row) -> dict[str, Any]:
    ratio = row.ratio
    return {
        "model": row.pair.model,
        "device": row.pair.device,
        "technique": row.pair.technique,
        "workload": row.pair.workload,
        "metric": row.metric,
        "unit": row.unit,
        "higher_is_better": row.higher_is_better,
        "base": _measured(row.base),
        "candidate": _measured(row.candidate),
        "ratio": ratio.ratio if ratio else None,
        "ci_low": ratio.low if ratio else None,
        "ci_high": ratio.high if ratio else None,
        "method": ratio.method if ratio else None,
        "level": row.level,
        "relative_to_machine": row.relative,
        "threshold": row.threshold,
        "verdict": row.verdict,
        "repeats_needed": row.repeats_needed,
        "note": row.note,
    }


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# ---------------------------------------------------------------- Markdown


def to_markdown(comparison: Comparison, *, only_changes: bool = False) -> str:
    """The comparison as Markdown for a pull-request comment.

    Every row that is not unchanged is in the main table; the unchanged ones follow in a
    collapsed ``<details>`` block (left out with ``only_changes``).
    """
    counts = comparison.counts()
    summary = " · ".join(f"{_MARK[v]} {n} {v}" for v, n in counts.items() if n)
    lines = [
        f"### bench compare: {comparison.base} → {comparison.candidate}",
        "",
        f"**{summary or 'no metric compared'}**",
        "",
        f"Differs: {_one_line(comparison.differences)}",
        "",
    ]
    load = load_line(comparison)
    if load:
        lines += [f"Machine: {load}", ""]
    speed = speed_line(comparison)
    if speed:
        lines += [f"Speed: {speed}", ""]
    failures = comparison.failures()
    if failures:
        lines += [f"**Failed gates:** {len(failures)} regression(s) beyond --fail-on.", ""]
    changed = [r for r in comparison.rows if r.verdict != "unchanged"]
    same = [r for r in comparison.rows if r.verdict == "unchanged"]
    short = short_workloads([r.pair.workload for r in comparison.rows])
    if changed:
        lines += _md_table(changed, short, _ratio_header(comparison))
    elif comparison.rows:
        lines.append("Every compared metric is unchanged.")
    if same and not only_changes:
        lines += ["", f"<details><summary>{len(same)} unchanged</summary>", ""]
        lines += [*_md_table(same, short, _ratio_header(comparison)), "", "</details>"]
    notes = _cell_notes(comparison)
    if notes:
        lines += ["", *(f"- {_md_escape(n)}" for n in notes)]
    lines += ["", f"<sub>{_md_escape(method_line(comparison))}</sub>", ""]
    return "\n".join(lines)


def _md_table(rows: Sequence[Row], short: Mapping[str, str], ratio: str) -> list[str]:
    out = [
        f"| cell | metric | base | candidate | {ratio} | 95% CI | verdict |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ratio, interval = format_ratio(row)
        cells = [
            _cell(row.pair, short),
            f"`{row.metric}`",
            _value(row.base, row.unit),
            _value(row.candidate, row.unit),
            ratio,
            interval,
            f"{_MARK[row.verdict]} {format_verdict(row)}",
        ]
        out.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")
