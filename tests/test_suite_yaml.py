"""Hostile suite files: every one a one-line ``SuiteError`` naming the place and the fix.

The property tests feed the loader generated documents (random mappings, types, unicode,
sizes, raw bytes) and accept only a valid suite or a one-line ``SuiteError``.
"""

from __future__ import annotations

import codecs
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import SuiteError
from harness.registry import Registry
from harness.suite import Suite, TooManyCells, load_suite
from harness.suite_yaml import MAX_ALIAS_EXPANSION, MAX_DEPTH, parse_suite, read_suite_text
from harness.testing import registry_with

GOOD = "name: t\nmodels: [smollm2-135m]\nworkload: {generate: {prompt_tokens: 8}}\n"


@pytest.fixture(scope="module")
def registry() -> Registry:
    import bench_testplugins

    return registry_with([bench_testplugins])


def write(tmp_path: Path, content: str | bytes, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def refused(path: Path, registry: Registry) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path, registry, devices=["cpu"])
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


# --- duplicated keys ---------------------------------------------------------------------------


def test_duplicated_key_names_the_key_and_both_lines(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, GOOD + "techniques: [baseline]\ntechniques: [listy]\n")
    message = refused(path, registry)
    assert f"{path}:5: key 'techniques' is given twice (lines 4 and 5)" in message
    assert "Remove one of them" in message


def test_duplicated_key_in_a_nested_flow_mapping(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, GOOD + "policy: {repeats: 2, repeats: 3}\n")
    assert "key 'repeats' is given twice (both on line 4)" in refused(path, registry)


def test_merge_keys_may_be_overridden(tmp_path: Path, registry: Registry) -> None:
    text = (
        "name: t\nmodels: [smollm2-135m]\n"
        "x-defaults: &defaults {prompt_tokens: 8, new_tokens: 4}\n"
        "workload: {generate: {<<: *defaults, new_tokens: 3}}\n"
    )
    _, data = parse_suite(text, Path("s.yaml"))
    assert data["workload"] == {"generate": {"prompt_tokens": 8, "new_tokens": 3}}


# --- nesting, aliases --------------------------------------------------------------------------


def test_deep_nesting_is_refused_before_the_parser_recurses(
    tmp_path: Path, registry: Registry
) -> None:
    path = write(tmp_path, "name: t\nmodels: " + "[" * 5000 + "]" * 5000 + "\n")
    message = refused(path, registry)
    assert f"{path}:2: suite nested too deeply (more than {MAX_DEPTH} levels" in message


def test_nesting_at_the_limit_parses() -> None:
    depth = MAX_DEPTH - 1  # the top mapping is one level
    _, data = parse_suite("a: " + "[" * depth + "]" * depth, Path("s.yaml"))
    for _ in range(depth):
        data = data["a"] if isinstance(data, dict) else data[0]


BOMB = "name: t\nmodels: [smollm2-135m]\nworkload: {generate: {prompt_tokens: 8}}\nexclude:\n"
BOMB += '  - {a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]}\n'
for _i, (_new, _old) in enumerate(zip("bcdefghi", "abcdefgh", strict=True)):
    BOMB += f"  - {{{_new}: &{_new} [{', '.join([f'*{_old}'] * 9)}]}}\n"


def test_alias_bomb_is_refused_before_expansion(tmp_path: Path, registry: Registry) -> None:
    message = refused(write(tmp_path, BOMB), registry)
    assert "YAML aliases expand the suite to 490,329,086 values from 50 written" in message
    assert f"more than {MAX_ALIAS_EXPANSION:,} added" in message


def test_recursive_alias_is_refused(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "name: t\nmodels: &m [smollm2-135m, *m]\nworkload: {generate: {}}\n")
    assert "a YAML alias refers to the list or mapping that contains it" in refused(path, registry)


def test_aliases_that_nest_too_deeply_are_refused() -> None:
    half = MAX_DEPTH - 10
    text = "a: &a " + "[" * half + "]" * half + "\nb: " + "[" * half + "*a" + "]" * half + "\n"
    with pytest.raises(SuiteError, match="YAML aliases nest the suite"):
        parse_suite(text, Path("s.yaml"))


def test_modest_aliases_are_fine(tmp_path: Path, registry: Registry) -> None:
    text = (
        "name: t\nmodels: [smollm2-135m]\ndevices: [cpu]\n"
        "workload: {generate: {prompt_tokens: &sizes [8, 16]}}\n"
        "techniques: [{listy: {ratio: 0.5}}]\nexclude: [{prompt_tokens: *sizes, batch_size: 9}]\n"
    )
    assert len(load_suite(write(tmp_path, text), registry, devices=["cpu"]).cells) == 2


