from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.errors import SuiteError
from harness.suite import Policy, json_schema, load_suite, resolve_devices
from harness.testing import registry_with

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def registry():
    import bench_testplugins

    return registry_with([bench_testplugins])


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


BASE = """\
name: t
models: [smollm2-135m]
workload:
  generate: {prompt_tokens: [16, 32], new_tokens: 4, batch_size: [1, 2]}
"""


def test_inference_suite_expands_to_the_full_matrix(registry) -> None:
    suite = load_suite(ROOT / "suites/inference.yaml", registry, devices=["cpu"])
    count = Counter(c.stack[0].name for c in suite.cells)
    # prompt_tokens {64, 256} × batch {1, 4}, plus grounded prompts at batch 1 for the
    # baseline and prompt lookup; weight-quant and gqa at 64 × 1, KV techniques at 256 × 1
    assert count == {
        "baseline": 4 + 2,
        "precision": 2 * 4,
        "weight-quant": 3 + 2 + 3 + 4,
        "gqa": 2,
        "offload": 2 * 4,
        "kv-quant": 2,
        "kv-evict": 3 + 1,  # the last one stacked with kv-quant
        "speculative": 2 * 2,
    }
    assert len({c.key for c in suite.cells}) == len(suite.cells) == 46


@pytest.mark.parametrize("path", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_suite_loads(path: Path, registry) -> None:
    assert load_suite(path, registry, devices=["cpu"]).cells


def test_auto_device_picks_the_first_gpu() -> None:
    assert resolve_devices(["auto"], ["cuda:0", "cuda:1", "cpu"]) == ["cuda:0"]
    assert resolve_devices(["auto"], ["cpu"]) == ["cpu"]
    assert resolve_devices(["all-gpus"], ["cuda:0", "cuda:1", "cpu"]) == ["cuda:0", "cuda:1"]


def test_stack_params_expand_and_defaults_resolve(tmp_path: Path, registry) -> None:
    path = write(
        tmp_path,
        BASE + "techniques:\n  - precision: {dtype: [bf16, fp32]}\n  - precision: {dtype: bf16}\n",
    )
    suite = load_suite(path, registry, devices=["cpu"])
    # The same resolved stack twice is one cell.
    assert len(suite.cells) == 2 * 4
    assert {c.stack[0].config["dtype"] for c in suite.cells} == {"bf16", "fp32"}


def test_list_parameters_do_not_expand_but_lists_of_lists_do(tmp_path: Path, registry) -> None:
    flat = write(tmp_path, BASE + "techniques:\n  - listy: {modules: [a, b]}\n")
    assert len(load_suite(flat, registry, devices=["cpu"]).cells) == 4
    nested = write(
        tmp_path, BASE + "techniques:\n  - listy: {modules: [[a], [b]], ratio: [0.1, 0.2]}\n"
    )
    cells = load_suite(nested, registry, devices=["cpu"]).cells
    assert len(cells) == 4 * 4
    assert {tuple(c.stack[0].config["modules"]) for c in cells} == {("a",), ("b",)}


def test_exclude_removes_matching_cells(tmp_path: Path, registry) -> None:
    text = (
        BASE
        + "techniques: [baseline, precision: {dtype: bf16}]\n"
        + "exclude:\n  - {technique: precision, batch_size: 2}\n"
    )
    cells = load_suite(write(tmp_path, text), registry, devices=["cpu"]).cells
    assert len(cells) == 8 - 2
    assert not any(
        c.label == "precision(dtype=bf16)" and c.workload.params["batch_size"] == 2 for c in cells
    )


def test_stacks_combine_in_order(tmp_path: Path, registry) -> None:
    text = BASE + "techniques:\n  - [precision: {dtype: fp32}, listy: {ratio: 0.25}]\n"
    cell = load_suite(write(tmp_path, text), registry, devices=["cpu"]).cells[0]
    assert cell.label == "precision(dtype=fp32)+listy(ratio=0.25)"
    assert [s.name for s in cell.stack] == ["precision", "listy"]


def test_cell_key_is_stable_and_sensitive(tmp_path: Path, registry) -> None:
    path = write(tmp_path, BASE + "techniques: [baseline]\n")
    a = load_suite(path, registry, devices=["cpu"]).cells
    b = load_suite(path, registry, devices=["cpu"]).cells
    assert [c.key for c in a] == [c.key for c in b]
    c = load_suite(path, registry, devices=["cuda:0"]).cells
    assert not {x.key for x in a} & {x.key for x in c}
    more = write(tmp_path, BASE + "techniques: [baseline]\npolicy: {repeats: 9}\n")
    assert not {x.key for x in a} & {
        x.key for x in load_suite(more, registry, devices=["cpu"]).cells
    }


def test_cell_keys_of_builtins_are_those_of_earlier_results() -> None:
    """Keys of cells that use built-ins only did not change when plugin versions entered
    the key: results measured before stay resumable. (Literals computed by bench before.)"""
    from harness.suite import suite_from_data

    data = {
        "name": "g",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": 16, "new_tokens": 4}},
        "techniques": ["baseline", {"kv-quant": {"bits": 4}}],
        "accuracy": [{"perplexity": {"tokens": 64}}],
        "policy": {"warmup": 0, "repeats": 1},
    }
    cells = suite_from_data(data, registry_with(), devices=["cpu"]).cells
    assert {c.label: c.key for c in cells} == {
        "baseline": "a74b07cbe75b0d259389a9e41416406e312a41caf5380bc5a44244a51a5aa081",
        "kv-quant": "c4bd4213e726f76979738d18f5132c29b63e2872d5fad887fc12a9b22a83a4df",
    }


def test_cell_keys_change_with_the_version_of_a_plugin_the_cell_uses(tmp_path: Path) -> None:
    import types

    from harness import Technique, hookimpl

    def release(version: str) -> types.ModuleType:
        class Prune(Technique):
            name = "prune"

        module = types.ModuleType("bench_prune_local")
        module.__version__ = version  # type: ignore[attr-defined]
        module.register_techniques = hookimpl(lambda: [Prune])  # type: ignore[attr-defined]
        return module

    path = write(tmp_path, BASE + "techniques: [baseline, prune]\n")

    def keys(version: str) -> dict[str, set[str]]:
        cells = load_suite(path, registry_with([release(version)]), devices=["cpu"]).cells
        return {
            label: {c.key for c in cells if c.label == label} for label in ("baseline", "prune")
        }

    old, same, new = keys("0.1.0"), keys("0.1.0"), keys("0.2.0")
    assert old == same
    assert old["baseline"] == new["baseline"]  # built-ins only: the old results are reused
    assert not old["prune"] & new["prune"]  # the new release is measured again


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + "techniques: [int4]\n",
            "suite.yaml:5: techniques[0]: unknown technique 'int4'. Installed:",
        ),
        (BASE + "techniques:\n  - precision: {dtype: int3}\n", "suite.yaml:6: 'precision': dtype:"),
        (BASE + "techniques:\n  - precision: {bits: 4}\n", "Extra inputs are not permitted"),
        (BASE + "policy: {repeats: 0}\n", "suite.yaml:5: policy.repeats: Input should be greater"),
        (BASE + "colour: red\n", "suite.yaml:5: colour: Extra inputs"),
        ("name: t\nmodels: [x\n", "malformed YAML"),
        (BASE.replace("generate", "no-such-workload"), "unknown workload 'no-such-workload'"),
        (BASE + "accuracy: [perplexity-typo]\n", "unknown accuracy task 'perplexity-typo'"),
        (BASE + "devices: [tpu]\n", "unknown device 'tpu'"),
        (BASE + "techniques: [baseline]\nexclude: [{batch_size: [1, 2]}]\n", "matrix is empty"),
    ],
)
def test_bad_suites_name_the_place_and_the_fix(
    tmp_path: Path, registry, text: str, expected: str
) -> None:
    with pytest.raises(SuiteError) as err:
        load_suite(write(tmp_path, text), registry, devices=["cpu"])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_default_policy() -> None:
    assert Policy().model_dump() == {
        "warmup": 2,
        "repeats": 5,
        "timeout_s": 600,
        "min_energy_window_s": 1.0,
        "target_ci": None,
        "max_repeats": 20,
        "memory_limit_gib": None,
        "preflight": True,
    }


def test_committed_schema_is_current() -> None:
    committed = json.loads((ROOT / "suites/schema.json").read_text())
    assert committed == json_schema(), "regenerate with: bench schema -o suites/schema.json"
