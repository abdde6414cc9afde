"""What ``bench check`` validates beyond the suite file; ``bench run`` calls the same.

:func:`preflight` runs after the suite has loaded (schema, names, parameters, matrix) and
before anything is written or loaded, so a suite that ``bench check`` refuses never starts
a run:

- every model id resolves to a model source whose ``check`` passes (a local folder that
  does not exist, an unknown built-in, ...);
- every technique's config fits every model (``Technique.validate_model``) whose
  ``config.json`` can be read from disk;
- every text a task declares (``Workload.texts``) resolves and passes its source's
  ``check``; a text that is read locally is compared with the tokens the task reads
  (``Workload.tokens_needed``): counted with the model's ``tokenizer.json`` when it is
  on disk, else bounded by the text's UTF-8 bytes (a token is at least one byte);
- a model with ``trust_remote_code: true`` gives one warning line.

It also estimates a suite's wall time (:func:`estimate`) from earlier results.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import BenchError, SuiteError
from harness.suite_yaml import where

if TYPE_CHECKING:
    from harness.matrix import TaskSpec
    from harness.registry import Registry
    from harness.suite import Suite
    from harness.suitefile import SuiteFile

#: Seconds a cell is assumed to take when no earlier result says otherwise.
ASSUMED_CELL_S = 10.0


def preflight(suite: Suite, registry: Registry) -> list[str]:
    """Validate ``suite`` against its models, techniques and texts, loading no model.

    Returns:
        Warning lines to show (one per model that trusts remote code).

    Raises:
        SuiteError: one line naming the suite file (and line) and the fix.
    """
    check_models(suite, registry)
    validate_models(suite, registry)
    check_texts(suite, registry)
    return trust_warnings(suite)


def _model_where(suite: Suite, model_id: str) -> str:
    for i, model in enumerate(suite.file.models):
        if (model if isinstance(model, str) else model.id) == model_id:
            return where(suite.path, suite.node, ["models", i])
    return str(suite.path)


def check_models(suite: Suite, registry: Registry) -> None:
    """Each model id resolves to a source whose cheap ``check`` passes."""
    from harness.models import resolve_source

    for model_id in dict.fromkeys(c.model.id for c in suite.cells):
        try:
            resolve_source(model_id, registry.model_sources).check(model_id)
        except BenchError as exc:
            raise SuiteError(f"{_model_where(suite, model_id)}: {exc}") from exc


def validate_models(suite: Suite, registry: Registry) -> None:
    """Ask each technique whether its config fits each model (``Technique.validate_model``).

    Models whose config.json cannot be read without loading or network are left to the
    worker, where ``prepare`` makes the same check.
    """
    configs: dict[str, dict[str, Any] | None] = {}
    done: set[tuple[str, str, str]] = set()
    for cell in suite.cells:
        model_id = cell.model.id
        if model_id not in configs:
            path = model_file(model_id, "config.json")
            configs[model_id] = json.loads(path.read_text()) if path is not None else None
        model_config = configs[model_id]
        if model_config is None:
            continue
        for entry in cell.stack:
            config = json.dumps(dict(entry.config), sort_keys=True, default=str)
            if (model_id, entry.name, config) in done:
                continue
            done.add((model_id, entry.name, config))
            try:
                registry.techniques[entry.name].validate_model(entry.config, model_config)
            except BenchError as exc:
                raise SuiteError(
                    f"{_model_where(suite, model_id)}: model {model_id}: {exc}"
                ) from exc


def model_file(model_id: str, name: str) -> Path | None:
    """A file of a model (``config.json``, ``tokenizer.json``) if it is on disk: the
    built-in cache, a local folder, or the hub cache; never the network."""
    from harness.assets import BUILTIN_MODELS, cache_dir

    folder = Path(model_id).expanduser()
    if model_id in BUILTIN_MODELS:
        path: Path | None = cache_dir() / "models" / model_id / name
    elif (folder / "config.json").is_file():
        path = folder / name
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model_id, name)
        except ValueError:  # not a hub id
            return None
        path = Path(found) if isinstance(found, str) else None
    return path if path is not None and path.is_file() else None


# ------------------------------------------------------------------------------- texts


@dataclass(frozen=True)
class _Need:
    """The most tokens any task of the suite reads from one text split, for one model."""

    tokens: int
    task: str  # e.g. "workload.generate" or "accuracy[0].perplexity"
    loc: tuple[Any, ...]


def check_texts(suite: Suite, registry: Registry) -> None:
    """Every declared text resolves, passes its check, and is long enough for its tasks."""
    from harness.textsources import resolve_text_source

    needs: dict[tuple[str, str, str], _Need] = {}
    for cell in suite.cells:
        tasks: list[tuple[tuple[Any, ...], TaskSpec]] = [
            (("workload", cell.workload.name), cell.workload)
        ]
        tasks += [(("accuracy", i), spec) for i, spec in enumerate(cell.accuracy)]
        for loc, spec in tasks:
            cls = registry.workloads[spec.name]
            task = cls(cls.Params.model_validate(spec.params))
            label = (
                f"workload.{spec.name}"
                if loc[0] == "workload"
                else f"accuracy[{loc[1]}].{spec.name}"
            )
            for (ref, split), tokens in task.tokens_needed().items():
                key = (cell.model.id, ref, split)
                if key not in needs or tokens > needs[key].tokens:
                    needs[key] = _Need(tokens, f"{label} {_params(spec.params)}", loc)
            for ref, split in task.texts():
                needs.setdefault((cell.model.id, ref, split), _Need(0, label, loc))
    checked: set[str] = set()
    for (model_id, ref, split), need in needs.items():
        at = where(suite.path, suite.node, list(need.loc))
        try:
            source = resolve_text_source(ref, registry.text_sources)
            if ref not in checked:
                source.check(ref)
                checked.add(ref)
            if need.tokens == 0 or source.remote:
                continue
            text = source.load(ref, split)  # type: ignore[arg-type]
        except BenchError as exc:
            raise SuiteError(f"{at}: {exc}") from exc
        held, exact = _tokens_held(model_id, text, need.tokens)
        if held < need.tokens:
            holds = (
                f"holds {held:,} tokens for model {model_id}"
                if exact
                else f"holds at most {held:,} tokens (it has {held:,} UTF-8 bytes)"
            )
            raise SuiteError(
                f"{at}: {need.task} reads {need.tokens:,} tokens of text {ref!r} ({split} "
                f"split), which {holds}. Lower the token counts, or use a longer text."
            )


def _params(params: Mapping[str, Any]) -> str:
    """The sizes among a task's parameters, e.g. ``(prompt_tokens=128, batch_size=4)``."""
    sizes = {k: v for k, v in params.items() if isinstance(v, int) and not isinstance(v, bool)}
    return "(" + ", ".join(f"{k}={v}" for k, v in sizes.items()) + ")"


