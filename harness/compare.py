"""Regression comparison: did the candidate's change make a cell faster, smaller or worse?

Pure functions over the frames of two runs (``Side``: the store's cells, long-format metrics,
samples and fingerprints); nothing here opens a database, so every rule is tested on
hand-made frames. ``harness.compare_sides`` loads sides from a store, ``harness.compare_render``
prints the result, ``bench compare`` (``harness.cli.compare``) ties them together.

Matching (``match_cells``): cells pair up by model, device, stack label and workload label;
a pair then matches when every identity field of their fingerprints that both record is
equal (``harness.fingerprint.IDENTITY``: model id and dtype, workload parameters, the
prompts' token ids, the texts' sha256, the stack's configs, the accuracy tasks, the device).
A pair whose identity differs is listed as not comparable, with the field that differs (a
different prompt text: "the texts' content" and "the prompts' token ids"). Everything else
that differs (software versions, model files, GPU, policy, git commit) is *named*: the
differences shared by every pair head the comparison ("transformers 5.23.0 → 5.24.0").

Rows (``compare``): for every matched pair and metric, base, candidate, their ratio with a
95% interval and a verdict (``harness.compare_stats``). Metrics of the ``stats.`` family
(CVs, repeats, flags) describe the measurement, not the system, and are left out unless
asked for by name.

Other runs of the same cells on the same software (``history``) tell how far a value
moves from run to run (:func:`spreads`). Every cell's worker timed a fixed workload
(``harness.calibration``): the ratio of the two sides' calibrations is reported, and on
request (``Options.machine_relative``) divides every time's ratio and multiplies every
rate's. Then the rows beyond the band at 95% are judged again at the level that keeps the
false coverage rate over all rows with a noisy interval at 5% (``compare_stats.fcr_level``;
``Options.uncorrected`` leaves it out).
"""

from __future__ import annotations

import fnmatch
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from harness.calibration import speed
from harness.compare_stats import (
    LEVEL,
    RESAMPLES,
    Measured,
    Ratio,
    Verdict,
    fcr_level,
    is_exact,
    pair_seed,
    ratio_ci,
    relative,
    repeats_to_settle,
    runs_ci,
    verdict,
)
from harness.errors import BenchError
from harness.fingerprint import canonical, flatten, identity, is_identity
from harness.results import MetricDef

#: Default half-width of the unchanged band, as a fraction.
THRESHOLD = 0.02
#: Cell columns that pair cells up (``Store.cells_frame`` identity columns).
LABELS: tuple[str, ...] = ("model", "device", "technique", "workload")
#: Metric families left out of the rows unless a ``--metric`` pattern names them.
HIDDEN_PREFIXES: tuple[str, ...] = ("stats.",)
#: Fingerprint fields never named as differences: where a file sits is not what it holds,
#: and the machine's load (``host``) differs every time (``Comparison.load`` sums it up).
UNNAMED: frozenset[str] = frozenset({"version", "model.path"})
UNNAMED_PREFIXES: tuple[str, ...] = ("model.files", "host.")
#: Units judged relative to the machine's calibration, with the power of its ratio that
#: divides theirs: a time grows with a slower machine, a rate shrinks.
MACHINE_POWER: Mapping[str, int] = {"s": 1, "ms": 1, "tok/s": -1, "FLOP/s": -1}
#: Software the calibration itself runs on: when it differs, timings stay as measured.
CALIBRATION_SOFTWARE: tuple[str, ...] = ("software.python",)
#: Times measured once (one-time costs) below this, s, are not judged: on a shared machine a
#: no-op ``prepare`` took 0.01-0.5 ms from run to run.
RESOLUTION_S = 1e-3
#: Methods whose intervals come from noise, so that some exceed the band by chance.
NOISY: frozenset[str] = frozenset({"runs", "bootstrap", "intervals"})

