"""The plugin author guide's example (docs/plugin_example) works as documented."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "plugin_example"))

import bench_attn  # noqa: E402

from harness import Context, Prepared, Technique, hookimpl  # noqa: E402
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


@pytest.mark.slow
def test_example_accuracy_task_compares_with_the_unmodified_model() -> None:
    from harness.testing import run_accuracy, worker_with

    worker = worker_with([bench_attn])
    task = {"greedy-match": {"prompts": 3, "prompt_tokens": 16, "new_tokens": 6}}
    same = run_accuracy(task, {"attn-impl": {"implementation": "eager"}}, worker=worker)
    assert same.status == "ok", same.reason
    assert same.value("greedy.token_match") == 1.0
    # The tiny model's (tied) output embedding decides its greedy tokens: zeroing part of
    # it through a test plugin changes what it writes, and the task sees it.
    damaged = run_accuracy(task, "damage-embedding", plugins=[bench_attn, _DamageEmbedding()])
    assert damaged.status == "ok", damaged.reason
    assert (damaged.value("greedy.token_match") or 0.0) < 1.0


def test_example_declares_the_plugin_api_it_supports() -> None:
    from harness import PLUGIN_API_VERSION
    from harness.pluginapi import check_api

    assert bench_attn.BENCH_PLUGIN_API == ">=1.0,<2"
    check_api(bench_attn, "bench_attn", PLUGIN_API_VERSION)  # raises when incompatible


class _DamageEmbedding:
    @hookimpl
    def register_techniques(self) -> list[type[Technique]]:
        return [DamageEmbedding]


class DamageEmbedding(Technique):
    """Zeroes 99% of the smallest entries of the output embedding (test only)."""

    name = "damage-embedding"
    mutates_weights = True

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        import torch

        weight = prepared.model.get_output_embeddings().weight
        with torch.no_grad():
            threshold = weight.abs().flatten().kthvalue(int(0.99 * weight.numel())).values
            weight.masked_fill_(weight.abs() <= threshold, 0.0)
        return prepared
