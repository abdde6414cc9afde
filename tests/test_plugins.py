"""The plugin system: built-ins, entry points, start-up validation, hooks, `bench plugins`.

Every hook has a ``test_hook_<name>`` here and a section in docs/plugins.md whose example is
run through the plugin manager (``test_docs_example_registers``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy
import pytest
from pydantic import BaseModel, ConfigDict

from harness import Config, MetricDef, Technique, Workload, hookimpl
from harness.environment import LIBRARIES, library_versions, package_versions
from harness.errors import PluginError
from harness.plugins import DEFAULT_PLUGINS, get_plugin_manager
from harness.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, "-m", "harness"]
DOCS = ROOT / "docs" / "plugins.md"
# The technique libraries the built-in plugins report through environment_info.
PLUGIN_LIBRARIES = (
    "bitsandbytes",
    "torchao",
    "optimum-quanto",
    "hqq",
    "peft",
    "galore-torch",
    "apollo-torch",
    "lm-eval",
)


def hook_names() -> list[str]:
    """Every hook the plugin manager knows from harness/hookspecs.py."""
    relay = get_plugin_manager().hook
    return sorted(name for name, caller in vars(relay).items() if getattr(caller, "spec", None))


HOOKS = hook_names()


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(get_plugin_manager())


def plugin_module(name: str, source: str) -> types.ModuleType:
    """A module object made from source text, to register as a plugin."""
    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"<{name}>", "exec"), module.__dict__)
    return module


# ---------------------------------------------------------------- every hook: impl, test, docs


def test_hooks_are_the_documented_set() -> None:
    # A new hook needs its docs section, a built-in implementation and a test_hook_ test.
    assert HOOKS == [
        "environment_info",
        "register_metrics",
        "register_model_sources",
        "register_probes",
        "register_techniques",
        "register_text_sources",
        "register_workloads",
    ]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_contract_a_builtin_and_a_test(hook: str) -> None:
    pm = get_plugin_manager()
    caller = getattr(pm.hook, hook)
    assert (caller.spec.function.__doc__ or "").strip(), f"{hook} has no docstring"
    builtins = {pm.get_name(impl.plugin) for impl in caller.get_hookimpls()} & set(DEFAULT_PLUGINS)
    assert builtins, f"no built-in plugin implements {hook}"
    assert callable(globals().get(f"test_hook_{hook}")), f"tests/test_plugins.py: test_hook_{hook}"


def docs_sections() -> dict[str, str]:
    """``### name()`` headings of docs/plugins.md -> the text of their section."""
    parts = re.split(r"^### (\w+)\(\)\s*$", DOCS.read_text(), flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_every_hook_has_its_docs_section_by_name() -> None:
    sections = docs_sections()
    assert sorted(sections) == HOOKS
    for hook, text in sections.items():
        for part in ("**When:**", "**Arguments:**", "**Returns:**"):
            assert part in text, f"docs/plugins.md: section {hook}() lacks {part}"
        assert len(python_blocks(text)) == 1, f"docs/plugins.md: {hook}() needs one example"


@pytest.mark.parametrize("hook", HOOKS)
def test_docs_example_registers(hook: str) -> None:
    """Each section's example, run as a plugin module, shows up in the registry."""
    (code,) = python_blocks(docs_sections()[hook])
    example = plugin_module(f"docs_example_{hook}", code)
    registry = Registry(get_plugin_manager(extra=(example,)))
    own = getattr(example, hook)()  # what the example returns on its own
    if hook == "environment_info":
        assert own.items() <= registry.environment_info().items()
        return
    views: dict[str, Callable[[], Any]] = {
        "register_techniques": lambda: registry.techniques,
        "register_workloads": lambda: registry.workloads,
        "register_probes": lambda: registry.probes,
        "register_metrics": lambda: registry.metrics,
        "register_model_sources": lambda: [s.name for s in registry.model_sources],
        "register_text_sources": lambda: [s.name for s in registry.text_sources],
    }
    names = views[hook]()
    assert own and all(item.name in names for item in own)
    if hook in ("register_model_sources", "register_text_sources"):
        assert names[0] == own[0].name  # a plugin's sources are asked before the built-ins
    plugins = {row.plugin for row in registry.registrations() if row.name == own[0].name}
    assert plugins == {example.__name__}


# ---------------------------------------------------------------- one test per hook


def test_hook_register_techniques(registry: Registry) -> None:
    assert {"baseline", "precision", "weight-quant", "kv-quant"} <= set(registry.techniques)
    assert len(DEFAULT_PLUGINS) == len(set(DEFAULT_PLUGINS))
    rows = {(r.plugin, r.kind, r.name) for r in registry.registrations()}
    assert ("plugins.baseline", "technique", "baseline") in rows


def test_hook_register_workloads(registry: Registry) -> None:
    assert {"generate", "train", "perplexity", "passkey", "agreement"} <= set(registry.workloads)
    assert registry.workloads["perplexity"].kind == "accuracy"


def test_hook_register_probes(registry: Registry) -> None:
    assert {"cpu-allocator", "rss", "nvml-counter", "rapl"} <= set(registry.probes)


def test_hook_register_metrics(registry: Registry) -> None:
    for name in ("latency.tpot_s", "memory.kv_cache_bytes", "memory.weights_bytes"):
        assert name in registry.metrics
    assert registry.metrics["latency.tpot_s"].higher_is_better is False


def test_hook_register_model_sources(registry: Registry) -> None:
    from harness.models import GGUFSource, resolve_source

    assert [s.name for s in registry.model_sources] == ["builtin", "gguf", "local", "hub"]
    # In that order a GGUF file in a folder is a GGUF file, not the hub id "models/x.gguf".
    assert type(resolve_source("models/llama.Q4_K_M.gguf", registry.model_sources)) is GGUFSource


def test_hook_register_text_sources(registry: Registry) -> None:
    assert [s.name for s in registry.text_sources] == ["shakespeare", "hf-dataset", "file"]


def test_hook_environment_info(registry: Registry) -> None:
    """The run's environment (core + hook) names every technique library that is installed,
    with its installed version; the core's own list names none of them."""
    info = {**library_versions(), **registry.environment_info()}
    installed = package_versions(*PLUGIN_LIBRARIES)
    assert installed, "no technique library is installed here: this test checks nothing"
    assert {name: info.get(name) for name in installed} == installed
    assert not set(PLUGIN_LIBRARIES) & set(LIBRARIES)
    assert {"python", "torch", "transformers", "pluggy"} <= set(library_versions())


def test_package_versions_leaves_out_what_is_not_installed() -> None:
    import importlib.metadata

    versions = package_versions("pluggy", "bench-no-such-distribution", "pydantic")
    assert list(versions) == ["pluggy", "pydantic"]
    assert versions["pluggy"] == importlib.metadata.version("pluggy") == pluggy.__version__


def test_every_hook_is_called_through_the_plugin_manager() -> None:
    """Registry views call ``pm.hook.<name>``: a hook-call monitor sees every hook."""
    pm = get_plugin_manager()
    called: list[str] = []
    undo = pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: called.append(name), lambda *args: None
    )
    try:
        registry = Registry(pm)
        registry.environment_info()
    finally:
        undo()
    assert sorted(set(called)) == HOOKS


