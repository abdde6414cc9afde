"""Builds the plugin manager: built-in plugins, then entry points of group ``bench``, then
the modules named in ``$BENCH_PLUGINS``.

Plugins come from those three places and nowhere else. They are imported from the Python
path *without* the working directory that Python itself puts first for ``python -m`` and
``-c`` (:func:`trusted_path`): a module or a distribution's metadata in the directory bench
runs from, a downloaded suite's folder say, can neither add a plugin nor replace one.
Every plugin is registered once, however many of those places name it, and must support
bench's plugin API version (:mod:`harness.pluginapi`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pluggy

from harness import hookspecs
from harness.errors import PluginError
from harness.markers import PROJECT
from harness.pluginapi import check_api

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
    "harness.estimate.plugin",
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

Source = Literal["built-in", "entry point", "BENCH_PLUGINS", "extra"]

#: The folder holding the ``harness`` package: bench's own code, trusted wherever it is.
BENCH_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Origin:
    """Where a registered plugin came from.

    Attributes:
        source: ``built-in`` (``DEFAULT_PLUGINS``), ``entry point`` (an installed
            distribution), ``BENCH_PLUGINS`` or ``extra`` (passed in by a caller, e.g. tests).
        distribution: the installed distribution's project name (entry points only).
        version: the distribution's version, else the module's ``__version__``; None for
            the built-ins, which are versioned with bench itself.
    """

    source: Source
    distribution: str | None = None
    version: str | None = None

    @property
    def label(self) -> str:
        """``bench-attn 0.1.0``, ``built-in``, or the source with the version if any."""
        if self.distribution:
            return f"{self.distribution} {self.version}"
        if self.source == "built-in":
            return "built-in"
        return f"{self.source} {self.version}" if self.version else self.source


class PluginManager(pluggy.PluginManager):
    """pluggy's manager of project ``bench`` that also records each plugin's :class:`Origin`."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.origins: dict[str, Origin] = {}

    def origin(self, plugin: object) -> Origin | None:
        """Where ``plugin`` came from; None for an object this manager did not register."""
        name = self.get_name(plugin)
        return self.origins.get(name) if name is not None else None


def get_plugin_manager(extra: tuple[object, ...] = ()) -> PluginManager:
    """Return a manager with the built-ins, installed entry points and ``extra`` plugins.

    Every implementation is validated here, at start-up: its hook must exist and it may
    take only arguments its hook specification names. A plugin found twice (installed and
    also named in ``BENCH_PLUGINS``, or passed in ``extra``) is registered once.

    Args:
        extra: plugin objects (modules or instances) registered last, e.g. by tests.

    Raises:
        PluginError: a plugin fails to import, implements a hook that does not exist,
            declares an argument its hook does not pass, or does not support this plugin
            API version; two distributions declare the same entry point. The message is
            one line.
    """
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    with plugin_import_path():
        for name in DEFAULT_PLUGINS:
            _register(pm, importlib.import_module(name), name, Origin("built-in"))
        _load_entry_points(pm)
        for name in bench_plugins_modules():
            _register(pm, _import_listed(name), name, Origin("BENCH_PLUGINS"))
    for plugin in extra:
        _register(pm, plugin, None, Origin("extra"))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise _invalid(exc) from exc
    return pm


def bench_plugins_modules() -> list[str]:
    """The module names listed in ``$BENCH_PLUGINS`` (comma-separated), in order."""
    return [n.strip() for n in os.environ.get("BENCH_PLUGINS", "").split(",") if n.strip()]


# ---------------------------------------------------------------- where plugins are imported from


def trusted_path(path: Sequence[str], cwd: str | Path, *, safe_path: bool = False) -> list[str]:
    """``path`` without the entries that stand for the working directory implicitly.

    Python puts the working directory first on ``sys.path`` for ``python -m``, ``-c`` and the
    interactive prompt (as ``''`` or as its absolute path) unless ``-P`` or
    ``PYTHONSAFEPATH`` is given. That entry is left out while plugins are imported. An entry
    the user named (``PYTHONPATH``) stays, and so does the folder bench itself runs from
    (a development checkout is bench's own code).

    Args:
        path: the Python path, ``sys.path``.
        cwd: the working directory.
        safe_path: ``sys.flags.safe_path``: Python added no such entry.
    """
    left_out = _implicit(path, Path(cwd), safe_path)
    return [entry for i, entry in enumerate(path) if i not in left_out]


