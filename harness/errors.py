"""One error family. Every message names the file or key, what is allowed and the fix.

Exit codes (DESIGN §12): 0 ok, 1 some cells failed, 2 usage or input error, 3 internal error.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_CELLS_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class BenchError(Exception):
    """A user-facing error: one line that says what is wrong and how to fix it."""

    exit_code: int = EXIT_USAGE


class SuiteError(BenchError):
    """A suite file is malformed or names something that is not installed."""


class PluginError(BenchError):
    """A plugin is broken: bad hook name, duplicate name, a Config that does not validate."""


class ModelError(BenchError):
    """A model id cannot be resolved or loaded."""


class StoreError(BenchError):
    """The results database cannot be opened, read or written."""


class ExecutorError(BenchError):
    """An executor cannot start: an unknown name, Ray not installed, no cluster there."""


class Skip(Exception):
    """Raised by ``Technique.check``/``prepare`` when a cell cannot run here.

    A skip is a recorded result (status ``skipped``), not an error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotApplied(Exception):
    """Raised by the cell pipeline when a technique's ``verify`` says it did not take effect.

    The cell is recorded with status ``not-applied``, the reason and the values measured
    so far (the evidence), never as ``ok``.
    """

    def __init__(self, reason: str, values: tuple[Any, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.values = values
