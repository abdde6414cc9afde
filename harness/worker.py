"""The measuring process: loads a model once, runs cells, reports results back.

One worker serves one (model, device). It reloads the model only before a stack that
mutates weights; the life of each cell is the pipeline of ``harness.cell``. Every outcome,
including a skip or an exception, comes back as a ``CellResult``; only a crash or a timeout
(handled by the runner) loses the cell.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import time
import traceback
from functools import cache
from multiprocessing.connection import Connection
from typing import Any

from harness import memlimit
from harness.cell import Memo, cell_result, measure
from harness.costs import cost_window
from harness.environment import Environment
from harness.errors import BenchError, NotApplied, Skip
from harness.models import LoadedModel, resolve_source
from harness.plugins import get_plugin_manager
from harness.registry import Registry
from harness.results import CellResult, Status, Value
from harness.suite import Cell, ModelSpec
from harness.textsources import resolve_text_source

#: What torch's CPU allocator says when the host refuses memory (a RuntimeError).
HOST_OOM = "DefaultCPUAllocator: can't allocate memory"
#: What Python says when a new thread's stack cannot be mapped (a RuntimeError).
NO_THREAD = "can't start new thread"


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the runner dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def quiet_libraries() -> None:
    """Silence library chatter in a measuring process (a worker, a Ray actor)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' chatter; torchao's missing CUDA extensions and torch's pytree notices
    for name in ("transformers", "torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


#: Load costs kept for the models loaded last (the pristine one and recent fresh copies).
_LOAD_COSTS_KEPT = 4


class Worker:
    """Runs cells for one device, keeping the pristine model of each spec loaded.

    Implements ``harness.cell.Resources``: the cell pipeline borrows its models, texts,
    probes and memo.
    """

    def __init__(self, device: str, registry: Registry | None = None) -> None:
        self.device = device
        self.registry = registry or Registry(get_plugin_manager())
        self.env = Environment.detect(device)
        self.probes = [cls(device) for cls in self.registry.probes.values()]
        self.memo = Memo()
        self._loaded: dict[ModelSpec, LoadedModel] = {}
        # What a memory cap adds to: the data size before any model, once the libraries a
        # load imports anyway are in (transformers' modeling code: ~250 MB here), so that
        # the cap bounds the cell's memory, not the libraries'.
        import transformers.modeling_utils  # noqa: F401

        self._base_bytes = memlimit.data_bytes()

        self._load_costs: dict[int, tuple[Value, ...]] = {}  # id(model) -> its load's cost

    def load(self, spec: ModelSpec, *, fresh: bool = False) -> LoadedModel:
        """The model of ``spec``; a fresh copy when the stack will change its weights."""
        if not fresh and spec in self._loaded:
            return self._loaded[spec]
        source = resolve_source(spec.id, self.registry.model_sources)
        with cost_window(self.probes, self.device, "load") as costs:
            loaded = source.load(
                spec.id,
                dtype=spec.dtype,
                revision=spec.revision,
                trust_remote_code=spec.trust_remote_code,
                device=self.device,
            )
        if not fresh:
            self._loaded = {spec: loaded}  # one pristine model at a time
        self._load_costs[id(loaded.model)] = tuple(costs)
        pristine = {id(m.model) for m in self._loaded.values()}
        stale = [k for k in self._load_costs if k not in pristine]  # oldest first
        for key in stale[: max(0, len(self._load_costs) - _LOAD_COSTS_KEPT)]:
            del self._load_costs[key]  # fresh copies come and go
        return loaded

    def load_costs(self, model: Any) -> tuple[Value, ...]:
        """``cost.load_s`` and ``cost.load_peak_bytes`` of the load that gave ``model``
        (measured by ``harness.costs.cost_window``); none for a model loaded elsewhere."""
        return self._load_costs.get(id(model), ())

    def reference_model(self, spec: ModelSpec, running: Any) -> Any:
        """The unmodified model of ``spec``, never the object the current stack runs on.

        A stack that changes weights runs on a fresh copy, so the loaded pristine model is
        untouched and is returned. A stack that leaves weights alone runs on the pristine
        object itself, possibly with hooks or a patched attention: then an independent copy
        is loaded (not kept).
        """
        pristine = self.load(spec).model
        if pristine is not running:
            return pristine
        return self.load(spec, fresh=True).model

    @cache  # noqa: B019 - one worker per process; texts are immutable
    def text(self, ref: str, split: str) -> str:
        source = resolve_text_source(ref, self.registry.text_sources)
        return source.load(ref, split)  # type: ignore[arg-type]

    def run(self, cell: Cell) -> CellResult:
        """Measure ``cell``; every outcome, a skip or an exception too, is a ``CellResult``."""
        started = time.time()
        status: Status = "ok"
        reason = None
        values: tuple[Value, ...] = ()
        observed: dict[str, Any] = {}  # the fingerprint's part that only this worker sees
        limit = cell.policy.memory_limit_gib
        try:
            memlimit.apply(self.device, limit * memlimit.GiB if limit else None, self._base_bytes)
            values, reason = measure(cell, self, observed)
        except Skip as exc:
            status, reason = "skipped", exc.reason
        except NotApplied as exc:
            status, reason, values = "not-applied", exc.reason, exc.values
        except MemoryError as exc:
            status, reason = "oom_host", f"host out of memory ({_summary(exc)})"
        except BenchError as exc:
            status, reason = "error", str(exc)
        except Exception as exc:
            if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (device)
                status, reason = "oom", str(exc).splitlines()[0]
            elif HOST_OOM in str(exc) or (limit and NO_THREAD in str(exc)):
                # torch's CPU allocator raises RuntimeError; under a cap, so does a thread
                # whose stack (a private mapping that RLIMIT_DATA counts) does not fit
                status, reason = "oom_host", f"host out of memory ({_summary(exc)})"
            else:
                status, reason = "error", _summary(exc)
        finally:
            gc.collect()
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
        return cell_result(cell, status, reason, started, values, observed)


def _summary(exc: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame: enough to find the bug."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}{where}"


def serve(conn: Connection, device: str) -> None:
    """Worker process entry point: receive cells, send results, until told to stop."""
    _die_with_parent()
    quiet_libraries()
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
