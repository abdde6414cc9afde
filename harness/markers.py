"""The pluggy markers of project ``bench``: a leaf module, so any module may import them.

Plugins import ``hookimpl`` from ``harness`` (``from harness import hookimpl``); modules
inside ``harness`` import it from here, which imports nothing of bench and so cannot close
an import cycle (``tests/test_imports.py``).
"""

from __future__ import annotations

import pluggy

PROJECT = "bench"
"""The pluggy project name: hook markers, the plugin manager and the entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