_READABLE: dict[str, str] = {
    "model.id": "the model",
    "model.dtype": "the model's dtype",
    "model.trust_remote_code": "trust_remote_code",
    "model.sha256": "model files",
    "model.commit": "model hub commit",
    "model.revision": "model revision",
    "workload.name": "the workload",
    "workload.params": "the workload's parameters",
    "workload.inputs": "the prompts' token ids",
    "workload.texts": "the texts' content",
    "workload.tokenizer.sha256": "tokenizer",
    "accuracy": "the accuracy tasks",
    "accuracy_inputs": "the accuracy tasks' inputs",
    "stack": "the stack's configs",
    "device.name": "the device",
    "device.gpu": "GPU",
    "device.capability": "GPU compute capability",
    "device.cpu": "CPU",
    "software.git_commit": "git commit",
    "machine": "machine",
}
_GATE = re.compile(r"^\s*(?P<metric>[^:\s]+)\s*:\s*(?P<sign>[+-]?)(?P<number>\d+(\.\d+)?)\s*%\s*$")


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Side:
    """One side of a comparison: one run's results.

    Attributes:
        label: how the side is named in the output (``run 3 (smoke)``).
        run: the run's record (``Store.run_records`` row); may be empty.
        cells: ``Store.cells_frame(run_id=...)``; its :data:`LABELS`, ``cell_key`` and
            ``status``/``reason`` columns are used.
        metrics: ``Store.metrics_frame(run_id=...)`` (long format).
        samples: ``Store.samples_frame(run_id=...)``.
        fingerprints: ``Store.fingerprints(run_id=...)``.
        replicas: the side's other runs, when it names several (``4,3``): each run is one
            sample of the noise between runs, so values that are not exact are compared by
            their stored value per run (``runs`` in :mod:`harness.compare_stats`).
    """

    label: str
    run: Mapping[str, Any]
    cells: pd.DataFrame
    metrics: pd.DataFrame
    samples: pd.DataFrame
    fingerprints: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    replicas: tuple[Side, ...] = ()


@dataclass(frozen=True)
class Gate:
    """One ``--fail-on`` entry: ``METRIC:+X%`` (the metric may be a glob: ``latency.*``).

    Attributes:
        pattern: the metric name or glob.
        threshold: X as a fraction.
        sign: +1 when an increase is the regression, -1 for a decrease, 0 when unsigned
            (the metric's worse direction).
    """

    pattern: str
    threshold: float
    sign: int

    def matches(self, metric: str) -> bool:
        return fnmatch.fnmatchcase(metric, self.pattern)


@dataclass(frozen=True)
class Options:
    """How to compare.

    Attributes:
        threshold: the unchanged band's half-width for metrics no gate names (fraction).
        gates: ``--fail-on`` entries; a gate's threshold is its metrics' band.
        metrics: only metrics matching one of these names or globs; empty: all but the
            :data:`HIDDEN_PREFIXES` families.
        across_devices: pair cells measured on different devices (the device is named).
        resamples: bootstrap resamples per ratio.
        seed: the bootstrap seed.
        machine_relative: judge timings relative to the machine's calibration, not as
            measured.
        uncorrected: judge every row by its own 95% interval, without the false
            coverage-rate correction over the rows.
    """

    threshold: float = THRESHOLD
    gates: tuple[Gate, ...] = ()
    metrics: tuple[str, ...] = ()
    across_devices: bool = False
    resamples: int = RESAMPLES
    seed: int = 0
    machine_relative: bool = False
    uncorrected: bool = False

    def gate_for(self, metric: str) -> Gate | None:
        return next((g for g in self.gates if g.matches(metric)), None)

    def threshold_for(self, metric: str) -> float:
        gate = self.gate_for(metric)
        return gate.threshold if gate is not None else self.threshold

    def shows(self, metric: str) -> bool:
        if self.metrics:
            return any(fnmatch.fnmatchcase(metric, p) for p in self.metrics)
        return not metric.startswith(HIDDEN_PREFIXES)


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Difference:
    """A fingerprint field (or run fact) that differs between base and candidate."""

    field: str
    base: Any
    candidate: Any

    def __str__(self) -> str:
        return f"{readable(self.field)} {_short(self.base)} → {_short(self.candidate)}"