# ---------------------------------------------------------------- start-up validation


class Duplicate(Technique):
    name = "baseline"


class DuplicatePlugin:
    @hookimpl
    def register_techniques(self) -> list[type[Technique]]:
        return [Duplicate]


def test_duplicate_names_stop_start_up_naming_both_plugins() -> None:
    expected = (
        "technique 'baseline' is registered twice: by plugins.baseline and by "
        "test_plugins.DuplicatePlugin object. Uninstall one of them"
    )
    with pytest.raises(PluginError, match=re.escape(expected)):
        Registry(get_plugin_manager(extra=(DuplicatePlugin(),)))


class Misspelled:
    @hookimpl
    def register_technique(self) -> list[type[Technique]]:  # missing "s"
        return []


def test_misspelled_hooks_stop_start_up() -> None:
    with pytest.raises(PluginError, match="unknown hook 'register_technique'"):
        get_plugin_manager(extra=(Misspelled(),))


class ExtraArgument:
    @hookimpl
    def register_techniques(self, extra: object) -> list[type[Technique]]:
        return []


class RemovedHook:
    @hookimpl
    def result_recorded(self, result: object) -> None:  # a hook bench no longer has
        pass


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        (ExtraArgument(), r"for hook 'register_techniques'.*Argument\(s\) \{'extra'\}"),
        (RemovedHook(), "unknown hook 'result_recorded'"),
    ],
)
def test_wrong_signatures_stop_start_up_with_one_line(plugin: object, expected: str) -> None:
    with pytest.raises(PluginError, match=expected) as caught:
        get_plugin_manager(extra=(plugin,))
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith(
        "Hooks and their arguments are listed in docs/plugins.md ('bench plugins' lists plugins)."
    )


