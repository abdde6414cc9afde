"""The ``bench`` command: group and entry point in ``app``, commands by purpose."""

from __future__ import annotations

from harness.cli import estimate, info, measure, results
from harness.cli.app import cli, main

for _module in (measure, results, info, estimate):
    for _command in _module.COMMANDS:
        cli.add_command(_command)

__all__ = ["cli", "main"]