# --- encodings and binary files ----------------------------------------------------------------


def test_latin1_file_names_the_line_and_the_iconv_fix(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, (GOOD + "description: café crème\n").encode("latin-1"))
    message = refused(path, registry)
    assert f"{path}:4: not UTF-8 (byte 0xE9, perhaps Latin-1" in message
    assert "iconv -f latin1 -t utf-8 suite.yaml > fixed.yaml" in message


@pytest.mark.parametrize(
    "content",
    [
        bytes(range(256)) * 8,
        b"\x89PNG\r\n\x1a\n" + bytes(200),
        bytes([0x80 + (i * 37) % 0x7F for i in range(2000)]),  # no NUL, not UTF-8
    ],
    ids=["all-bytes", "png", "high-bytes"],
)
def test_binary_file_is_not_a_yaml_text_file(
    tmp_path: Path, registry: Registry, content: bytes
) -> None:
    assert "not a YAML text file" in refused(write(tmp_path, content), registry)


def test_control_character_is_refused_with_its_line(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, GOOD + "description: bell \x07 here\n")
    message = refused(path, registry)
    assert f"{path}:4: not a YAML text file (character U+0007 is not allowed" in message


@pytest.mark.parametrize(
    ("bom", "encoding"),
    [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (b"", "utf-8")],
    ids=["utf-8-bom", "utf-16-bom", "utf-8"],
)
def test_unicode_encodings_with_a_mark_are_read(
    tmp_path: Path, registry: Registry, bom: bytes, encoding: str
) -> None:
    text = GOOD + "description: ünïcødé ✓ 测试\n"
    path = write(tmp_path, bom + text.encode(encoding))
    assert read_suite_text(path) == text
    suite = load_suite(path, registry, devices=["cpu"])
    assert suite.file.description == "ünïcødé ✓ 测试"


