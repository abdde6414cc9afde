"""The plugin system: built-ins, entry points, start-up validation, `bench plugins`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ConfigDict

from harness import Config, Technique, hookimpl
from harness.errors import PluginError
from harness.plugins import DEFAULT_PLUGINS, get_plugin_manager
from harness.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, "-m", "harness"]


def test_builtins_register_through_the_hooks() -> None:
    registry = Registry(get_plugin_manager())
    assert {"baseline", "precision"} <= set(registry.techniques)
    assert "generate" in registry.workloads
    for name in ("latency.tpot_s", "memory.kv_cache_bytes", "memory.weights_bytes"):
        assert name in registry.metrics
    assert len(DEFAULT_PLUGINS) == len(set(DEFAULT_PLUGINS))


def test_every_hook_is_documented() -> None:
    from harness import hookspecs

    hooks = [n for n in dir(hookspecs) if n.startswith(("register_", "environment_", "result_"))]
    assert len(hooks) == 8
    for name in hooks:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name


class Duplicate(Technique):
    name = "baseline"


class DuplicatePlugin:
    @hookimpl
    def register_techniques(self) -> list[type[Technique]]:
        return [Duplicate]


def test_duplicate_names_stop_start_up() -> None:
    with pytest.raises(PluginError, match="technique 'baseline' is registered twice"):
        Registry(get_plugin_manager(extra=(DuplicatePlugin(),)))


class Misspelled:
    @hookimpl
    def register_technique(self) -> list[type[Technique]]:  # missing "s"
        return []


def test_misspelled_hooks_stop_start_up() -> None:
    with pytest.raises(PluginError, match="register_technique"):
        get_plugin_manager(extra=(Misspelled(),))


class LooseConfig(Config):
    model_config = ConfigDict(extra="allow")


class Loose(Technique):
    name = "loose"
    Config = LooseConfig


class LoosePlugin:
    @hookimpl
    def register_techniques(self) -> list[type[Technique]]:
        return [Loose]


def test_configs_must_forbid_unknown_keys() -> None:
    with pytest.raises(PluginError, match="must forbid extra fields"):
        Registry(get_plugin_manager(extra=(LoosePlugin(),)))


def _install_throwaway_package(site: Path) -> None:
    """A real distribution on sys.path: package + dist-info with a `bench` entry point."""
    (site / "bench_hello").mkdir()
    (site / "bench_hello" / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from harness import Config, Context, MetricDef, Prepared, Technique, hookimpl


            class HelloConfig(Config):
                greeting: str = "hi"


            class Hello(Technique):
                """Leaves the model alone; proves a third-party technique runs in a suite."""

                name = "hello"
                Config = HelloConfig

                def metrics(self, ctx: Context) -> dict[str, float]:
                    return {"hello.greeting_chars": len(self.config.greeting)}


            @hookimpl
            def register_techniques():
                return [Hello]


            @hookimpl
            def register_metrics():
                return [MetricDef("hello.greeting_chars", "chars", True, "length of greeting")]
            '''
        )
    )
    dist = site / "bench_hello-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-hello\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[bench]\nhello = bench_hello\n")


@pytest.mark.slow
def test_entry_point_plugin_runs_in_a_suite(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install_throwaway_package(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    listing = subprocess.run(
        [*BENCH, "plugins"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "hello" in listing and "bench-hello 1.2.3" in listing

    suite = tmp_path / "hello.yaml"
    suite.write_text(
        "name: hello\nmodels: [tiny-random-llama]\ndevices: [cpu]\n"
        "workload: {generate: {prompt_tokens: 8, new_tokens: 3}}\n"
        "techniques: [baseline, hello: {greeting: hello}]\npolicy: {warmup: 0, repeats: 1}\n"
    )
    db = f"sqlite:///{tmp_path / 'b.db'}"
    done = subprocess.run(
        [*BENCH, "run", str(suite), "--db", db], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    from harness.store import Store

    frame = Store.open(db, read_only=True).cells_frame()
    assert sorted(frame["technique"]) == ["baseline", "hello(greeting=hello)"]
    assert set(frame["status"]) == {"ok"}
    assert frame.set_index("technique").loc["hello(greeting=hello)", "hello.greeting_chars"] == 5
