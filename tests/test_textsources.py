"""Text sources: resolution, the built-in Shakespeare, local files and the hf: form."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness import assets
from harness.errors import BenchError
from harness.textsources import (
    PROMPT_FRACTION,
    FileSource,
    HFDatasetSource,
    ShakespeareSource,
    parse_hf_ref,
    register_text_sources,
    resolve_text_source,
)

SOURCES = register_text_sources()


def test_sources_are_registered_in_priority_order() -> None:
    assert [s.name for s in SOURCES] == ["shakespeare", "hf-dataset", "file"]


def test_resolution_by_shape(tmp_path: Path) -> None:
    cases = {
        "shakespeare": ShakespeareSource,
        "hf:wikitext/wikitext-2-raw-v1": HFDatasetSource,
        "notes.txt": FileSource,
        "README.md": FileSource,
        str(tmp_path): FileSource,
        "./corpus": FileSource,
    }
    for ref, expected in cases.items():
        assert type(resolve_text_source(ref, SOURCES)) is expected, ref


def test_unknown_reference_names_what_is_allowed() -> None:
    with pytest.raises(BenchError) as caught:
        resolve_text_source("wikitext", SOURCES)
    assert str(caught.value) == (
        "unknown text 'wikitext': not a built-in (shakespeare), a .txt/.md file or folder of "
        ".txt files, or 'hf:DATASET/CONFIG'. Fix the suite's accuracy[].text."
    )


# ---------------------------------------------------------------- shakespeare


def test_shakespeare_source_serves_the_fixed_splits_from_a_process_cache() -> None:
    source = ShakespeareSource()
    source.check("shakespeare")
    prompt = source.load("shakespeare", "prompt")
    evaluation = source.load("shakespeare", "eval")
    assert prompt == assets.shakespeare_text("prompt")
    assert evaluation == assets.shakespeare_text("eval")
    assert prompt and evaluation and prompt != evaluation
    assert source.load("shakespeare", "prompt") is prompt  # cached, not re-read


def test_bad_split_is_an_error() -> None:
    with pytest.raises(BenchError, match="unknown text split 'test'"):
        ShakespeareSource().load("shakespeare", "test")  # type: ignore[arg-type]


# ---------------------------------------------------------------- local files


def test_single_file_splits_at_ninety_percent_of_characters(tmp_path: Path) -> None:
    text = "".join(f"line {i:04d}\n" for i in range(100)).strip()  # 999 characters
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    source = FileSource()
    prompt = source.load(str(path), "prompt")
    evaluation = source.load(str(path), "eval")
    assert PROMPT_FRACTION == 0.9
    assert (len(prompt), len(evaluation)) == (899, 100)
    assert prompt + evaluation == text


def test_folder_of_files_is_read_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second " * 50)
    (tmp_path / "a.txt").write_text("first " * 50)
    (tmp_path / "notes.md").write_text("ignored")
    whole = ("first " * 50).strip() + "\n\n" + ("second " * 50).strip()
    source = FileSource()
    assert source.load(str(tmp_path), "prompt") + source.load(str(tmp_path), "eval") == whole
    assert source.load(str(tmp_path), "prompt").startswith("first")


def test_folder_with_prompt_and_eval_files_gives_the_split(tmp_path: Path) -> None:
    (tmp_path / "prompt.txt").write_text("calibration text\r\n")
    (tmp_path / "eval.txt").write_text("held-out text\n\n\n\n\n\nend")
    source = FileSource()
    assert source.load(str(tmp_path), "prompt") == "calibration text"
    assert source.load(str(tmp_path), "eval") == "held-out text\n\n\nend"


def test_file_errors_name_the_path_and_the_fix(tmp_path: Path) -> None:
    source = FileSource()
    with pytest.raises(BenchError, match=r"text file 'missing\.txt' not found .*'shakespeare'"):
        source.check("missing.txt")
    with pytest.raises(BenchError, match=r"holds no \.txt files"):
        source.check(str(tmp_path))
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    with pytest.raises(BenchError, match=r"is not \.txt or \.md"):
        source.check(str(tmp_path / "doc.pdf"))
    (tmp_path / "tiny.txt").write_text("a")
    with pytest.raises(BenchError, match=r"too short to split \(1 characters\)"):
        source.load(str(tmp_path / "tiny.txt"), "prompt")


# ---------------------------------------------------------------- hf: datasets


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hf:wikitext/wikitext-2-raw-v1", ("wikitext", "wikitext-2-raw-v1")),
        (
            "hf:Salesforce/wikitext/wikitext-103-raw-v1",
            ("Salesforce/wikitext", "wikitext-103-raw-v1"),
        ),
        ("hf:tiny_shakespeare", ("tiny_shakespeare", None)),
    ],
)
def test_parse_hf_ref(ref: str, expected: tuple[str, str | None]) -> None:
    assert parse_hf_ref(ref) == expected


@pytest.mark.parametrize("ref", ["hf:", "hf:a/b/c/d"])
def test_malformed_hf_ref_is_an_error(ref: str) -> None:
    with pytest.raises(BenchError, match="expected 'hf:DATASET'"):
        parse_hf_ref(ref)


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is not None, reason="datasets is installed here"
)
def test_hf_dataset_without_the_datasets_package_says_how_to_fix() -> None:
    with pytest.raises(BenchError, match=r"needs the 'datasets' package.*pip install datasets"):
        HFDatasetSource().check("hf:wikitext/wikitext-2-raw-v1")
