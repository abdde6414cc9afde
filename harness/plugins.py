"""Builds the plugin manager: built-in plugins first, then entry points of group ``bench``."""

from __future__ import annotations

import importlib
import os

import pluggy

from harness import hookspecs
from harness.errors import PluginError
from harness.markers import PROJECT

# Built-in features are plugins, registered exactly like third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "harness.models.sources",
    "harness.textsources",
    "harness.probes",
    "harness.workloads.generate",
    "harness.workloads.perplexity",
    "harness.workloads.passkey",
    "harness.workloads.agreement",
    "harness.workloads.lmeval",
    "harness.workloads.train",
    "harness.metrics",
    "plugins.baseline",
    "plugins.precision",
    "plugins.optim",
    "plugins.adam8bit",
    "plugins.apollo",
    "plugins.checkpointing",
    "plugins.galore",
    "plugins.lora",
    "plugins.mixed_precision",
    "plugins.weight_quant",
    "plugins.kv_quant",
    "plugins.kv_evict",
    "plugins.speculative",
    "plugins.gqa",
    "plugins.offload",
)

_HINT = "Hooks and their arguments are listed in docs/plugins.md ('bench plugins' lists plugins)."


def get_plugin_manager(extra: tuple[object, ...] = ()) -> pluggy.PluginManager:
    """Return a manager with the built-ins, installed entry points and ``extra`` plugins.

    Every implementation is validated here, at start-up: its hook must exist and it may
    take only arguments its hook specification names.

    Args:
        extra: plugin objects (modules or instances) registered last, e.g. by tests.

    Raises:
        PluginError: a plugin fails to import, implements a hook that does not exist, or
            declares an argument its hook does not pass. The message is one line.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        _register(pm, importlib.import_module(name), name)
    try:
        pm.load_setuptools_entrypoints(PROJECT)
    except pluggy.PluginValidationError as exc:
        raise _invalid(exc) from exc
    except Exception as exc:  # a broken third-party package must name itself
        raise PluginError(
            f"a plugin of entry-point group {PROJECT!r} failed to load: {exc!r}. "
            "Fix or uninstall it (pip uninstall <package>); 'bench plugins' lists them."
        ) from exc
    # BENCH_PLUGINS: comma-separated modules to load as plugins without packaging them.
    for name in filter(None, (n.strip() for n in os.environ.get("BENCH_PLUGINS", "").split(","))):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(
                f"BENCH_PLUGINS: cannot import '{name}': {exc}. Fix the module path."
            ) from exc
        _register(pm, module, name)
    for plugin in extra:
        _register(pm, plugin, None)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise _invalid(exc) from exc
    return pm


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise _invalid(exc) from exc


def _invalid(exc: pluggy.PluginValidationError) -> PluginError:
    """pluggy's multi-line validation message as one line, with where to look."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return PluginError(f"{text}. {_HINT}")