@dataclass(frozen=True)
class CellPair:
    """A cell of each side with the same labels (:data:`LABELS`)."""

    model: str
    device: str
    technique: str
    workload: str
    base_key: str
    candidate_key: str
    base_status: str
    candidate_status: str
    base_reason: str | None = None
    candidate_reason: str | None = None
    candidate_device: str | None = None  # differs from ``device`` only across devices
    differences: tuple[Difference, ...] = ()  # named fields that differ (not identity)
    mismatch: tuple[Difference, ...] = ()  # identity fields that differ: not comparable

    @property
    def label(self) -> str:
        return f"{self.model} · {self.device} · {self.technique} · {self.workload}"


@dataclass(frozen=True)
class OneSided:
    """A cell found on one side only."""

    side: str  # "base" or "candidate"
    model: str
    device: str
    technique: str
    workload: str
    status: str


@dataclass(frozen=True)
class Row:
    """One metric of one matched cell pair."""

    pair: CellPair
    metric: str
    unit: str
    higher_is_better: bool | None
    base: Measured | None
    candidate: Measured | None
    ratio: Ratio | None
    threshold: float
    verdict: Verdict
    repeats_needed: int | None = None  # more repeats per side that would settle it
    note: str | None = None
    level: float = LEVEL  # the interval's coverage: above 95% when corrected (fcr_level)
    relative: bool = False  # the ratio is relative to the machine's (MACHINE_POWER)


@dataclass(frozen=True)
class Comparison:
    """Everything ``bench compare`` reports.

    Attributes:
        base: the base side's label; ``candidate`` likewise.
        differences: named differences shared by every matched pair, and run facts.
        rows: one per matched pair and metric, ordered by cell then metric.
        pairs: the matched pairs (comparable, both ok or not).
        mismatched: pairs with the same labels whose identity differs.
        only_base: cells found in the base only; ``only_candidate`` likewise.
        options: how it was compared.
        load: the median 1-minute load average of the machine over each side's cells
            (None where not recorded): other work running beside a side shows here.
        cores: the machine's CPU count (the candidate's), to read the load against.
        machine: the ratio of the two sides' calibrations (candidate / base, seconds:
            above 1 the candidate's machine was slower) with its 95% interval, over every
            cell that recorded one; None without.
        relative: timings were judged relative to ``machine``.
        corrected: (rows beyond the band at 95%, rows with a noisy interval, the level
            their intervals were widened to), when the correction widened any.
        history: how many other runs were grouped to tell the spread between runs
            (:func:`spreads`: those in groups of two or more runs of the same software).
    """

    base: str
    candidate: str
    differences: tuple[Difference, ...]
    rows: tuple[Row, ...]
    pairs: tuple[CellPair, ...]
    mismatched: tuple[CellPair, ...]
    only_base: tuple[OneSided, ...]
    only_candidate: tuple[OneSided, ...]
    options: Options
    load: tuple[float | None, float | None] = (None, None)
    cores: int | None = None
    machine: Ratio | None = None
    relative: bool = False
    corrected: tuple[int, int, float] | None = None
    history: int = 0

    def counts(self) -> dict[str, int]:
        """Rows per verdict, in a fixed order."""
        order = ("regressed", "improved", "unchanged", "inconclusive", "changed", "missing")
        return {v: sum(r.verdict == v for r in self.rows) for v in order}

    @property
    def broken(self) -> tuple[CellPair, ...]:
        """Pairs that were ok in the base and are no longer ok (skipped aside)."""
        return tuple(
            p
            for p in self.pairs
            if p.base_status == "ok" and p.candidate_status not in ("ok", "skipped")
        )

    def failures(self) -> list[Row]:
        """Rows of gated metrics that regressed beyond their gate's threshold."""
        return [
            r for r in self.rows if self.options.gate_for(r.metric) and r.verdict == "regressed"
        ]