def _tokens_held(model_id: str, text: str, needed: int) -> tuple[int, bool]:
    """How many tokens ``text`` holds (up to about ``needed``) and whether it is a count
    with the model's tokenizer (True) or the UTF-8 byte bound (False)."""
    size = len(text.encode("utf-8"))
    tokenizer = _tokenizer(model_id) if size >= needed else None
    if tokenizer is None:
        return size, False
    chars = min(len(text), max(needed * 8, 1024))
    while True:
        count = len(tokenizer.encode(text[:chars], add_special_tokens=False).ids)
        if count >= needed or chars >= len(text):
            return count, True
        chars = min(len(text), chars * 2)


@functools.cache
def _tokenizer(model_id: str) -> Any:
    """The model's fast tokenizer from its ``tokenizer.json`` on disk, or None."""
    path = model_file(model_id, "tokenizer.json")
    if path is None:
        return None
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    except Exception:  # an unreadable or foreign file: the worker reports it with context
        return None


# ------------------------------------------------------------------------------- trust


def trust_warnings(suite: Suite) -> list[str]:
    """One line per model whose spec sets ``trust_remote_code: true``."""
    lines = []
    for model_id in dict.fromkeys(c.model.id for c in suite.cells if c.model.trust_remote_code):
        lines.append(
            f"warning: {_model_where(suite, model_id)}: model {model_id} has "
            "trust_remote_code: true: Python code from its repository will run on this "
            "machine with your permissions. Remove it unless you trust that code."
        )
    return lines


# ------------------------------------------------------------------------------- time


@dataclass(frozen=True)
class Estimate:
    """A suite's wall time, estimated from earlier cells or an assumption.

    Attributes:
        seconds: the estimate for every cell of the suite, s.
        per_cell_s: the mean time a cell is expected to take, s.
        basis: where the per-cell times come from, for the message.
    """

    seconds: float
    per_cell_s: float
    basis: str

    def __str__(self) -> str:
        per_cell = human_duration(self.per_cell_s)
        return f"about {human_duration(self.seconds)} at {per_cell} a cell ({self.basis})"


def estimate(
    spec: SuiteFile,
    cells_per_model: Mapping[str, float],
    history: Mapping[tuple[str, str], list[float]],
    where_from: str = "",
) -> Estimate:
    """Estimate the wall time of ``cells_per_model`` cells of ``spec``'s workload.

    A cell takes the median duration of the earlier ``ok`` cells of the same model and
    workload (``history``, from ``Store.cell_durations``); else of the same workload with
    any model; else :data:`ASSUMED_CELL_S`.
    """
    ((workload, _),) = spec.workload.items()
    any_model = [d for (_, name), ds in history.items() if name == workload for d in ds]
    total = 0.0
    sources: dict[str, float] = {}
    for model_id, count in cells_per_model.items():
        same = history.get((model_id, workload), [])
        if same:
            per, source = statistics.median(same), "model"
        elif any_model:
            per, source = statistics.median(any_model), "workload"
        else:
            per, source = ASSUMED_CELL_S, "assumed"
        total += per * count
        sources[source] = sources.get(source, 0.0) + count
    n = sum(cells_per_model.values())
    if sources.get("assumed", 0.0) == n:
        basis = f"assumed: no earlier {workload} results{where_from}"
    else:
        earlier = sum(len(history.get((m, workload), [])) for m in cells_per_model)
        earlier = earlier or len(any_model)
        basis = f"median of {earlier:,} earlier {workload} cells{where_from}"
    return Estimate(total, total / n if n else 0.0, basis)


def load_history(url: str | None) -> tuple[dict[tuple[str, str], list[float]], str]:
    """Earlier cell durations from the results database, if there is a readable one, and
    the database's name for the message; nothing is created or written."""
    from sqlalchemy.engine import make_url

    from harness.store import Store
    from harness.store.connect import display_url, sqlite_file

    try:
        with Store.open(url, read_only=True) as store:
            parsed = make_url(store.url)
            name = sqlite_file(parsed) or display_url(parsed)
            return store.cell_durations(), f" in {name}"
    except BenchError:
        return {}, ""


def cells_per_model(models: Iterable[str], total: int) -> dict[str, float]:
    """``total`` cells spread evenly over ``models`` (for a matrix not built yet)."""
    ids = list(dict.fromkeys(models))
    return {m: total / len(ids) for m in ids}


def human_duration(seconds: float) -> str:
    """``seconds`` as a short readable span: ``45 s``, ``12 min``, ``3.5 h``, ``116 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"
