"""The two sides of ``bench compare``: which run a side names, and its results as frames.

A side is written as one of (``~N`` after any of them steps N runs back among its matches):

- ``7``, ``#7`` or ``run:7``: run 7;
- ``latest``: the latest run; ``latest~1`` the one before;
- ``smoke`` or ``suite:smoke``: the latest run of the suite named smoke;
- ``commit:4f2a9c1`` (or a bare hex prefix of at least 7 characters): the latest run whose
  git commit starts with it;
- ``transformers=5.24.0``: the latest run whose recorded environment has that entry
  (``bench=0.2.0`` for a version of bench; nested entries match by their last name);
- a version string such as ``0.2.0``: the latest run of that bench version.

Only runs that recorded at least one cell count, except a run named by its id. Several
of these, comma-separated (``smoke,smoke~1,smoke~2``), make a side of several runs of the
same cells: the first is its run, the others its replicas, which let the comparison see
the noise between runs (``harness.compare.Side.replicas``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from harness.compare import Side
from harness.errors import BenchError
from harness.fingerprint import flatten

if TYPE_CHECKING:
    from harness.store import Store

SPEC_HELP = (
    "a run id, a suite name (its latest run; NAME~1 the run before), latest, "
    "commit:SHA, KEY=VALUE (an environment entry, e.g. transformers=5.24.0) or a bench version"
)
_BACK = re.compile(r"^(?P<spec>.+?)~(?P<back>\d+)$")
_RUN_ID = re.compile(r"^(run:|#)?(?P<id>\d+)$")
_HEX = re.compile(r"^[0-9a-f]{7,40}$")


def resolve_run(records: Sequence[Mapping[str, Any]], spec: str, what: str) -> Mapping[str, Any]:
    """The run record (``Store.run_records`` row) that ``spec`` names (module docstring).

    Args:
        records: every run, oldest first.
        spec: the side as written.
        what: ``BASE`` or ``CANDIDATE``, for the message.

    Raises:
        BenchError: nothing matches, or ``~N`` steps past the first match.
    """
    text = spec.strip()
    back = 0
    stepped = _BACK.match(text)
    if stepped:
        text, back = stepped["spec"], int(stepped["back"])
    run_id = _RUN_ID.match(text)
    if run_id and not stepped:
        wanted = int(run_id["id"])
        found = [r for r in records if r["id"] == wanted]
        if not found:
            raise BenchError(f"{what} {spec!r}: no run {wanted}. {_available(records)}")
        return found[0]
    runs = [r for r in records if r.get("cells", 1)]
    matches = _matches(runs, text)
    if not matches:
        raise BenchError(
            f"{what} {spec!r}: no run matches; a side is {SPEC_HELP}. {_available(records)}"
        )
    if back >= len(matches):
        raise BenchError(
            f"{what} {spec!r}: only {len(matches)} run(s) match {text!r}, so ~{back} steps past "
            f"the first. {_available(records)}"
        )
    return matches[-1 - back]


def resolve_runs(
    records: Sequence[Mapping[str, Any]], spec: str, what: str
) -> list[Mapping[str, Any]]:
    """The runs a side names: one per comma-separated part of ``spec`` (:func:`resolve_run`).

    Raises:
        BenchError: a part names nothing, or two parts name the same run.
    """
    found = [resolve_run(records, part, what) for part in spec.split(",")]
    ids = [int(r["id"]) for r in found]
    if len(set(ids)) < len(ids):
        raise BenchError(f"{what} {spec!r} names run {_twice(ids)} twice; name each run once.")
    return found


def _twice(ids: Sequence[int]) -> int:
    return next(i for i in ids if ids.count(i) > 1)


def _matches(runs: Sequence[Mapping[str, Any]], text: str) -> list[Mapping[str, Any]]:
    if text == "latest":
        return list(runs)
    if text.startswith("suite:"):
        return [r for r in runs if r["suite_name"] == text.removeprefix("suite:")]
    if text.startswith("commit:"):
        prefix = text.removeprefix("commit:").lower()
        return [r for r in runs if prefix and str(r.get("git_commit") or "").startswith(prefix)]
    if "=" in text:
        key, value = (part.strip() for part in text.split("=", 1))
        return [r for r in runs if _environment_has(r, key, value)]
    by_suite = [r for r in runs if r["suite_name"] == text]
    if by_suite:
        return by_suite
    if _HEX.match(text.lower()):
        by_commit = [r for r in runs if str(r.get("git_commit") or "").startswith(text.lower())]
        if by_commit:
            return by_commit
    return [
        r for r in runs if r.get("harness_version") == text or _environment_has(r, "bench", text)
    ]


def _environment_has(run: Mapping[str, Any], key: str, value: str) -> bool:
    if key == "bench" and run.get("harness_version") == value:
        return True
    flat = flatten(dict(run.get("environment") or {}))
    return any(
        (path == key or path.endswith("." + key)) and str(found) == value
        for path, found in flat.items()
    )


def _available(records: Sequence[Mapping[str, Any]]) -> str:
    if not records:
        return "The database holds no runs yet: 'bench run --rerun SUITE' twice gives two."
    suites = ", ".join(sorted({str(r["suite_name"]) for r in records}))
    return (
        f"Runs {records[0]['id']}-{records[-1]['id']} of suites {suites}: 'bench runs' lists them."
    )


def describe_run(record: Mapping[str, Any]) -> str:
    """``run 3 (smoke, 2026-12-03 14:05 UTC, git 4f2a9c1)``: a side's label."""
    parts = [str(record.get("suite_name", "?"))]
    started = record.get("started_at")
    if started is not None:
        parts.append(f"{started:%Y-%m-%d %H:%M} UTC")
    commit = record.get("git_commit")
    if commit:
        parts.append(f"git {str(commit)[:7]}")
    if record.get("machine"):
        parts.append(str(record["machine"]))
    return f"run {record['id']} ({', '.join(parts)})"


