"""The Ray executor: each group of cells on a Ray actor holding one GPU or its CPUs.

``bench run --executor ray [--address auto|ray://host:port]`` connects to a Ray cluster
(without ``--address``: starts a local one on this machine). Each group (one model on one
device) gets an actor that asks for ``num_gpus=1`` (a CUDA device) or ``num_cpus`` (the CPU);
the actor holds a :class:`harness.worker.Worker`, so the model loads once per group, as in
the local executor. Ray places the actors on the cluster's nodes and queues those that do
not fit yet; the runner measures as many groups at once as there are groups.

Isolation is the local executor's: a cell that kills its actor is recorded as ``crashed``
(``oom_host`` when Ray's memory monitor killed it), one that runs past its timeout gets
the actor killed and is recorded as ``timeout``; the next cell gets a new actor. The machine
of each result is the node the actor ran on, so results resume per node hardware.

Ray itself is an optional dependency (``pip install 'bench[ray]'``); this module is only
imported for ``--executor ray``. Every node needs bench (and the suite's plugins)
installed; see docs/scale-out.md.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import replace
from typing import Any

from harness.cell import cell_result
from harness.errors import ExecutorError
from harness.results import CellResult
from harness.suite import Cell

INSTALL = "pip install 'bench[ray]'"
# Environment passed on to the actors, so plugins and debugging behave as on the driver.
FORWARDED_ENV = ("BENCH_PLUGINS", "BENCH_DEBUG", "HF_HUB_OFFLINE", "BENCH_CACHE")


class Measurer:
    """The actor: one :class:`harness.worker.Worker` for one group's device.

    Ray sets ``CUDA_VISIBLE_DEVICES`` to the actor's one GPU, so a ``cuda:N`` group is
    measured on ``cuda:0`` inside the actor; results keep the suite's device name.
    """

    def __init__(self, device: str) -> None:
        from harness.worker import Worker, quiet_libraries

        quiet_libraries()
        self.local_device = "cuda:0" if device.startswith("cuda") else device
        self.worker = Worker(self.local_device)

    def machine(self) -> dict[str, Any]:
        from harness.environment import machine_info

        return machine_info()

    def pid(self) -> int:
        return os.getpid()

    def run(self, cell: Cell) -> CellResult:
        result = self.worker.run(replace(cell, device=self.local_device))
        return replace(result, device=cell.device)


class RaySeat:
    """A group's actor, started on first use and replaced after a crash or a timeout."""

    def __init__(self, executor: RayExecutor, device: str) -> None:
        self.executor = executor
        self.device = device
        self.actor: Any = None
        self._machine: dict[str, Any] | None = None

    def _start(self) -> None:
        import ray

        self.actor = self.executor.actor_class.options(**self.executor.resources(self.device))
        self.actor = self.actor.remote(self.device)
        try:
            self._machine = ray.get(self.actor.machine.remote())
        except ray.exceptions.RayError as exc:
            self.kill()
            raise ExecutorError(
                f"a Ray actor for device {self.device} did not start ({_first_line(exc)}). "
                "Check that bench is installed on every node ('bench doctor' there)."
            ) from exc

    def machine(self) -> dict[str, Any]:
        if self.actor is None or self._machine is None:
            self._start()
        assert self._machine is not None
        return self._machine

    def pid(self) -> int:
        """The actor's process id (tests kill it)."""
        import ray

        self.machine()
        return int(ray.get(self.actor.pid.remote()))

    def run(self, cell: Cell) -> CellResult:
        import ray
        from ray import exceptions

        started = time.time()
        if self.actor is None:
            self._start()
        try:
            result: CellResult = ray.get(self.actor.run.remote(cell), timeout=cell.policy.timeout_s)
            return result
        except exceptions.GetTimeoutError:
            self.kill()
            return cell_result(
                cell, "timeout", f"cell ran longer than {cell.policy.timeout_s:g} s", started
            )
        except exceptions.OutOfMemoryError as exc:
            self.kill()
            reason = f"Ray's memory monitor killed the actor: {_first_line(exc)}"
            return cell_result(cell, "oom_host", reason, started)
        except exceptions.RayActorError as exc:
            self.kill()
            return cell_result(cell, "crashed", f"Ray actor died: {_first_line(exc)}", started)
        except exceptions.RayError as exc:  # e.g. the cell could not be sent
            self.kill()
            return cell_result(cell, "error", f"Ray: {_first_line(exc)}", started)

    def kill(self) -> None:
        if self.actor is not None:
            import ray

            with contextlib.suppress(ValueError, ray.exceptions.RayError):  # already gone
                ray.kill(self.actor, no_restart=True)
        self.actor = None
        self._machine = None


class RayExecutor:
    """Groups on Ray actors, as many at once as the cluster places.

    Args:
        address: ``auto`` (the cluster this node belongs to), ``ray://host:port`` (Ray
            Client) or ``host:port``; None starts a local cluster on this machine.
        cpus: CPUs an actor of a CPU group asks for.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, cpus: float = 1) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ExecutorError(f"--executor ray needs Ray: {INSTALL}.") from exc
        self.cpus = cpus
        self._seats: list[RaySeat] = []
        self._lock = threading.Lock()
        self._own = False
        if not ray.is_initialized():
            env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
            options: dict[str, Any] = {
                "log_to_driver": False,  # one progress display; actor output is in Ray's logs
                "runtime_env": {"env_vars": env} if env else None,
            }
            if address is None:
                options |= {"include_dashboard": False}
            try:
                ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ExecutorError(
                    f"cannot connect to the Ray cluster at {address} ({_first_line(exc)}). "
                    "Start it with 'ray start --head' (docs/scale-out.md), or leave out "
                    "--address for a local cluster."
                ) from exc
            self._own = True
        self.actor_class = ray.remote(max_restarts=0)(Measurer)
        self._gpus = int(ray.cluster_resources().get("GPU", 0))
        self.concurrency = 1 << 16  # every group at once; Ray queues what does not fit

    def devices(self) -> list[str]:
        """The cluster's GPUs (``cuda:0``...) then ``cpu``, for ``auto``/``all-gpus``."""
        return [f"cuda:{i}" for i in range(self._gpus)] + ["cpu"]

    def resources(self, device: str) -> dict[str, Any]:
        """The Ray resources of a group's actor: one GPU, or ``cpus`` CPUs."""
        if device.startswith("cuda") and self._gpus:
            return {"num_gpus": 1, "num_cpus": 1}
        return {"num_cpus": self.cpus}  # no GPU in the cluster: the cell records a skip

    def seat(self, device: str) -> RaySeat:
        seat = RaySeat(self, device)
        with self._lock:
            self._seats.append(seat)
        return seat

    def release(self, seat: Any) -> None:
        """Kill the group's actor: its GPU goes to the next group."""
        seat.kill()
        with self._lock:
            if seat in self._seats:
                self._seats.remove(seat)

    def close(self) -> None:
        import ray

        with self._lock:
            seats, self._seats = self._seats, []
        for seat in seats:
            seat.kill()
        if self._own:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