def test_bench_plugins_module_with_a_bad_signature_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "bench_bad_signature.py").write_text(
        "from harness import hookimpl\n\n\n@hookimpl\ndef register_workloads(registry):\n"
        "    return []\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BENCH_PLUGINS", "bench_bad_signature")
    with pytest.raises(PluginError, match=r"Plugin 'bench_bad_signature' for hook 'register_w"):
        get_plugin_manager()


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
    with pytest.raises(PluginError, match="Config accepts unknown keys") as caught:
        Registry(get_plugin_manager(extra=(LoosePlugin(),)))
    assert "technique class test_plugins.Loose" in str(caught.value)
    assert "subclass harness.Config" in str(caught.value) and "\n" not in str(caught.value)


class PlainParams(BaseModel):  # pydantic's default: unknown keys silently ignored
    text: str = "shakespeare"


class PlainTask(Workload[Any]):
    name = "plain-task"
    kind = "accuracy"
    Params = PlainParams  # type: ignore[assignment]


class Inner(BaseModel):
    ratio: float = 0.5


class NestedConfig(Config):
    inner: Inner = Inner()


class Nested(Technique[NestedConfig]):
    name = "nested"
    Config = NestedConfig


def _plugin(**hooks: Callable[[], Any]) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(f) for name, f in hooks.items()})


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        (
            _plugin(register_workloads=lambda: [PlainTask]),
            "workload class test_plugins.PlainTask: Params accepts unknown keys (extra='ignore')",
        ),
        (
            _plugin(register_techniques=lambda: [Nested]),
            "technique class test_plugins.Nested: Config (its field type Inner) accepts unknown",
        ),
    ],
)
def test_every_parameter_model_is_strict_at_registration(plugin: object, expected: str) -> None:
    """A task's Params, or a model nested in a Config, that lets a typo through is refused
    at start-up with one line, before any suite is read."""
    with pytest.raises(PluginError, match=re.escape(expected)) as caught:
        Registry(get_plugin_manager(extra=(plugin,)))
    assert "\n" not in str(caught.value)


def test_a_typo_in_a_task_parameter_is_a_suite_error() -> None:
    from harness.errors import SuiteError
    from harness.suite import suite_from_data

    data = {
        "name": "typo",
        "models": ["tiny-random-llama"],
        "workload": {"generate": {"prompt_tokens": 8}},
        "accuracy": [{"perplexity": {"tokns": 64}}],
    }
    with pytest.raises(SuiteError, match=r"task: tokns: Extra inputs are not permitted"):
        suite_from_data(data, Registry(get_plugin_manager()), devices=["cpu"])


def test_a_metric_kind_must_be_one_of_the_kinds() -> None:
    odd = MetricDef("odd.thing", "x", True, "odd", kind="speed")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match=re.escape("metric 'odd.thing': kind 'speed' is not")):
        Registry(get_plugin_manager(extra=(_plugin(register_metrics=lambda: [odd]),)))


