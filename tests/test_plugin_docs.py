"""Every kind of thing a plugin can add has a minimal example in docs/plugins.md, and each
example works: registered as a plugin module and run on the tiny built-in model.

(``tests/test_plugins.py`` checks that each hook's example registers; here they run.)
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

from harness.testing import registry_with, run_accuracy, run_technique

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"

pytestmark = pytest.mark.slow


def section(heading: str) -> str:
    """The text under a ``##``-``####`` heading, up to the next such heading (a ``#`` line
    inside a code block is a comment, not a heading)."""
    text = DOCS.read_text()
    match = re.search(rf"^#{{2,4}} {re.escape(heading)}\s*$", text, flags=re.MULTILINE)
    assert match, f"docs/plugins.md has no heading {heading!r}"
    rest = text[match.end() :]
    following = re.search(r"^#{2,4} ", rest, flags=re.MULTILINE)
    return rest[: following.start()] if following else rest


def example(heading: str) -> types.ModuleType:
    """The one python example of a section, as a plugin module."""
    (code,) = re.findall(r"```python\n(.*?)```", section(heading), flags=re.DOTALL)
    name = "docs_" + re.sub(r"\W+", "_", heading).strip("_")
    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(code), f"<docs/plugins.md: {heading}>", "exec"), module.__dict__)
    return module


def test_the_kinds_table_names_every_hook() -> None:
    table = section("What a plugin can add")
    for hook in (
        "register_techniques",
        "register_workloads",
        "register_metrics",
        "register_probes",
        "register_model_sources",
        "register_text_sources",
        "environment_info",
    ):
        assert f"`{hook}`" in table
    for kind in ("technique", "accuracy task", "measure workload", "metric", "probe"):
        assert f"\n| {kind}" in table


def test_technique_example_runs() -> None:
    result = run_technique("no-cache", plugins=[example("register_techniques()")])
    assert result.status == "ok", result.reason
    assert (result.value("latency.tpot_s") or 0) > 0


def test_accuracy_task_example_runs() -> None:
    result = run_accuracy("chars-per-token", plugins=[example("register_workloads()")])
    assert result.status == "ok", result.reason
    assert 2 < (result.value("text.chars_per_token") or 0) < 8


def test_measure_workload_example_runs() -> None:
    prefill = example("A measure workload")
    result = run_technique(
        "baseline", measure="prefill", workload={"tokens": 16}, repeats=3, plugins=[prefill]
    )
    assert result.status == "ok", result.reason
    (value,) = [v for v in result.result.values if v.name == "latency.prefill_s"]
    assert value.n == 3 and len(value.samples) == 3 and (value.value or 0) > 0
    assert result.bytes("memory.weights_bytes") > 0  # the harness's own values come too


def test_metric_example_runs() -> None:
    result = run_technique("count-layers", plugins=[example("register_metrics()")])
    assert result.status == "ok", result.reason
    assert result.value("depth.layers") == 2
    (value,) = [v for v in result.result.values if v.name == "depth.layers"]
    assert value.unit == "layers"


def test_probe_example_runs() -> None:
    result = run_technique("baseline", plugins=[example("register_probes()")])
    assert result.status == "ok", result.reason
    assert (result.value("cpu.process_time_s") or 0) > 0


def test_model_source_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.assets import cache_dir
    from harness.testing import load_model

    load_model("tiny-random-llama")  # made on first use, into the cache folder
    monkeypatch.setenv("MODEL_MIRROR", str(cache_dir() / "models"))
    mirror = example("register_model_sources()")
    result = run_technique("baseline", model="mirror:tiny-random-llama", plugins=[mirror])
    assert result.status == "ok", result.reason
    assert result.result.model == "mirror:tiny-random-llama"


def test_text_source_example_runs() -> None:
    task = {"perplexity": {"text": "pangrams", "tokens": 64, "window": 32, "stride": 16}}
    result = run_accuracy(task, plugins=[example("register_text_sources()")])
    assert result.status == "ok", result.reason
    assert math.isfinite(result.value("accuracy.perplexity") or math.nan)


def test_environment_info_example_registers() -> None:
    registry = registry_with([example("environment_info()")])
    assert isinstance(registry.environment_info(), dict)


def test_testing_section_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "plugin_example"))
    monkeypatch.delitem(sys.modules, "bench_attn", raising=False)
    example("Testing a plugin")  # its asserts are the test