#: The most recent other runs read for the spread between runs (``history_runs``).
HISTORY = 12


def history_runs(
    records: Sequence[Mapping[str, Any]], named: Sequence[Mapping[str, Any]], limit: int = HISTORY
) -> list[Mapping[str, Any]]:
    """The runs that may tell how far a cell moves from run to run: the ``limit`` latest
    other runs of the named runs' suites on the named runs' machines, with cells, newest
    first (``harness.compare.compare``'s ``history``)."""
    ids = {r["id"] for r in named}
    suites = {r["suite_name"] for r in named}
    machines = {r.get("machine_fingerprint") for r in named}
    others = [
        r
        for r in records
        if r["id"] not in ids
        and r["suite_name"] in suites
        and r.get("machine_fingerprint") in machines
        and r.get("cells", 1)
    ]
    return others[::-1][:limit]


def load_side(store: Store, *records: Mapping[str, Any]) -> Side:
    """The results of the runs ``records`` name, as a :class:`~harness.compare.Side`: the
    first run's, with the others as its replicas."""
    first, *others = records
    replicas = tuple(load_side(store, r) for r in others)
    run_id = int(first["id"])
    label = describe_run(first)
    if others:
        label += " and runs " + ", ".join(str(r["id"]) for r in others)
    return Side(
        label=label,
        run=first,
        cells=store.cells_frame(run_id=run_id),
        metrics=store.metrics_frame(run_id=run_id),
        samples=store.samples_frame(run_id=run_id),
        fingerprints=store.fingerprints(run_id=run_id),
        replicas=replicas,
    )


def load_history(
    store: Store, named: Sequence[Mapping[str, Any]], limit: int = HISTORY
) -> list[Side]:
    """The :func:`history_runs` of the ``named`` runs, loaded from ``store``."""
    return [load_side(store, r) for r in history_runs(store.run_records(), named, limit)]
