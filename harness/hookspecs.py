"""Every hook bench calls, typed, with its contract.

Built-in features are plugins registered through these same hooks (``DEFAULT_PLUGINS`` in
``harness.plugins``); third parties add theirs through the ``bench`` entry-point group.
Hook calls are untyped in pluggy, so each hook is called from exactly one typed function in
``harness.registry``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.markers import hookspec

if TYPE_CHECKING:
    from harness.models.base import ModelSource
    from harness.probes import Probe
    from harness.results import CellResult, MetricDef
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
    """Return the metrics this plugin emits, with unit and direction.

    The dashboard reads direction (``higher_is_better``) from this registry to draw Pareto
    frontiers; a value whose name is not registered is rejected when it is recorded.
    """


@hookspec
def register_model_sources() -> list[type[ModelSource]]:
    """Return model source classes: how a model id (hub id, folder, GGUF file, built-in
    asset) is recognised and loaded. The first source whose ``matches`` accepts an id
    loads it; sources of later plugins are asked first.
    """


@hookspec
def register_text_sources() -> list[type[TextSource]]:
    """Return text source classes: named corpora used for prompts and evaluation."""


# ---------------------------------------------------------------- environment and results


@hookspec
def environment_info() -> dict[str, Any]:
    """Return extra facts to store with every run (library versions, hardware details).

    Called once per run in the parent process; keys are merged into the run's environment
    record, so keep them namespaced (``"mylib.version"``).
    """


@hookspec
def result_recorded(result: CellResult, run_id: int) -> None:
    """Called in the parent process after a cell's result is committed to the store.

    For sinks (export, notification). Must not raise: a failing sink is reported and the
    suite goes on.
    """
