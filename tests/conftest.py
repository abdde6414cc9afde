from __future__ import annotations

import os
import sys
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
