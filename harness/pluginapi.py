"""The plugin API version: what a plugin may rely on, and the range each plugin supports.

bench's plugin API is the set of names ``harness`` exports for plugin authors (``Technique``,
``Workload``, ``MetricDef``, ``hookimpl``, ...), the hooks of ``harness.hookspecs`` and the
``harness.testing`` kit. Its version is :data:`PLUGIN_API_VERSION`, ``MAJOR.MINOR``: a new
minor version only adds (a hook, an optional field), a new major version may change or
remove something. A plugin module declares the versions it works with as a PEP 440
specifier in a module constant::

    BENCH_PLUGIN_API = ">=1.0,<2"

and bench refuses, at start-up, a plugin whose range does not contain its own version. A
plugin that declares nothing is taken to work with every version (plugins written before
the API had a version). This module imports nothing of bench but the error family.
"""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from harness.errors import PluginError

PLUGIN_API_VERSION = "1.0"
"""The plugin API this bench provides (``MAJOR.MINOR``)."""

DECLARATION = "BENCH_PLUGIN_API"
"""The module constant in which a plugin declares the API versions it supports."""


def supported_range(plugin: object) -> str | None:
    """The plugin's declared ``BENCH_PLUGIN_API`` specifier, or None when it declares none."""
    declared = getattr(plugin, DECLARATION, None)
    return declared if isinstance(declared, str) else None


def check_api(plugin: object, name: str, api: str = PLUGIN_API_VERSION) -> None:
    """Refuse ``plugin`` (registered as ``name``) when it does not support plugin API ``api``.

    Args:
        plugin: the plugin module or object.
        name: how the plugin is named in messages (entry point, module, distribution).
        api: the API version to check against (bench's own by default).

    Raises:
        PluginError: one line naming the plugin, the range it supports and bench's version;
            also when the declaration is not a valid specifier.
    """
    declared = getattr(plugin, DECLARATION, None)
    if declared is None:
        return
    try:
        spec = SpecifierSet(declared) if isinstance(declared, str) else None
    except InvalidSpecifier:
        spec = None
    if spec is None:
        raise PluginError(
            f"plugin {name}: {DECLARATION} = {declared!r} is not a version range; write e.g. "
            f'{DECLARATION} = ">={api},<{Version(api).major + 1}" (docs/plugins.md).'
        )
    if not spec.contains(Version(api), prereleases=True):
        raise PluginError(
            f"plugin {name} supports bench plugin API {declared}, but this bench has plugin "
            f"API {api}. Install a release of the plugin made for API {api}, or a bench whose "
            "plugin API it supports, or uninstall the plugin."
        )