def readable(path: str) -> str:
    """A fingerprint field's readable name: ``software.transformers`` → ``transformers``."""
    if path in _READABLE:
        return _READABLE[path]
    if path.startswith("workload.inputs."):
        return _READABLE["workload.inputs"]
    if path.startswith("software.plugins."):
        return f"plugin {path.removeprefix('software.plugins.')}"
    if path.startswith("software."):
        return path.removeprefix("software.")
    return path


def _short(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    if re.fullmatch(r"(sha256:|sampled-sha256:)?[0-9a-f]{40,64}", text):
        return text.split(":")[-1][:10]
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- --fail-on


def parse_fail_on(text: str, defs: Mapping[str, MetricDef], known: Iterable[str]) -> list[Gate]:
    """Parse ``METRIC:+X%,METRIC:-Y%,...`` into gates.

    A sign says which change is the regression (``+``: an increase); it must agree with a
    registered metric's direction. Unsigned means the metric's worse direction.

    Args:
        text: the option's value.
        defs: registered metric definitions (directions).
        known: every metric name the two sides hold, so a misspelt name is refused.

    Raises:
        BenchError: a malformed entry, an unknown metric or a sign against its direction.
    """
    names = set(defs) | set(known)
    gates = []
    for entry in [e for e in text.split(",") if e.strip()]:
        found = _GATE.match(entry)
        if not found:
            raise BenchError(
                f"--fail-on: {entry.strip()!r} is not METRIC:+X% (for example "
                "'latency.tpot_s:+5%,memory.peak_alloc_bytes:+1%')."
            )
        pattern, sign = found["metric"], {"+": 1, "-": -1, "": 0}[found["sign"]]
        matched = sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))
        if not matched:
            raise BenchError(f"--fail-on: unknown metric {pattern!r}.{_suggest(pattern, names)}")
        for name in matched:
            d = defs.get(name)
            if d is not None and sign and (sign > 0) == d.higher_is_better:
                better, change, worse = (
                    ("higher", "a decrease", "-")
                    if d.higher_is_better
                    else ("lower", "an increase", "+")
                )
                raise BenchError(
                    f"--fail-on: {name} is {better}-is-better, so its regression is {change}: "
                    f"write {name}:{worse}{found['number']}%."
                )
        gates.append(Gate(pattern, float(found["number"]) / 100.0, sign))
    return gates


def _suggest(name: str, names: Iterable[str]) -> str:
    import difflib

    names = sorted(names)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    family = sorted(n for n in names if n.split(".")[0] == name.split(".")[0])
    if close:
        return f" Did you mean {close[0]!r}? Names carry their unit: _s, _bytes, _tok_s."
    if family:
        return f" Known in {name.split('.')[0]}.*: {', '.join(family[:8])}."
    return " 'bench plugins' lists every metric; docs/metrics.md defines them."


# ---------------------------------------------------------------- matching


def match_cells(
    base: Side, candidate: Side, *, across_devices: bool = False
) -> tuple[list[CellPair], list[CellPair], list[OneSided], list[OneSided]]:
    """Pair the two sides' cells (module docstring).

    Returns:
        (matched, mismatched, only in base, only in candidate); matched and mismatched in
        the base's cell order.
    """
    on = _label_columns(Options(across_devices=across_devices))
    b_rows = _by_label(base.cells, on)
    c_rows = _by_label(candidate.cells, on)
    matched: list[CellPair] = []
    mismatched: list[CellPair] = []
    for label, b in b_rows.items():
        c = c_rows.get(label)
        if c is None:
            continue
        fb = base.fingerprints.get(b["cell_key"]) or {}
        fc = candidate.fingerprints.get(c["cell_key"]) or {}
        pair = CellPair(
            model=str(b["model"]),
            device=str(b["device"]),
            technique=str(b["technique"]),
            workload=str(b["workload"]),
            base_key=str(b["cell_key"]),
            candidate_key=str(c["cell_key"]),
            base_status=str(b["status"]),
            candidate_status=str(c["status"]),
            base_reason=_text(b.get("reason")),
            candidate_reason=_text(c.get("reason")),
            candidate_device=str(c["device"]),
            differences=tuple(_named(fb, fc, across_devices)),
            mismatch=tuple(_identity_differences(fb, fc, across_devices)),
        )
        (mismatched if pair.mismatch else matched).append(pair)
    only_base = [_one_sided("base", r) for k, r in b_rows.items() if k not in c_rows]
    only_candidate = [_one_sided("candidate", r) for k, r in c_rows.items() if k not in b_rows]
    return matched, mismatched, only_base, only_candidate


