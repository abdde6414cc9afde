"""The life of one cell, as a short pipeline of named steps.

    build_stack  Cell                       -> list[Technique]   (configs validated, check())
    predict      techniques, config.json    -> Prediction        (harness.estimate; pre-flight)
    load         ModelSpec                  -> LoadedModel       (its one-time cost: costs)
    identify     Cell, loaded model         -> fingerprint part  (files, tokenizer, inputs)
    prepare      techniques, loaded model   -> Prepared          (each technique in order,
                                                                  timed: harness.costs)
    run_tasks    Prepared                   -> Values            (the workload, then accuracy)
    technique    techniques                 -> Values            (technique metrics)
    verify       techniques, Prepared       -> Values            (harness.applied: a failed
                                                                  check → not-applied)
    derive       Values, Prepared           -> Values            (harness.derive, in-cell, with
                                                                  the prediction beside them)
    registered   Values                     -> Values, note      (unregistered ones dropped)

:func:`measure` runs them; :func:`cell_result` is the one place a ``CellResult`` is made.
The worker (``harness.worker``) supplies what outlives a cell through :class:`Resources`:
loaded models, texts, probes, and the memo of results that several cells share.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from harness import calibration, derive
from harness.applied import verify_stack
from harness.costs import cost_window
from harness.errors import NotApplied, Skip
from harness.estimate.cellstep import Prediction, predict_cell
from harness.fingerprint import (
    describe,
    device_facts,
    merge,
    model_section,
    software_section,
    text_digest,
    tokenizer_digest,
)
from harness.results import CellResult, Measurement, Status, Value
from harness.technique import Context, Prepared, Technique
from harness.textsources import resolve_text_source
from harness.workloads import Workload, WorkloadContext

if TYPE_CHECKING:
    from harness.environment import Environment
    from harness.matrix import Cell, TaskSpec
    from harness.models import LoadedModel
    from harness.probes import Probe
    from harness.registry import Registry
    from harness.suitefile import ModelSpec

Values = dict[str, Value]

#: Reference outputs kept per worker (agreement's hold tokens × vocabulary float32 values).
REFERENCE_ENTRIES = 4


class Resources(Protocol):
    """What the worker lends a cell: plugins, the machine, models, texts and the memo."""

    @property
    def registry(self) -> Registry: ...

    @property
    def env(self) -> Environment: ...

    @property
    def probes(self) -> Sequence[Probe]: ...

    @property
    def memo(self) -> Memo: ...

    def load(self, spec: ModelSpec, *, fresh: bool = False) -> LoadedModel:
        """The model of ``spec``: the loaded pristine one, or a fresh copy."""

    def load_costs(self, model: Any) -> Sequence[Value]:
        """``cost.load_s`` and ``cost.load_peak_bytes`` of the load that gave ``model``."""

    def reference_model(self, spec: ModelSpec, running: Any) -> Any:
        """The unmodified model of ``spec``, never the object ``running``."""

    def text(self, ref: str, split: str) -> str:
        """The text of a text source's split."""


@dataclass
class Memo:
    """Results shared between the cells of one worker.

    Attributes:
        accuracy: an accuracy task's measurement per (model, device, stack, task, params);
            it does not depend on the measure workload's parameters unless the stack reads
            them (``Technique.reads_workload``) or the workload changes the weights.
        reference: a task's reference outputs per (model, task, params), computed once on
            the unmodified model; the oldest are dropped beyond ``REFERENCE_ENTRIES``.
    """

    accuracy: dict[tuple[str, ...], Measurement] = field(default_factory=dict)
    reference: OrderedDict[tuple[str, ...], Any] = field(default_factory=OrderedDict)


def cell_result(
    cell: Cell,
    status: Status,
    reason: str | None,
    started: float,
    values: Sequence[Value] = (),
    observed: Mapping[str, Any] | None = None,
) -> CellResult:
    """The stored outcome of ``cell``, begun at unix time ``started`` and ending now.

    Its fingerprint is what the suite says of the cell (``harness.fingerprint.describe``)
    with ``observed`` merged in: what the worker saw (:func:`identify`), when it got that
    far.
    """
    return CellResult(
        key=cell.key,
        model=cell.model.id,
        device=cell.device,
        technique=cell.label,
        stack=tuple(s.as_dict() for s in cell.stack),
        workload=cell.workload.as_dict(),
        status=status,
        reason=reason,
        started_at=started,
        duration_s=time.time() - started,
        values=tuple(values),
        reference=cell.reference,
        fingerprint=merge(describe(cell), observed or {}),
    )


