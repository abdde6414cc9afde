"""The measuring process: loads a model once, runs cells, reports results back.

One worker serves one (model, device). It reloads the model only before a stack that
mutates weights. Every outcome, including a skip or an exception, comes back as a
``CellResult``; only a crash or a timeout (handled by the runner) loses the cell.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import signal
import sys
import time
import traceback
import warnings
import weakref
from collections.abc import Iterator
from functools import cache
from multiprocessing.connection import Connection
from typing import Any

from harness.environment import Environment
from harness.errors import BenchError, Skip
from harness.footprint import module_bytes
from harness.models import LoadedModel, resolve_source
from harness.plugins import get_plugin_manager
from harness.registry import Registry
from harness.results import CellResult, Measurement, Status, Value
from harness.suite import Cell, ModelSpec
from harness.technique import Context, Prepared, Technique
from harness.textsources import resolve_text_source
from harness.workloads import WorkloadContext


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the runner dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    # transformers' chatter; torchao's missing CUDA extensions and torch's pytree notices
    for name in ("transformers", "torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class Worker:
    """Runs cells for one device, keeping the pristine model of each spec loaded."""

    def __init__(self, device: str, registry: Registry | None = None) -> None:
        self.device = device
        self.registry = registry or Registry(get_plugin_manager())
        self.env = Environment.detect(device)
        self.probes = [cls(device) for cls in self.registry.probes.values()]
        self._loaded: dict[ModelSpec, LoadedModel] = {}
        self._references: dict[ModelSpec, _Reference] = {}
        # Accuracy results per (model, device, stack, task): they do not depend on the
        # measure workload's parameters, so the other workload variants of a stack reuse them.
        self._accuracy: dict[tuple[str, ...], Measurement] = {}

    def load(self, spec: ModelSpec, *, fresh: bool = False) -> LoadedModel:
        """The model of ``spec``; a fresh copy when the stack will change its weights."""
        if not fresh and spec in self._loaded:
            return self._loaded[spec]
        source = resolve_source(spec.id, self.registry.model_sources)
        loaded = source.load(
            spec.id,
            dtype=spec.dtype,
            revision=spec.revision,
            trust_remote_code=spec.trust_remote_code,
            device=self.device,
        )
        if not fresh:
            self._loaded = {spec: loaded}  # one pristine model at a time
        return loaded

    @cache  # noqa: B019 - one worker per process; texts are immutable
    def text(self, ref: str, split: str) -> str:
        return resolve_text_source(ref, self.registry.text_sources).load(ref, split)  # type: ignore[arg-type]

    def run(self, cell: Cell) -> CellResult:
        started = time.time()
        status: Status = "ok"
        reason = None
        values: tuple[Value, ...] = ()
        try:
            values = self._measure(cell)
        except Skip as exc:
            status, reason = "skipped", exc.reason
        except MemoryError as exc:
            status, reason = "oom_host", f"host out of memory: {exc}"
        except BenchError as exc:
            status, reason = "error", str(exc)
        except Exception as exc:
            if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (device)
                status, reason = "oom", str(exc).splitlines()[0]
            else:
                status, reason = "error", _summary(exc)
        finally:
            gc.collect()
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
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
            values=values,
        )

    def _measure(self, cell: Cell) -> tuple[Value, ...]:
        if cell.device.startswith("cuda") and not self.env.cuda:
            raise Skip(f"device {cell.device} is not available on this machine")
        techniques: list[Technique] = []
        for entry in cell.stack:
            cls = self.registry.techniques[entry.name]
            technique = cls(cls.Config.model_validate(entry.config))
            technique.check(self.env)
            techniques.append(technique)

        # A workload that changes weights itself (training) also gets a fresh model.
        workload_cls = self.registry.workloads[cell.workload.name]
        mutates = any(t.mutates_weights for t in techniques) or getattr(
            workload_cls, "mutates_weights", False
        )
        loaded = self.load(cell.model, fresh=mutates)
        ctx = Context(
            device=cell.device,
            model_id=cell.model.id,
            tokenizer=loaded.tokenizer,
            workload=_Watched(cell.workload.as_dict()),
            env=self.env,
        )
        prepared = Prepared(model=loaded.model)
        try:
            for technique in techniques:
                prepared = technique.prepare(prepared, ctx)
            return self._run_workloads(cell, prepared, ctx, techniques)
        finally:
            for undo in prepared.cleanup:
                undo()

    def _run_workloads(
        self, cell: Cell, prepared: Prepared, ctx: Context, techniques: list[Technique]
    ) -> tuple[Value, ...]:
        wctx = WorkloadContext(
            device=cell.device,
            tokenizer=ctx.tokenizer,
            policy=cell.policy,
            probes=self.probes,
            text=self.text,
            reference=self._reference(cell.model, prepared.model),
        )
        values: dict[str, Value] = {}
        technique_values: dict[str, Value] = {}
        stack = json.dumps([s.as_dict() for s in cell.stack], sort_keys=True)
        # A trained model, or a stack prepared from the workload's parameters (a KV budget as a
        # share of prompt_tokens), differs per workload variant: no sharing then.
        if getattr(self.registry.workloads[cell.workload.name], "mutates_weights", False) or (
            getattr(ctx.workload, "read", True)
        ):
            stack += json.dumps(cell.workload.as_dict(), sort_keys=True)
        for task in (cell.workload, *cell.accuracy):
            cls = self.registry.workloads[task.name]
            params = json.dumps(dict(task.params), sort_keys=True)
            key = (cell.model.model_dump_json(), cell.device, stack, task.name, params)
            measurement = self._accuracy.get(key) if cls.kind == "accuracy" else None
            if measurement is None:
                measurement = cls(cls.Params.model_validate(task.params)).run(prepared, wctx)
                if cls.kind == "accuracy":
                    self._accuracy[key] = measurement
            wctx.outputs[task.name] = measurement.outputs
            values.update((v.name, v) for v in measurement.values)
            if cls.kind != "accuracy":
                # Technique metrics describe the measured workload: read them before the
                # accuracy tasks send more generations through the stack (counters, tallies).
                technique_values = {
                    name: Value(name, float(value), self._unit(name), source=technique.name)
                    for technique in techniques
                    for name, value in technique.metrics(ctx).items()
                }

        weights = module_bytes(prepared.model)
        values["memory.weights_bytes"] = Value(
            "memory.weights_bytes", float(weights), "bytes", source="tensors"
        )
        window = values.get("memory.window_peak_bytes")
        if "memory.peak_alloc_bytes" not in values and window and window.value is not None:
            # CPU: the profiler sees only allocations inside the window; the weights were
            # allocated before it and stay resident throughout.
            values["memory.peak_alloc_bytes"] = Value(
                "memory.peak_alloc_bytes",
                weights + window.value,
                "bytes",
                source=f"weights+{window.source}",
            )
        values.update(technique_values)
        unknown = sorted(set(values) - set(self.registry.metrics))
        if unknown:
            raise BenchError(
                f"metrics {', '.join(unknown)} are not registered; "
                "return a MetricDef for each from the plugin's register_metrics hook"
            )
        return tuple(values.values())

    def _unit(self, name: str) -> str:
        return self.registry.metrics[name].unit if name in self.registry.metrics else ""

    def _reference(self, spec: ModelSpec, running: Any) -> _Reference:
        """``WorkloadContext.reference`` for ``spec``: one object per spec, told what runs now."""
        reference = self._references.setdefault(spec, _Reference(self, spec))
        reference.running = weakref.ref(running)  # never keeps a cell's model alive
        return reference


class _Watched(dict[str, Any]):
    """``Context.workload`` that remembers whether a technique looked at it."""

    read = False

    def __getitem__(self, key: str) -> Any:
        self.read = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read = True
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read = True
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self.read = True
        return super().__iter__()

    def keys(self) -> Any:
        self.read = True
        return super().keys()

    def values(self) -> Any:
        self.read = True
        return super().values()

    def items(self) -> Any:
        self.read = True
        return super().items()


class _Reference:
    """Returns the unmodified model of one spec, never the object the current stack runs on.

    A stack that changes weights runs on a fresh copy, so the loaded pristine model is
    untouched and is returned. A stack that leaves weights alone runs on the pristine object
    itself, possibly with hooks or a patched attention: then an independent copy is loaded
    (not kept). The worker keeps one instance per spec, so accuracy tasks may key caches of
    reference outputs on it (computed once per worker and spec).
    """

    def __init__(self, worker: Worker, spec: ModelSpec) -> None:
        self.worker = worker
        self.spec = spec
        self.running: weakref.ref[Any] | None = None

    def __call__(self) -> Any:
        pristine = self.worker.load(self.spec).model
        if self.running is None or pristine is not self.running():
            return pristine
        return self.worker.load(self.spec, fresh=True).model


def _summary(exc: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame: enough to find the bug."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}{where}"


def serve(conn: Connection, device: str) -> None:
    """Worker process entry point: receive cells, send results, until told to stop."""
    _die_with_parent()
    _quiet_libraries()
    try:
        worker = Worker(device)
    except BaseException as exc:
        conn.send(("fatal", _summary(exc)))
        return
    conn.send(("ready", None))
    while True:
        try:
            cell: Any = conn.recv()
        except EOFError:
            return
        if cell is None:
            return
        if os.environ.get("BENCH_DEBUG"):
            print(f"worker {os.getpid()}: {cell.label} {cell.workload.params}", file=sys.stderr)
        conn.send(("result", worker.run(cell)))
