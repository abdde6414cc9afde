from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_PLUGINS = ROOT / "tests" / "plugins"
sys.path.insert(0, str(TEST_PLUGINS))


@pytest.fixture
def test_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load tests/plugins/bench_testplugins.py as a plugin, here and in spawned workers."""
    monkeypatch.setenv("BENCH_PLUGINS", "bench_testplugins")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TEST_PLUGINS), str(ROOT)]))


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bench.db'}"


# -- PostgreSQL: a private throwaway cluster (harness/postgres.py) ---------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL cluster on a free loopback port, for the whole session.

    Yields the server's URL without a database name; :func:`pg_url` makes a fresh database
    per test. Skips, with the reason, where no server can be started.
    """
    from harness.postgres import ClusterUnavailable, private_cluster

    try:
        cluster = private_cluster()
        url = cluster.__enter__()
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        cluster.__exit__(None, None, None)


_databases = itertools.count(1)


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A new, empty database on the private cluster (psycopg2 driver)."""
    from harness.postgres import create_database

    return create_database(pg_server, f"bench_{next(_databases)}")
