"""Builds the plugin manager: built-in plugins first, then entry points of group ``bench``."""

from __future__ import annotations

import importlib
import os

import pluggy

from harness import hookspecs
from harness.errors import PluginError

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


def get_plugin_manager(extra: tuple[object, ...] = ()) -> pluggy.PluginManager:
    """Return a manager with the built-ins, installed entry points and ``extra`` plugins.

    Raises:
        PluginError: a plugin fails to import or implements a hook that does not exist.
    """
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    try:
        pm.load_setuptools_entrypoints("bench")
    except Exception as exc:  # a broken third-party package must name itself
        raise PluginError(
            f"a plugin of entry-point group 'bench' failed to load: {exc!r}. "
            "Fix or uninstall it (pip uninstall <package>); 'bench plugins' lists them."
        ) from exc
    # BENCH_PLUGINS: comma-separated modules to load as plugins without packaging them.
    for name in filter(None, os.environ.get("BENCH_PLUGINS", "").split(",")):
        try:
            pm.register(importlib.import_module(name.strip()), name=name.strip())
        except ImportError as exc:
            raise PluginError(
                f"BENCH_PLUGINS: cannot import '{name}': {exc}. Fix the module path."
            ) from exc
    for plugin in extra:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}. Hook names are listed in harness/hookspecs.py.") from exc
    return pm
