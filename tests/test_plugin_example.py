"""The plugin author guide's example (docs/plugin_example) works as documented."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "plugin_example"))

import bench_attn  # noqa: E402

from harness.testing import run_technique  # noqa: E402


@pytest.mark.slow
def test_example_technique_runs_and_restores_the_model() -> None:
    from harness.testing import registry_with
    from harness.worker import Worker

    worker = Worker("cpu", registry_with([bench_attn]))
    baseline = run_technique("baseline", worker=worker)
    eager = run_technique({"attn-impl": {"implementation": "eager"}}, worker=worker)
    assert eager.status == "ok", eager.reason
    assert eager.value("attn.layers_switched") == 2
    # Same weights, same workload: the cache holds the same tokens either way.
    assert eager.value("memory.kv_cache_bytes") == baseline.value("memory.kv_cache_bytes")
    # The loaded model went back to its own kernel for the next cell.
    loaded = next(iter(worker._loaded.values())).model
    assert loaded.config._attn_implementation == "sdpa"


def test_flash_attention_is_skipped_without_the_package() -> None:
    result = run_technique(
        {"attn-impl": {"implementation": "flash_attention_2"}}, plugins=[bench_attn]
    )
    assert result.status == "skipped"
    assert result.reason == "needs the flash-attn package and a CUDA GPU"
