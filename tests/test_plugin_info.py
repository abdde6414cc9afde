"""``bench plugins``: every kind with its parameters, one item in full, JSON for tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from harness import Config
from harness.cli import main
from harness.plugin_info import KINDS, describe, find, parameters, type_name
from harness.plugins import get_plugin_manager
from harness.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "plugin_example"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/plugin_example loaded as a BENCH_PLUGINS module (not installed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("BENCH_PLUGINS", "bench_attn")


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


class Knobs(Config):
    mode: Literal["fast", "exact"] = Field(description="how")
    ratio: float = Field(0.5, ge=0, le=1, description="a share")
    limit: int | None = Field(None, gt=2)
    names: list[str] = Field(default_factory=lambda: ["a"], min_length=1)


def test_parameters_have_readable_types_ranges_defaults_and_descriptions() -> None:
    rows = {p.name: p for p in parameters(Knobs)}
    assert (rows["mode"].type, rows["mode"].required, rows["mode"].description) == (
        "'fast' | 'exact'",
        True,
        "how",
    )
    assert (rows["ratio"].type, rows["ratio"].default, rows["ratio"].range) == (
        "float",
        0.5,
        ">= 0, <= 1",
    )
    assert (rows["limit"].type, rows["limit"].default, rows["limit"].range) == (
        "int | None",
        None,
        "> 2",
    )
    assert (rows["names"].type, rows["names"].default, rows["names"].range) == (
        "list[str]",
        ["a"],
        "length >= 1",
    )
    assert type_name(dict[str, list[int]]) == "dict[str, list[int]]"


def test_every_kind_is_described_with_its_owner(example: None) -> None:
    items = describe(Registry(get_plugin_manager()))
    assert [k for k in KINDS if any(i.kind == k for i in items)] == list(KINDS)
    (task,) = find(items, "greedy-match")
    assert (task.kind, task.plugin, task.version) == (
        "accuracy task",
        "bench_attn",
        "BENCH_PLUGINS",
    )
    assert task.details["uses_reference"] is True
    assert [p.name for p in task.parameters] == ["text", "prompts", "prompt_tokens", "new_tokens"]
    (metric,) = find(items, "greedy.token_match")
    assert metric.details == {
        "unit": "fraction",
        "higher_is_better": True,
        "metric_kind": "accuracy",
    }
    (generate,) = find(items, "generate")
    assert generate.kind == "workload" and "prompt_tokens" in {p.name for p in generate.parameters}
    (probe,) = find(items, "rss")
    assert probe.details["phase"] == "memory"


def test_bench_plugins_lists_parameters_of_techniques_workloads_and_tasks(
    example: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = bench(capsys, "plugins")
    assert code == 0
    for title in ("technique parameters", "workload parameters", "accuracy task parameters"):
        assert title in out
    assert "plugins (plugin API 1.0)" in out and ">=1.0,<2" in out  # the example declares it
    assert "list[int]" in out  # passkey's context_tokens, not eaten as markup
    assert "prompt_tokens" in out and "greedy-match" in out


def test_bench_plugins_name_shows_one_in_full(
    example: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = bench(capsys, "plugins", "greedy-match")
    assert code == 0
    assert out.startswith("accuracy task greedy-match: plugin bench_attn (BENCH_PLUGINS)")
    assert "prompts" in out and ">= 1" in out and "prompts compared" in out


def test_bench_plugins_json_is_complete_for_tools(
    example: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = bench(capsys, "plugins", "--format", "json")
    assert code == 0
    doc: dict[str, Any] = json.loads(out)
    assert doc["plugin_api"] == "1.0"
    assert {
        "name": "bench_attn",
        "version": "BENCH_PLUGINS",
        "source": "BENCH_PLUGINS",
        "api": ">=1.0,<2",
    } in doc["plugins"]
    items = {(i["kind"], i["name"]): i for i in doc["items"]}
    assert {kind for kind, _ in items} == set(KINDS)
    attn = items[("technique", "attn-impl")]
    assert attn["parameters"][0] == {
        "name": "implementation",
        "type": "'eager' | 'sdpa' | 'flash_attention_2'",
        "required": True,
        "default": None,
        "range": None,
        "description": "transformers attention implementation",
    }
    code, out, _ = bench(capsys, "plugins", "kv-quant", "--format", "json")
    assert [i["name"] for i in json.loads(out)["items"]] == ["kv-quant"]


def test_an_unknown_name_exits_2_with_the_close_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = bench(capsys, "plugins", "kv-quantt")
    assert code == 2 and out == ""
    assert err.strip() == (
        "ERROR: no installed plugin registers 'kv-quantt'. Did you mean 'kv-quant'? "
        "'bench plugins' lists everything registered."
    )