def test_metric_kinds_follow_the_name_unless_declared(registry: Registry) -> None:
    assert registry.metrics["accuracy.perplexity"].kind == "accuracy"
    assert registry.metrics["latency.tpot_s"].kind == "latency"
    assert registry.metrics["power.avg_w"].kind == "energy"
    assert registry.metrics["train.eval_perplexity"].kind == "accuracy"  # declared
    assert registry.metrics["stats.tpot_cv"].kind == "other"
    assert MetricDef("prune.sparsity", "fraction", True, "zeros").kind == "other"
    declared = MetricDef("greedy.match", "fraction", True, "match", kind="accuracy")
    assert declared.kind == "accuracy"


# ---------------------------------------------------------------- where plugins come from


def _dist(site: Path, module: str, version: str, body: str = "", entry: str | None = None) -> None:
    """A distribution ``bench-<module>`` installed in ``site``: module + dist-info."""
    (site / f"{module}.py").write_text(body or _TECHNIQUE.format(name=module.replace("_", "-")))
    dist = site / f"{module}-{version}.dist-info"
    dist.mkdir()
    project = module.replace("_", "-")
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[bench]\n{entry or module} = {module}\n")


_TECHNIQUE = """
from harness import Technique, hookimpl


class T(Technique):
    name = "{name}"


@hookimpl
def register_techniques():
    return [T]
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path where tests install throwaway distributions."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _forget(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.delitem(sys.modules, module, raising=False)


def test_an_installed_plugin_also_named_in_bench_plugins_is_registered_once(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/plugins.md suggests BENCH_PLUGINS for testing: with the plugin installed too it
    is one plugin, with its distribution's version, not an internal error."""
    _forget(monkeypatch, "bench_twice")
    _dist(site, "bench_twice", "2.0.1")
    monkeypatch.setenv("BENCH_PLUGINS", "bench_twice")
    registry = Registry(get_plugin_manager())
    assert "bench-twice" in registry.techniques
    rows = [r for r in registry.registrations() if r.name == "bench-twice"]
    assert [(r.plugin, r.version) for r in rows] == [("bench_twice", "bench-twice 2.0.1")]
    # ... and the testing kit given the installed module again (docs' testing example).
    import bench_twice

    again = Registry(get_plugin_manager(extra=(bench_twice,)))
    assert [r.version for r in again.registrations() if r.name == "bench-twice"] == [
        "bench-twice 2.0.1"
    ]


