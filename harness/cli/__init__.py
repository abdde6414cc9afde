"""The ``bench`` command: group and entry point in ``app``, commands by purpose."""

from __future__ import annotations

from harness.cli import bundle, compare, estimate, info, measure, newplugin, results
from harness.cli.app import cli, main

for _module in (measure, results, compare, estimate, info, bundle, newplugin):
    for _command in _module.COMMANDS:
        cli.add_command(_command)

__all__ = ["cli", "main"]
