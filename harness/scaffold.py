"""``bench new-plugin``: a ready plugin package from the template shipped with bench.

The template (``harness/templates/plugin``, package data) is a complete package: a
``pyproject.toml`` with the ``bench`` entry point, one technique, one accuracy task, tests
that use ``harness.testing``, an example suite and a README. Its files end in ``.tmpl`` (so
bench's own linters and tests leave them alone) and hold ``{{placeholders}}`` for the
names derived from the package name; a folder named ``__module__`` becomes the module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import Version

from harness.errors import BenchError
from harness.pluginapi import PLUGIN_API_VERSION

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_SUFFIX = ".tmpl"


@dataclass(frozen=True)
class Names:
    """The names a new plugin's files use.

    Attributes:
        dist: the distribution (PyPI) name, ``bench-prune``.
        module: the import name, ``bench_prune``.
        short: the technique's name in suites, ``prune`` (``dist`` without ``bench-``);
            the accuracy task is ``<short>-match``.
        short_id: ``short`` as an identifier: the entry-point name and metric prefix.
    """

    dist: str
    module: str
    short: str
    short_id: str

    @classmethod
    def of(cls, name: str) -> Names:
        """The names for package ``name``.

        Raises:
            BenchError: ``name`` is not a lower-case package name such as ``bench-prune``.
        """
        dist = name.strip().lower().replace("_", "-")
        if not _NAME.match(dist):
            raise BenchError(
                f"'{name}' is not a package name: use lower-case letters, digits and "
                "hyphens, starting with a letter, e.g. 'bench-prune'."
            )
        short = dist.removeprefix("bench-") or dist
        return cls(dist, dist.replace("-", "_"), short, short.replace("-", "_"))

    def placeholders(self) -> dict[str, str]:
        api = Version(PLUGIN_API_VERSION)
        return {
            "{{dist}}": self.dist,
            "{{module}}": self.module,
            "{{short}}": self.short,
            "{{short_id}}": self.short_id,
            "{{api}}": f"{api.major}.{api.minor}",
            "{{api_next}}": str(api.major + 1),
        }


def template() -> Traversable:
    """The template folder shipped inside the ``harness`` package."""
    return resources.files("harness") / "templates" / "plugin"


def render(names: Names, target: Path) -> list[Path]:
    """Write the template for ``names`` into the new folder ``target``.

    Returns:
        The files written, relative to ``target``, sorted.

    Raises:
        BenchError: ``target`` exists already (nothing is overwritten).
    """
    if target.exists():
        raise BenchError(
            f"{target} exists already; choose another NAME or --directory, or remove it."
        )
    values = names.placeholders()
    files = list(_files(template(), Path()))
    written = []
    for source, relative in files:
        text = source.read_text(encoding="utf-8")
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        left = re.findall(r"\{\{\w+\}\}", text)
        if left:  # a template bug, never the user's input
            raise RuntimeError(f"template file {relative}: unknown placeholders {left}")
        out = Path(*(names.module if p == "__module__" else p for p in relative.parts))
        out = out.with_name(out.name.removesuffix(_SUFFIX))
        (target / out).parent.mkdir(parents=True, exist_ok=True)
        (target / out).write_text(text, encoding="utf-8")
        written.append(out)
    return sorted(written)


def _files(folder: Traversable, relative: Path) -> list[tuple[Traversable, Path]]:
    found: list[tuple[Traversable, Path]] = []
    for entry in folder.iterdir():
        if entry.is_dir():
            found += _files(entry, relative / entry.name)
        elif entry.name.endswith(_SUFFIX):
            found.append((entry, relative / entry.name))
    return found