def test_huge_file_is_refused_unread(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "suite.yaml"
    with path.open("wb") as file:
        file.truncate(5 << 20)
    assert "5,242,880 bytes is too large for a suite" in refused(path, registry)


def test_newlines_in_keys_stay_on_one_line(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, GOOD + '"bad\\nkey": 1\n')
    assert "bad\\nkey: Extra inputs are not permitted" in refused(path, registry)


# --- the matrix limit --------------------------------------------------------------------------


def test_a_million_cells_are_refused_before_any_is_built(
    tmp_path: Path, registry: Registry
) -> None:
    sizes = ", ".join(str(i) for i in range(1, 1001))
    text = (
        "name: t\nmodels: [smollm2-135m]\ndevices: [cpu]\n"
        f"workload: {{generate: {{prompt_tokens: [{sizes}], batch_size: [{sizes}]}}}}\n"
    )
    path = write(tmp_path, text)
    with pytest.raises(TooManyCells) as info:
        load_suite(path, registry, devices=["cpu"])
    assert info.value.cells == 1_000_000 and info.value.exact
    assert "the matrix has 1,000,000 cells; the limit is 10,000" in str(info.value)
    assert "--max-cells 1000000" in str(info.value)
    few = write(tmp_path, text.replace(sizes, "1, 2, 3"), "few.yaml")
    assert len(load_suite(few, registry, devices=["cpu"], max_cells=9).cells) == 9
    with pytest.raises(TooManyCells):
        load_suite(few, registry, devices=["cpu"], max_cells=8)


def test_limit_with_exclude_counts_the_remaining_cells(tmp_path: Path, registry: Registry) -> None:
    text = (
        "name: t\nmodels: [smollm2-135m]\ndevices: [cpu]\n"
        "workload: {generate: {prompt_tokens: [1, 2, 3, 4], batch_size: [1, 2, 3]}}\n"
        "exclude: [{batch_size: [2, 3]}]\n"
    )
    path = write(tmp_path, text)
    assert len(load_suite(path, registry, devices=["cpu"], max_cells=4).cells) == 4
    with pytest.raises(TooManyCells) as info:
        load_suite(path, registry, devices=["cpu"], max_cells=3)
    assert not info.value.exact
    assert "more than 3 cells (up to 12 before 'exclude')" in str(info.value)


# --- property: the loader yields a suite or a one-line SuiteError, nothing else ----------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["baseline", "listy", "smollm2-135m", "cpu", "cuda:0", "generate", "auto"])
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(["ratio", "bits"]), children, max_size=4
        )
    ),
    max_leaves=20,
)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten, any value otherwise, so documents get past the schema
    into expansion and validation of techniques, workloads and the matrix."""
    return st.integers(0, 9).flatmap(lambda i: VALUES if i == 0 else valid)


NUMBERS = st.integers(min_value=1, max_value=64) | st.lists(st.integers(1, 64), max_size=3)
PARAMS = st.dictionaries(
    st.sampled_from(["prompt_tokens", "new_tokens", "batch_size", "grounded", "seq_len", "x"]),
    mostly(NUMBERS | st.booleans()),
    max_size=4,
)
CONFIGS = st.dictionaries(
    st.sampled_from(["ratio", "modules", "seconds", "dtype", "bits"]),
    mostly(st.floats(0, 1) | st.sampled_from(["fp32", "bf16", "lm_head"]) | NUMBERS),
    max_size=2,
)
STACKS = st.sampled_from(["baseline", "listy", "skippy", "precision", "nope"]) | st.dictionaries(
    st.sampled_from(["listy", "sleepy", "precision", "nope"]), st.none() | CONFIGS, max_size=2
)
SUITES = st.fixed_dictionaries(
    {
        "name": mostly(st.text(min_size=1, max_size=10)),
        "models": mostly(
            st.lists(
                st.sampled_from(["smollm2-135m", "tiny-random-llama"])
                | st.fixed_dictionaries(
                    {"id": st.just("smollm2-135m")},
                    optional={"dtype": mostly(st.sampled_from(["auto", "bfloat16"]))},
                ),
                min_size=1,
                max_size=2,
            )
        ),
        "workload": mostly(
            st.dictionaries(
                st.sampled_from(["generate", "generate", "train", "x"]),
                PARAMS,
                min_size=1,
                max_size=1,
            )
        ),
    },
    optional={
        "devices": mostly(
            st.lists(st.sampled_from(["cpu", "cpu", "auto", "cuda:1", "gpu"]), max_size=2)
        ),
        "techniques": mostly(st.lists(STACKS | st.lists(STACKS, max_size=2), max_size=3)),
        "reference": STACKS,
        "exclude": mostly(
            st.lists(
                st.dictionaries(
                    st.sampled_from(["model", "technique", "batch_size", "ratio", "x"]),
                    mostly(NUMBERS | st.sampled_from(["listy", "baseline"])),
                ),
                max_size=2,
            )
        ),
        "accuracy": mostly(
            st.lists(
                st.sampled_from(["perplexity", "passkey", "nope"])
                | st.dictionaries(st.sampled_from(["perplexity", "agreement"]), st.none() | PARAMS),
                max_size=2,
            )
        ),
        "policy": mostly(
            st.dictionaries(
                st.sampled_from(["warmup", "repeats", "timeout_s", "target_ci", "nope"]),
                mostly(st.integers(0, 9) | st.floats(0, 100)),
            )
        ),
        "description": mostly(st.text(max_size=10)),
    },
)


def _load(content: str | bytes, registry: Registry) -> Suite | None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "suite.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        try:
            return load_suite(path, registry, devices=["cpu"])
        except SuiteError as exc:
            assert "\n" not in str(exc) and "\r" not in str(exc), str(exc)
            assert str(exc).startswith(str(path)), str(exc)
            return None


BOUNDED = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@BOUNDED
@given(doc=SUITES)
def test_generated_suite_documents_load_or_fail_in_one_line(registry: Registry, doc: Any) -> None:
    suite = _load(yaml.safe_dump(doc, allow_unicode=True), registry)
    if suite is not None:
        assert suite.cells and all(c.key for c in suite.cells)


@BOUNDED
@given(doc=VALUES)
def test_generated_yaml_values_load_or_fail_in_one_line(registry: Registry, doc: Any) -> None:
    _load(yaml.safe_dump(doc, allow_unicode=True), registry)


@BOUNDED
@given(text=st.text(max_size=200))
def test_generated_text_loads_or_fails_in_one_line(registry: Registry, text: str) -> None:
    _load(text, registry)


@BOUNDED
@given(data=st.binary(max_size=300))
def test_generated_bytes_load_or_fail_in_one_line(registry: Registry, data: bytes) -> None:
    _load(data, registry)