def measure(
    cell: Cell, res: Resources, observed: dict[str, Any] | None = None
) -> tuple[tuple[Value, ...], str | None]:
    """Run the pipeline for ``cell``; returns its values and a note for the cell's reason.

    Args:
        cell: the cell.
        res: what the worker lends it.
        observed: filled with :func:`identify`'s part of the fingerprint as soon as the
            model is loaded, so a cell that fails later still records what it ran on.

    Raises:
        Skip: the cell cannot run here (a technique's check or prepare said why).
    """
    if cell.device.startswith("cuda") and not res.env.cuda:
        raise Skip(f"device {cell.device} is not available on this machine")
    techniques = build_stack(cell, res.registry, res.env)
    workload_cls = res.registry.workloads[cell.workload.name]
    prediction = predict(cell, techniques, res.env)
    if cell.policy.preflight:
        prediction.preflight()  # before the model loads: a cell that cannot fit is skipped
    mutates = workload_cls.mutates_weights or any(t.mutates_weights for t in techniques)
    loaded = res.load(cell.model, fresh=mutates)
    if observed is not None:
        observed.update(identify(cell, loaded, res))
    ctx = Context(
        device=cell.device,
        model_id=cell.model.id,
        tokenizer=loaded.tokenizer,
        workload=cell.workload.as_dict(),
        env=res.env,
    )
    with cost_window(res.probes, cell.device, "prepare") as costs:
        prepared = prepare(techniques, Prepared(model=loaded.model), ctx)
    costs.extend(res.load_costs(loaded.model))
    try:
        # A trained model, or one prepared from the workload's parameters, is another model
        # for each workload variant: nothing to share then.
        shared = not workload_cls.mutates_weights and not any(t.reads_workload for t in techniques)
        values, technique_values, failure = run_tasks(
            cell, prepared, techniques, ctx, res, shared=shared
        )
        values.update((v.name, v) for v in costs)
        values.update(derive.cell_values(values, prepared.model))
        values.update(prediction.values())
        values.update(derive.roofline_values(values))
        values.update(technique_values)
        kept, note = registered(values, res.registry)
        if failure:
            raise NotApplied(failure, kept)
        return kept, note
    finally:
        for undo in prepared.cleanup:
            undo()


def build_stack(cell: Cell, registry: Registry, env: Environment) -> list[Technique]:
    """The stack's techniques with their validated configs, each checked against ``env``."""
    techniques: list[Technique] = []
    for entry in cell.stack:
        cls = registry.techniques[entry.name]
        technique = cls(cls.Config.model_validate(entry.config))
        technique.check(env)
        techniques.append(technique)
    return techniques


def identify(cell: Cell, loaded: LoadedModel, res: Resources) -> dict[str, Any]:
    """The part of the cell's fingerprint that only the worker knows (``harness.fingerprint``).

    The model's files, the tokenizer, the sha256 of every text the cell's tasks read, what
    each task says identifies its inputs (``Workload.fingerprint``: ``generate``'s prompt
    token ids), the device's GPU and CPU, the software versions and the machine's load.
    """
    texts: dict[str, dict[str, Any]] = {}
    inputs: dict[str, Any] = {}
    accuracy_inputs: dict[str, Any] = {}
    for spec in (cell.workload, *cell.accuracy):
        cls = res.registry.workloads[spec.name]
        task = cls(cls.Params.model_validate(spec.params))
        read = {(ref, split): res.text(ref, split) for ref, split in task.texts()}
        for (ref, split), text in read.items():
            source = resolve_text_source(ref, res.registry.text_sources).name
            texts.setdefault(ref, {})[split] = {"source": source, **text_digest(text)}
        wctx = WorkloadContext(
            device=cell.device,
            tokenizer=loaded.tokenizer,
            policy=cell.policy,
            probes=(),
            texts=read,
        )
        found = task.fingerprint(wctx)
        if spec is cell.workload:
            inputs = found
        elif found:
            accuracy_inputs[spec.name] = found
    part: dict[str, Any] = {
        "model": model_section(cell.model.id, cell.model.revision, loaded),
        "workload": {
            "texts": texts,
            "tokenizer": tokenizer_digest(loaded.tokenizer),
            "inputs": inputs,
        },
        "device": device_facts(res.env.gpu_name, res.env.cuda_capability),
        "software": software_section(res.registry),
        # how busy and how fast the machine was as the cell began: not what was measured,
        # but what explains two runs' different timings (bench compare prints it)
        "host": {
            "load_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "calibration": calibration.measure(),
        },
    }
    if accuracy_inputs:
        part["accuracy_inputs"] = accuracy_inputs
    return part


def predict(cell: Cell, techniques: Sequence[Technique], env: Environment) -> Prediction:
    """The cell's estimate (``harness.estimate.cellstep``), milliseconds, no model loaded.

    An estimate that fails (a plugin's ``Technique.estimate`` raising) is recorded as the
    reason of null ``estimate.*`` values; it never fails the measurement.
    """
    try:
        return predict_cell(cell, techniques, env)
    except Exception as exc:
        return Prediction(None, f"the estimate failed: {type(exc).__name__}: {exc}", None)