def _by_label(cells: pd.DataFrame, on: Sequence[str]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The cells by label; a label seen twice keeps the later cell."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in cells.to_dict("records"):
        out[tuple(str(row[c]) for c in on)] = row
    return out


def _one_sided(side: str, row: Mapping[str, Any]) -> OneSided:
    return OneSided(
        side,
        str(row["model"]),
        str(row["device"]),
        str(row["technique"]),
        str(row["workload"]),
        str(row["status"]),
    )


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _identity_differences(
    base: Mapping[str, Any], candidate: Mapping[str, Any], across_devices: bool
) -> list[Difference]:
    """Identity fields both fingerprints record and that differ."""
    ib, ic = identity(base), identity(candidate)
    out = []
    for path in ib.keys() & ic.keys():
        if across_devices and path == "device.name":
            continue
        if canonical(ib[path]) != canonical(ic[path]):
            out.append(Difference(path, canonical(ib[path]), canonical(ic[path])))
    return sorted(out, key=lambda d: d.field)


def _named(
    base: Mapping[str, Any], candidate: Mapping[str, Any], across_devices: bool
) -> list[Difference]:
    """Non-identity fields (and, across devices, the device) that differ.

    A field recorded on one side only counts (a library installed since) unless one side
    has only the suite's part of the fingerprint (a cell that timed out before the worker
    reported): then only the fields both record.
    """
    if not base or not candidate:
        return []
    fb, fc = flatten(base), flatten(candidate)
    partial = ("software" in base) != ("software" in candidate)
    paths = fb.keys() & fc.keys() if partial else fb.keys() | fc.keys()
    out = []
    for path in sorted(paths):
        if path in UNNAMED or path.startswith(UNNAMED_PREFIXES):
            continue
        if is_identity(path) and not (across_devices and path == "device.name"):
            continue
        if fb.get(path) != fc.get(path):
            out.append(Difference(path, fb.get(path), fc.get(path)))
    return out


def run_differences(base: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[Difference]:
    """What differs between two run records: machine, git commit, library versions.

    The environment is flattened under ``software`` like a fingerprint's software section,
    so a field both record is named once; for cells stored before fingerprints existed this
    is all there is.
    """
    out = []
    if base.get("machine") != candidate.get("machine"):
        out.append(Difference("machine", base.get("machine"), candidate.get("machine")))
    if base.get("git_commit") != candidate.get("git_commit"):
        out.append(
            Difference("software.git_commit", base.get("git_commit"), candidate.get("git_commit"))
        )
    env_b = flatten({"software": base.get("environment") or {}})
    env_c = flatten({"software": candidate.get("environment") or {}})
    for path in sorted(env_b.keys() | env_c.keys()):
        if env_b.get(path) != env_c.get(path):
            out.append(Difference(path, env_b.get(path), env_c.get(path)))
    return out


# ---------------------------------------------------------------- rows


def compare(
    base: Side,
    candidate: Side,
    defs: Mapping[str, MetricDef],
    options: Options | None = None,
    history: Sequence[Side] = (),
) -> Comparison:
    """Compare two sides metric by metric (module docstring).

    Args:
        history: other runs of the same cells on the same machine, which tell how far a
            value moves from run to run (:func:`spreads`).
    """
    options = options or Options()
    matched, mismatched, only_base, only_candidate = match_cells(
        base, candidate, across_devices=options.across_devices
    )
    shared = _shared_differences(matched)
    # What the runs recorded (machine, git commit, environment) and no cell's fingerprint
    # already says: all there is for cells stored before fingerprints.
    seen = {d.field for p in matched for d in p.differences}
    shared += [d for d in run_differences(base.run, candidate.run) if d.field not in seen]
    common = {_difference_key(d) for d in shared}
    pairs = [
        replace(p, differences=tuple(d for d in p.differences if _difference_key(d) not in common))
        for p in matched
    ]
    b_values, c_values = _values(base), _values(candidate)
    b_runs, c_runs = _replica_values(base, options), _replica_values(candidate, options)
    spread, told = spreads(base, history, options)
    speeds = calibrations(base), calibrations(candidate)
    machine = runs_ci(*speeds)
    judged_relative = machine is not None and options.machine_relative
    judged_relative &= not any(d.field in CALIBRATION_SOFTWARE for d in shared)
    inputs = []
    for pair in pairs:
        b_metrics = b_values.get(pair.base_key, {})
        c_metrics = c_values.get(pair.candidate_key, {})
        label = tuple(str(getattr(pair, c)) for c in _label_columns(options))
        for metric in sorted(b_metrics.keys() | c_metrics.keys()):
            if options.shows(metric):
                b_others = b_runs.get((label, metric), ()) if base.replicas else None
                c_others = c_runs.get((label, metric), ()) if candidate.replicas else None
                found = b_metrics.get(metric), c_metrics.get(metric)
                between = spread.get((label, metric), (0.0, 0))
                inputs.append((pair, metric, *found, b_others, c_others, between))

    def rows_at(level: float, indexes: Iterable[int]) -> dict[int, Row | None]:
        at = runs_ci(*speeds, level=level) if judged_relative else None
        return {i: _row(*inputs[i], defs, options, level=level, machine=at) for i in indexes}

    rows = rows_at(LEVEL, range(len(inputs)))
    corrected = None
    judged = {i: r for i, r in rows.items() if r is not None}
    noisy = [i for i, r in judged.items() if r.ratio and r.ratio.method in NOISY]
    beyond = [i for i in noisy if judged[i].verdict in ("improved", "regressed", "changed")]
    level = fcr_level(len(beyond), len(noisy))
    if not options.uncorrected and level > LEVEL:
        rows.update(rows_at(level, beyond))
        corrected = (len(beyond), len(noisy), level)
    return Comparison(
        base=base.label,
        candidate=candidate.label,
        differences=tuple(shared),
        rows=tuple(r for r in rows.values() if r is not None),
        pairs=tuple(pairs),
        mismatched=tuple(mismatched),
        only_base=tuple(only_base),
        only_candidate=tuple(only_candidate),
        options=options,
        load=(_median_load(base), _median_load(candidate)),
        cores=_cores(candidate),
        machine=machine,
        relative=judged_relative,
        corrected=corrected,
        history=told,
    )


def spreads(
    side: Side, history: Sequence[Side], options: Options
) -> tuple[dict[tuple[tuple[str, ...], str], tuple[float, int]], int]:
    """What other runs say of how far each value moves from run to run.

    The runs are grouped by their software (git commit and environment): within a group
    nothing but the run changed, so the deviations of its log values from the group's mean
    are noise between runs. Only the cells whose identity is ``side``'s own count.

    Returns:
        (cell label, metric) → (the sum of the squared deviations, degrees of freedom: the
        values less one per group), and how many runs were in groups of two or more.
    """
    groups: dict[str, list[Side]] = {}
    for run in history:
        software = {"git": run.run.get("git_commit"), "env": run.run.get("environment")}
        groups.setdefault(canonical(software), []).append(run)
    out: dict[tuple[tuple[str, ...], str], tuple[float, int]] = {}
    told = 0
    for runs in groups.values():
        if len(runs) < 2:
            continue
        told += len(runs)
        for row, values in _replica_values(replace(side, replicas=tuple(runs)), options).items():
            logs = [math.log(v) for v in values if v > 0]
            if len(logs) >= 2:
                mean = statistics.fmean(logs)
                squares, df = out.get(row, (0.0, 0))
                out[row] = (squares + sum((x - mean) ** 2 for x in logs), df + len(logs) - 1)
    return out, told


def calibrations(side: Side) -> list[float]:
    """The calibrated speed (``harness.calibration.speed``, seconds) of every cell of the
    side and of its other runs that recorded one."""
    out = []
    for run in (side, *side.replicas):
        for fingerprint in run.fingerprints.values():
            found = speed(((fingerprint or {}).get("host") or {}).get("calibration"))
            if found is not None:
                out.append(found)
    return out


def _host_values(side: Side, key: str) -> list[float]:
    values = []
    for fingerprint in side.fingerprints.values():
        host = (fingerprint or {}).get("host") or {}
        if isinstance(host.get(key), int | float):
            values.append(float(host[key]))
    return values


def _median_load(side: Side) -> float | None:
    loads = _host_values(side, "load_1m")
    return statistics.median(loads) if loads else None


def _cores(side: Side) -> int | None:
    cores = _host_values(side, "cpus")
    return int(max(cores)) if cores else None


def _difference_key(d: Difference) -> tuple[str, str, str]:
    return d.field, canonical(d.base), canonical(d.candidate)


def _shared_differences(pairs: Sequence[CellPair]) -> list[Difference]:
    """Differences every matched pair has, with the same values on both sides."""
    if not pairs:
        return []
    rest = [{_difference_key(d) for d in p.differences} for p in pairs[1:]]
    return [d for d in pairs[0].differences if all(_difference_key(d) in r for r in rest)]


def _values(side: Side) -> dict[str, dict[str, tuple[Mapping[str, Any], tuple[float, ...]]]]:
    """cell key → metric → (its long-format row, its samples)."""
    samples: dict[tuple[str, str], list[float]] = {}
    for row in side.samples.itertuples(index=False):
        samples.setdefault((str(row.cell_key), str(row.name)), []).append(float(row.value))
    out: dict[str, dict[str, tuple[Mapping[str, Any], tuple[float, ...]]]] = {}
    for record in side.metrics.to_dict("records"):
        key, name = str(record["cell_key"]), str(record["name"])
        out.setdefault(key, {})[name] = (record, tuple(samples.get((key, name), ())))
    return out


def _label_columns(options: Options) -> list[str]:
    """The columns cells pair up by (:data:`LABELS`, less the device across devices)."""
    return [c for c in LABELS if not (options.across_devices and c == "device")]


def _replica_values(side: Side, options: Options) -> dict[tuple[tuple[str, ...], str], list[float]]:
    """(cell label, metric) → the stored value of each of the side's other runs: its ok cells
    whose identity is the side's own cell's (another prompt text is not another sample)."""
    on = _label_columns(options)
    own = {
        label: side.fingerprints.get(cell["cell_key"]) or {}
        for label, cell in _by_label(side.cells, on).items()
    }
    out: dict[tuple[tuple[str, ...], str], list[float]] = {}
    for replica in side.replicas:
        values = _values(replica)
        for label, cell in _by_label(replica.cells, on).items():
            theirs = replica.fingerprints.get(cell["cell_key"]) or {}
            if cell["status"] != "ok" or label not in own:
                continue
            if _identity_differences(own[label], theirs, options.across_devices):
                continue
            for metric, (record, _) in values.get(str(cell["cell_key"]), {}).items():
                value = _float(record.get("value"))
                if math.isfinite(value):
                    out.setdefault((label, metric), []).append(value)
    return out


def _measured(
    metric: str,
    found: tuple[Mapping[str, Any], tuple[float, ...]] | None,
    others: Sequence[float] | None = None,
) -> tuple[Measured | None, str, str | None]:
    """The side's value as :class:`Measured` (None when null), its unit and its reason."""
    if found is None:
        return None, "", "not measured"
    record, samples = found
    unit = str(record.get("unit") or "")
    value = _float(record.get("value"))
    if math.isnan(value):
        return None, unit, _text(record.get("reason")) or "null"
    low, high = _float(record.get("ci_low")), _float(record.get("ci_high"))
    n = int(record.get("n") or 1)
    has_interval = math.isfinite(low) and math.isfinite(high)
    exact = is_exact(metric, unit, n, has_interval, len(samples))
    runs = (value, *others) if others is not None else ()
    if len(runs) > 1 and not exact and min(runs) > 0:
        # what the ratio of several runs a side compares: their geometric mean
        value, low, high = statistics.geometric_mean(runs), math.nan, math.nan
    return Measured(value, low, high, n, samples, exact, runs), unit, None


def _float(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _row(
    pair: CellPair,
    metric: str,
    b_found: tuple[Mapping[str, Any], tuple[float, ...]] | None,
    c_found: tuple[Mapping[str, Any], tuple[float, ...]] | None,
    b_others: Sequence[float] | None,
    c_others: Sequence[float] | None,
    between: tuple[float, int],
    defs: Mapping[str, MetricDef],
    options: Options,
    *,
    level: float = LEVEL,
    machine: Ratio | None = None,
) -> Row | None:
    """The row of one metric of one pair; its interval at ``level`` (with the spread
    ``between`` runs that other runs told), timings relative to the ``machine`` ratio when
    given (:data:`MACHINE_POWER`)."""
    b, b_unit, b_why = _measured(metric, b_found, b_others)
    c, c_unit, c_why = _measured(metric, c_found, c_others)
    unit = b_unit or c_unit or (defs[metric].unit if metric in defs else "")
    gate = options.gate_for(metric)
    direction: bool | None = defs[metric].higher_is_better if metric in defs else None
    if direction is None and gate is not None and gate.sign:
        direction = gate.sign < 0  # "+X%" on an unregistered metric: an increase is worse
    threshold = options.threshold_for(metric)
    if b is None and c is None:
        return None
    if b is None or c is None:
        why = f"base: {b_why}" if b is None else f"candidate: {c_why}"
        return Row(
            pair,
            metric,
            unit,
            direction,
            base=b,
            candidate=c,
            ratio=None,
            threshold=threshold,
            verdict="missing",
            note=why,
        )
    seed = pair_seed(options.seed, pair.base_key, pair.candidate_key, metric)
    ratio = ratio_ci(b, c, resamples=options.resamples, seed=seed, level=level, spread=between)
    brief = unit == "s" and max(b.value, c.value) < RESOLUTION_S and not (b.samples or c.samples)
    if brief:  # a single sub-millisecond timing: the scheduler's jitter, not the code's
        ratio = replace(ratio, low=math.nan, high=math.nan, method="none")
    power = MACHINE_POWER.get(unit)
    judged_relative = False
    if machine is not None and power is not None and ratio.method != "exact":
        ratio, judged_relative = relative(ratio, machine, power), True
    judged = verdict(ratio, threshold, direction)
    note = None
    more = None
    if judged == "inconclusive":
        more = repeats_to_settle(ratio, threshold, level)
        if brief:
            note = "under 1 ms, timed once"
        elif ratio.method == "none":
            note = "no interval" if math.isfinite(ratio.ratio) else "ratio undefined"
        elif more is None:
            note = "the ratio sits on the threshold"
    return Row(
        pair,
        metric,
        unit,
        direction,
        base=b,
        candidate=c,
        ratio=ratio,
        threshold=threshold,
        verdict=judged,
        repeats_needed=more,
        note=note,
        level=level,
        relative=judged_relative,
    )