def test_two_distributions_declaring_one_entry_point_name_stop_start_up(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forget(monkeypatch, "bench_left", "bench_right")
    _dist(site, "bench_left", "1.0", entry="clash")
    _dist(site, "bench_right", "1.0", entry="clash")
    with pytest.raises(
        PluginError, match="entry point 'clash' of group 'bench' is declared by two"
    ):
        get_plugin_manager()


def test_a_module_in_the_working_directory_cannot_replace_or_add_a_plugin(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory bench runs from (a downloaded suite's folder) is first on sys.path
    under ``python -m``: a module named like an installed plugin, a distribution's metadata
    or a ``plugins`` package there must not be imported as a plugin."""
    _forget(monkeypatch, "bench_real", "bench_injected", "bench_local")
    _dist(site, "bench_real", "1.0")
    here = tmp_path / "suite-folder"
    here.mkdir()
    marker = tmp_path / "imported"
    evil = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n" + _TECHNIQUE
    (here / "bench_real.py").write_text(evil.format(name="shadow"))
    _dist(here, "bench_injected", "6.6.6", body=evil.format(name="injected"))
    (here / "bench_local.py").write_text(evil.format(name="local"))
    monkeypatch.chdir(here)
    monkeypatch.syspath_prepend(str(here))  # where python -m puts the working directory
    registry = Registry(get_plugin_manager())
    assert "bench-real" in registry.techniques
    assert not {"shadow", "injected"} & set(registry.techniques)
    assert not marker.exists()
    assert sys.path[0] == str(here)  # put back afterwards
    monkeypatch.setenv("BENCH_PLUGINS", "bench_local")
    with pytest.raises(PluginError, match="bench never imports plugins from the working dir"):
        get_plugin_manager()
    assert not marker.exists()


def test_an_entry_the_user_put_on_the_path_is_kept() -> None:
    from harness.plugins import BENCH_ROOT, trusted_path

    cwd = "/somewhere/suites"
    path = [cwd, "", "/usr/lib/python3", cwd, str(BENCH_ROOT)]
    assert trusted_path(path, cwd) == ["/usr/lib/python3", cwd, str(BENCH_ROOT)]
    assert trusted_path(path, cwd, safe_path=True) == [
        cwd,
        "/usr/lib/python3",
        cwd,
        str(BENCH_ROOT),
    ]
    # bench's own checkout stays usable as the working directory
    assert trusted_path([str(BENCH_ROOT), "/x"], BENCH_ROOT) == [str(BENCH_ROOT), "/x"]


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (">=2,<3", "supports bench plugin API >=2,<3, but this bench has plugin API 1.0"),
        ("one point oh", "BENCH_PLUGIN_API = 'one point oh' is not a version range"),
    ],
)
def test_a_plugin_for_another_api_is_refused_naming_both_versions(
    site: Path, monkeypatch: pytest.MonkeyPatch, declared: str, expected: str
) -> None:
    _forget(monkeypatch, "bench_future")
    body = f"BENCH_PLUGIN_API = {declared!r}\n" + _TECHNIQUE.format(name="future")
    _dist(site, "bench_future", "3.0", body=body)
    with pytest.raises(PluginError, match=re.escape(expected)) as caught:
        get_plugin_manager()
    message = str(caught.value)
    assert "\n" not in message and "bench_future (bench-future 3.0)" in message


def test_plugin_versions_are_those_of_third_party_plugins(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forget(monkeypatch, "bench_versioned")
    _dist(site, "bench_versioned", "0.3.1")
    local = plugin_module("local_plugin", _TECHNIQUE.format(name="local") + "__version__ = '7'\n")
    registry = Registry(get_plugin_manager(extra=(local,)))
    versions = registry.plugin_versions(["baseline", "bench-versioned", "local"], ["perplexity"])
    assert versions == {"bench-versioned": "0.3.1", "local_plugin": "7"}
    assert registry.plugin_versions(["baseline", "kv-quant"], ["generate", "passkey"]) == {}
    assert registry.installed_versions() == versions


# ---------------------------------------------------------------- pluggy features work


def test_a_hook_wrapper_changes_what_the_registry_sees() -> None:
    """The wrapper of the docs' hook reference hides a built-in technique everywhere."""
    reference = DOCS.read_text().split("## Hook reference", 1)[1].split("\n### ", 1)[0]
    (code,) = python_blocks(reference)
    wrapper = plugin_module("docs_example_wrapper", code)
    registry = Registry(get_plugin_manager(extra=(wrapper,)))
    assert "offload" not in registry.techniques
    assert {"baseline", "kv-quant"} <= set(registry.techniques)
    assert "offload" not in {row.name for row in registry.registrations()}


def test_a_wrapper_sees_every_plugins_result_and_may_add() -> None:
    seen: list[list[str]] = []

    class Tracer:
        @hookimpl(wrapper=True)
        def environment_info(self) -> Any:
            parts = yield
            seen.append(sorted(key for part in parts for key in part))
            return [*parts, {"tracer.wrapped": "yes"}]

    info = Registry(get_plugin_manager(extra=(Tracer(),))).environment_info()
    assert info["tracer.wrapped"] == "yes"
    assert seen and set(package_versions(*PLUGIN_LIBRARIES)) <= set(seen[0])


def test_a_plugin_registered_later_is_asked_first_and_tryfirst_is_honoured() -> None:
    order: list[str] = []

    class Late:
        @hookimpl
        def environment_info(self) -> dict[str, str]:
            order.append("late")
            return {}

    class Early:
        @hookimpl(trylast=True)
        def environment_info(self) -> dict[str, str]:
            order.append("trylast")
            return {}

    Registry(get_plugin_manager(extra=(Early(), Late()))).environment_info()
    assert order == ["late", "trylast"]


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