def prepare(techniques: Sequence[Technique], prepared: Prepared, ctx: Context) -> Prepared:
    """Apply the stack in order; on failure undo what the techniques before it installed."""
    try:
        for technique in techniques:
            prepared = technique.prepare(prepared, ctx)
    except BaseException:
        for undo in prepared.cleanup:
            undo()
        raise
    return prepared


def run_tasks(
    cell: Cell,
    prepared: Prepared,
    techniques: Sequence[Technique],
    ctx: Context,
    res: Resources,
    *,
    shared: bool,
) -> tuple[Values, Values, str | None]:
    """Run the measure workload, then the accuracy tasks, on the prepared stack.

    An accuracy task's measurement is taken from the memo when the same stack already ran
    it on this model and device (``shared``: the stack is the same model whatever the
    workload's parameters). Technique metrics and the techniques' checks (``verify``) are
    read right after the measure workload, before accuracy tasks send more generations
    through the stack (counters, tallies). A failed check ends the tasks there: the
    accuracy tasks are not run.

    Returns:
        The tasks' values, the techniques' values (metrics and checks), and the reason of
        a failed check (None when every technique took effect).
    """
    values: Values = {}
    technique_values: Values = {}
    failure: str | None = None
    stack = json.dumps([s.as_dict() for s in cell.stack], sort_keys=True)
    if not shared:
        stack += json.dumps(cell.workload.as_dict(), sort_keys=True)
    outputs: dict[str, Any] = {}
    for spec in (cell.workload, *cell.accuracy):
        cls = res.registry.workloads[spec.name]
        task = cls(cls.Params.model_validate(spec.params))
        key = (cell.model.model_dump_json(), cell.device, stack, spec.name, _params(spec))
        measurement = res.memo.accuracy.get(key) if cls.kind == "accuracy" else None
        if measurement is None:
            wctx = task_context(cell, spec, task, prepared, ctx.tokenizer, res, outputs)
            measurement = task.run(prepared, wctx)
            if cls.kind == "accuracy":
                res.memo.accuracy[key] = measurement
        outputs[spec.name] = measurement.outputs
        values.update((v.name, v) for v in measurement.values)
        if cls.kind == "measure":
            technique_values = technique_metrics(techniques, ctx, res.registry)
            checks, failure = verify_stack(techniques, prepared, ctx, res.registry.metrics)
            technique_values.update(checks)
            if failure:
                break
    return values, technique_values, failure


def task_context(
    cell: Cell,
    spec: TaskSpec,
    task: Workload[Any],
    prepared: Prepared,
    tokenizer: Any,
    res: Resources,
    outputs: dict[str, Any],
) -> WorkloadContext:
    """The task's ``WorkloadContext``: its texts and reference outputs loaded as data."""
    wctx = WorkloadContext(
        device=cell.device,
        tokenizer=tokenizer,
        policy=cell.policy,
        probes=res.probes,
        texts={(ref, split): res.text(ref, split) for ref, split in task.texts()},
        outputs=dict(outputs),
    )
    if task.uses_reference:
        key = (cell.model.model_dump_json(), cell.device, spec.name, _params(spec))
        memo = res.memo.reference
        if key not in memo:
            model = res.reference_model(cell.model, prepared.model)
            memo[key] = task.reference(model, wctx)
            while len(memo) > REFERENCE_ENTRIES:
                memo.popitem(last=False)
        memo.move_to_end(key)
        wctx.reference = memo[key]
    return wctx


def technique_metrics(techniques: Sequence[Technique], ctx: Context, registry: Registry) -> Values:
    """Each technique's ``metrics(ctx)`` as values, with the units they were registered with."""
    metrics = registry.metrics
    return {
        name: Value(
            name,
            float(value),
            metrics[name].unit if name in metrics else "",
            source=technique.name,
        )
        for technique in techniques
        for name, value in technique.metrics(ctx).items()
    }


def registered(values: Values, registry: Registry) -> tuple[tuple[Value, ...], str | None]:
    """Keep the values of registered metrics; a note names the others, which are dropped."""
    unknown = sorted(set(values) - set(registry.metrics))
    kept = tuple(v for name, v in values.items() if name not in unknown)
    if not unknown:
        return kept, None
    return kept, (
        f"metrics {', '.join(unknown)} were not stored: they are not registered; return a "
        "MetricDef for each from the plugin's register_metrics hook"
    )


def _params(spec: TaskSpec) -> str:
    return json.dumps(dict(spec.params), sort_keys=True)
