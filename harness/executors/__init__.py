"""Executors: where the cells of a suite are measured (DESIGN §6 and §11).

The runner (``harness.runner``) decides *what* to measure: resume, claims, the order of a
group's cells, ratios against the reference, recording and progress. An executor decides
*where*: it hands out a :class:`Seat` per group of cells (one model on one device), which
measures cells one at a time with the isolation of a separate process, and says how many
groups it can measure at once.

- ``local`` (:mod:`.local`): one worker process per device on this machine, one group at a
  time.
- ``ray`` (:mod:`.ray`): one Ray actor per group, holding one GPU (or the CPUs it needs),
  as many groups at once as the cluster places; ``pip install 'bench[ray]'``.
"""

from __future__ import annotations

from typing import Any, Protocol

from harness.errors import ExecutorError
from harness.results import CellResult
from harness.suite import Cell

EXECUTORS: tuple[str, ...] = ("local", "ray")


class Seat(Protocol):
    """Measures the cells of one group, one at a time, in a process of its own.

    A cell that crashes or kills the process, or runs past its timeout, comes back as a
    ``crashed``/``oom_host``/``timeout`` result; the seat replaces its process before the
    next cell. :meth:`run` never raises for a failed cell.
    """

    def machine(self) -> dict[str, Any]:
        """The facts of the machine that measures (``machine_info``); starts the seat."""
        ...

    def run(self, cell: Cell) -> CellResult:
        """Measure ``cell``; every outcome is a result."""
        ...


class Executor(Protocol):
    """Hands out seats and says how many groups may be measured at once."""

    name: str
    concurrency: int  # groups measured at the same time

    def devices(self) -> list[str] | None:
        """The devices ``auto``/``all-gpus`` resolve to; None: detect on this machine."""
        ...

    def seat(self, device: str) -> Seat:
        """A seat for a group of cells on ``device``."""
        ...

    def release(self, seat: Seat) -> None:
        """The group is done with ``seat`` (an executor may keep it for the next group)."""
        ...

    def close(self) -> None:
        """Stop every seat."""
        ...


def make_executor(name: str, *, address: str | None = None) -> Executor:
    """The executor called ``name``.

    Args:
        name: ``local`` or ``ray``.
        address: The Ray cluster (``auto``, ``ray://host:port``, ``host:port``); None
            starts a local cluster. Only for ``ray``.

    Raises:
        ExecutorError: An unknown name, an address without Ray, or Ray not installed.
    """
    if name == "local":
        if address is not None:
            raise ExecutorError("--address is for --executor ray; the local executor has none.")
        from harness.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from harness.executors.ray import RayExecutor

        return RayExecutor(address)
    raise ExecutorError(f"unknown executor {name!r}. Allowed: {', '.join(EXECUTORS)}.")
