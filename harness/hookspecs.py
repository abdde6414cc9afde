"""Every hook bench calls, typed, with its contract.

Built-in features are plugins registered through these same hooks (``DEFAULT_PLUGINS`` in
``harness.plugins``); third parties add theirs through the ``bench`` entry-point group.
Hook calls are untyped in pluggy, so each hook is called through the plugin manager
(``pm.hook.<name>()``) from exactly one typed function in ``harness.registry``. Each hook
has a section of the same name in ``docs/plugins.md``.

An implementation may take fewer arguments than its specification (pluggy passes only those
it names), never others: ``register_techniques(extra)`` stops start-up with a
``PluginError``. Wrappers (``@hookimpl(wrapper=True)``) surround every other
implementation of a hook and may change its combined result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.markers import hookspec

if TYPE_CHECKING:
    from harness.models.base import ModelSource
    from harness.probes import Probe
    from harness.results import MetricDef
    from harness.technique import Technique
    from harness.textsources import TextSource
    from harness.workloads import Workload


# ---------------------------------------------------------------- registration (start-up)


@hookspec
def register_techniques() -> list[type[Technique]]:
    """Return technique classes this plugin provides.

    Called once at start-up. Each class carries its own ``name`` (the key used in suites);
    two plugins registering the same name stop start-up with a ``PluginError``.
    """


@hookspec
def register_workloads() -> list[type[Workload]]:
    """Return workload classes (``generate``, accuracy tasks, ...) this plugin provides.

    Called once at start-up. A workload owns its measurement loop and returns the standard
    ``Measurement``; names must be unique across plugins.
    """


@hookspec
def register_probes() -> list[type[Probe]]:
    """Return measurement back-end classes (memory, energy) this plugin provides.

    Called once per worker. A probe that cannot run on the current machine reports why
    through ``Probe.unavailable()`` and becomes a null probe; it must never raise there.
    """


@hookspec
def register_metrics() -> list[MetricDef]:
    """Return the metrics this plugin emits, with unit, direction and kind.

    The dashboard reads direction (``higher_is_better``) from this registry to draw Pareto
    frontiers, and ``kind`` to choose its accuracy axis and leaderboard columns. A value
    whose name is not registered is left out of its cell, which keeps the others; the
    cell's reason names it.
    """


@hookspec
def register_model_sources() -> list[type[ModelSource]]:
    """Return model source classes: how a model id (hub id, folder, GGUF file, built-in
    asset) is recognised and loaded.

    The first source whose ``matches`` accepts an id loads it. Sources of plugins registered
    later (third parties) are asked first; within one plugin, in the order returned.
    """


@hookspec
def register_text_sources() -> list[type[TextSource]]:
    """Return text source classes: named corpora used for prompts and evaluation.

    Asked in the same order as model sources: later plugins first, then the order returned.
    """


# ---------------------------------------------------------------- environment


@hookspec
def environment_info() -> dict[str, str]:
    """Return facts to store with every run: the versions of the libraries this plugin uses.

    Called once per run in the parent process; the dictionaries of all plugins are merged
    into the run's environment record beside the core's library versions. Keys are
    distribution names (``"bitsandbytes"``) for versions, dotted names (``"mylib.backend"``)
    for anything else. ``harness.package_versions("mylib")`` gives the versions of the
    installed ones, so an implementation is one line.
    """