def _implicit(path: Sequence[str], cwd: Path, safe_path: bool) -> set[int]:
    """The positions in ``path`` of the working directory that Python put there itself."""
    found = set()
    for i, entry in enumerate(path):
        folder = cwd if entry in ("", ".") else Path(entry)
        implicit = entry in ("", ".") or (i == 0 and not safe_path and _same(folder, cwd))
        if implicit and not _same(folder, BENCH_ROOT):
            found.add(i)
    return found


@contextmanager
def plugin_import_path() -> Iterator[None]:
    """``sys.path`` as :func:`trusted_path` gives it, for the duration of the block.

    The entries left out are put back at their places afterwards; anything a plugin added
    to ``sys.path`` while it was imported stays.
    """
    original = list(sys.path)
    safe = bool(getattr(sys.flags, "safe_path", 0))
    skip = _implicit(original, Path.cwd(), safe)
    if not skip:
        yield
        return
    left_out = [(i, original[i]) for i in sorted(skip)]
    sys.path[:] = [entry for i, entry in enumerate(original) if i not in skip]
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for i, entry in left_out:
            sys.path.insert(i, entry)
        importlib.invalidate_caches()


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


# ---------------------------------------------------------------- loading and registering


def _load_entry_points(pm: PluginManager) -> None:
    """Register the entry points of group ``bench`` of every installed distribution."""
    declared: dict[str, str] = {}  # entry-point name -> distribution that declares it
    for dist in list(importlib.metadata.distributions()):
        project = dist.metadata["Name"] or "?"
        for ep in dist.entry_points.select(group=PROJECT):
            owner = declared.setdefault(ep.name, project)
            if _canonical(owner) != _canonical(project):
                raise PluginError(
                    f"entry point '{ep.name}' of group '{PROJECT}' is declared by two "
                    f"distributions, {owner} and {project}. Uninstall one of them "
                    f"(pip uninstall {project}); 'bench plugins' lists what is installed."
                )
            if pm.has_plugin(ep.name):  # the same distribution found twice on the path
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party package must name itself
                raise PluginError(
                    f"plugin '{ep.name}' of {project} {dist.version} failed to load: {exc!r}. "
                    f"Fix or uninstall it (pip uninstall {project}); 'bench plugins' lists "
                    "the installed plugins."
                ) from exc
            _register(pm, plugin, ep.name, Origin("entry point", project, dist.version))


def _import_listed(name: str) -> object:
    """The module ``name`` of ``$BENCH_PLUGINS``, imported."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise PluginError(
            f"BENCH_PLUGINS: cannot import '{name}': {exc}. Put the module's folder on "
            "PYTHONPATH (bench never imports plugins from the working directory) or "
            "pip install its package."
        ) from exc
    except Exception as exc:
        raise PluginError(
            f"BENCH_PLUGINS: importing '{name}' failed: {exc!r}. Fix the module."
        ) from exc


def _register(pm: PluginManager, plugin: object, name: str | None, origin: Origin) -> None:
    """Register ``plugin`` under ``name`` once; a plugin registered already is left as it is."""
    if pm.is_registered(plugin):
        return  # e.g. installed and also listed in BENCH_PLUGINS, or passed to the kit
    version = getattr(plugin, "__version__", None)
    if origin.version is None and origin.source != "built-in" and isinstance(version, str):
        origin = Origin(origin.source, origin.distribution, version)
    shown = name or _object_name(plugin)
    check_api(plugin, shown if origin.source == "extra" else f"{shown} ({origin.label})")
    if name is not None and pm.has_plugin(name):
        other = pm.get_plugin(name)
        raise PluginError(
            f"two plugins are named '{name}': {_object_name(other)} and {_object_name(plugin)}. "
            "Rename the entry point or the BENCH_PLUGINS module."
        )
    try:
        registered = pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise _invalid(exc) from exc
    if registered is not None:
        pm.origins[registered] = origin


def _object_name(plugin: object) -> str:
    module = getattr(plugin, "__name__", None)
    if isinstance(module, str):
        return module
    return f"{type(plugin).__module__}.{type(plugin).__qualname__} object"


def _canonical(project: str) -> str:
    """A distribution name as PEP 503 compares them (``Bench_Attn`` == ``bench-attn``)."""
    return re.sub(r"[-_.]+", "-", project).lower()


def _invalid(exc: pluggy.PluginValidationError) -> PluginError:
    """pluggy's multi-line validation message as one line, with where to look."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return PluginError(f"{text}. {_HINT}")
