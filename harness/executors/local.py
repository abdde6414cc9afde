"""The local executor: one worker process per device on this machine.

A worker (``harness.worker.serve``) is a spawned process that loads a model once and
measures cells sent over a pipe. A cell that runs past its timeout gets the worker killed;
a worker that dies (a crash, the kernel's out-of-memory killer) is recorded for its cell;
either way the next cell starts a fresh worker.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from typing import Any

from harness.cell import cell_result
from harness.environment import machine_info
from harness.results import CellResult
from harness.suite import Cell

_START_TIMEOUT_S = 600  # first start may provision the built-in model


class WorkerHandle:
    """A worker process for one device, started lazily and restarted after a crash."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.proc: Any = None
        self.conn: Any = None

    def machine(self) -> dict[str, Any]:
        """This machine: the worker runs here."""
        return machine_info()

    def _start(self) -> None:
        from harness.worker import serve

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(child, self.device), daemon=True)
        proc.start()  # only a started process is kept: the handlers join and kill it
        self.proc = proc
        child.close()
        self.conn = parent
        if not parent.poll(_START_TIMEOUT_S):
            self.kill()
            raise RuntimeError("worker did not start within 10 minutes")
        kind, detail = parent.recv()
        if kind != "ready":
            self.kill()
            raise RuntimeError(f"worker failed to start: {detail}")

    def run(self, cell: Cell) -> CellResult:
        started = time.time()
        try:
            if self.proc is None or not self.proc.is_alive():
                self._start()
            self.conn.send(cell)
            if self.conn.poll(cell.policy.timeout_s):
                _, result = self.conn.recv()
                if result.status == "oom_host":
                    # A worker that ran out of host memory may hold on to some of it, or to
                    # half-built state: the next cell gets a fresh process.
                    self.stop()
                return result
            self.kill()
            reason = f"cell ran longer than {cell.policy.timeout_s:g} s"
            return cell_result(cell, "timeout", reason, started)
        except (EOFError, BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
            code = None
            if self.proc is not None:
                self.proc.join(5)  # the pipe closes before the exit status can be read
                code = self.proc.exitcode
            self.kill()
            if code == -signal.SIGKILL:
                reason = "worker killed by SIGKILL (most likely the kernel's out-of-memory killer)"
                return cell_result(cell, "oom_host", reason, started)
            return cell_result(cell, "crashed", exit_reason(code, exc), started)

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.proc = None
        self.conn = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(10)
            except (BrokenPipeError, OSError):
                pass
        self.kill()


def exit_reason(code: int | None, exc: BaseException) -> str:
    """Why a worker process ended: its exit code, or the signal that killed it."""
    if code is None:
        return f"worker connection lost ({type(exc).__name__}: {exc})"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = " (the process aborted)" if -code == signal.SIGABRT else ""
        return f"worker killed by {name}{what}"
    return f"worker exited with code {code}"


class LocalExecutor:
    """One group at a time; one worker per device, kept for the next group on it."""

    name = "local"
    concurrency = 1

    def __init__(self) -> None:
        self._workers: dict[str, WorkerHandle] = {}

    def devices(self) -> list[str] | None:
        return None

    def seat(self, device: str) -> WorkerHandle:
        return self._workers.setdefault(device, WorkerHandle(device))

    def release(self, seat: Any) -> None:
        """Keep the worker: the next group on its device reuses the process."""

    def close(self) -> None:
        for handle in self._workers.values():
            handle.stop()
        self._workers.clear()
