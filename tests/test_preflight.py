"""harness/preflight.py: what ``bench check`` (and ``bench run``, before it writes) validates
beyond the suite file: models, texts long enough for their tasks, trust_remote_code, and the
wall-time estimate. Also the run-time side of devices: an absent GPU is a skipped cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import SuiteError
from harness.preflight import Estimate, estimate, human_duration, preflight
from harness.registry import Registry
from harness.results import CellResult, Value
from harness.store import Store
from harness.suite import SuiteFile, load_suite
from harness.testing import registry_with


def words(n: int) -> str:
    """``n`` tokens for the word-level tokenizer of :func:`local_model`."""
    return " ".join(f"w{i}" for i in range(n)) + "\n"


def text_folder(folder: Path, prompt_words: int = 90, eval_words: int = 10) -> Path:
    """A local text with explicit splits (``prompt.txt``, ``eval.txt``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompt.txt").write_text(words(prompt_words))
    (folder / "eval.txt").write_text(words(eval_words))
    return folder


@pytest.fixture(scope="module")
def registry() -> Registry:
    return registry_with()


def local_model(folder: Path, *, tokenizer: bool) -> Path:
    """A model folder that passes ``bench check``: config.json, a weights file, and
    optionally a word-level tokenizer.json (one token per whitespace-separated word)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"")
    if tokenizer:
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import Whitespace

        vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(100)}}
        model = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
        model.pre_tokenizer = Whitespace()
        model.save(str(folder / "tokenizer.json"))
    return folder


def suite(tmp_path: Path, body: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), out.out, out.err


def text_suite(model: Path, text: Path, prompt_tokens: int) -> str:
    return (
        f"name: t\nmodels: [{model}]\ndevices: [cpu]\n"
        f"workload: {{generate: {{prompt_tokens: {prompt_tokens}, text: {text}}}}}\n"
    )


# --- texts long enough ----------------------------------------------------------------------


def test_text_too_short_is_counted_with_the_models_tokenizer(
    tmp_path: Path, registry: Registry
) -> None:
    model = local_model(tmp_path / "m", tokenizer=True)
    text = text_folder(tmp_path / "text")
    ok = load_suite(suite(tmp_path, text_suite(model, text, 90)), registry, devices=["cpu"])
    assert preflight(ok, registry) == []
    short = load_suite(suite(tmp_path, text_suite(model, text, 91)), registry, devices=["cpu"])
    with pytest.raises(SuiteError) as info:
        preflight(short, registry)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 's.yaml'}:4: workload.generate (prompt_tokens=91")
    assert f"reads 91 tokens of text '{text}' (prompt split), which holds 90 tokens" in message
    assert "Lower the token counts, or use a longer text." in message


def test_text_too_short_without_a_tokenizer_is_bounded_by_its_bytes(
    tmp_path: Path, registry: Registry
) -> None:
    model = local_model(tmp_path / "m", tokenizer=False)
    text = text_folder(tmp_path / "text")
    size = len(words(90).strip().encode())  # texts are normalised: no trailing newline
    fits = load_suite(suite(tmp_path, text_suite(model, text, size)), registry, devices=["cpu"])
    preflight(fits, registry)  # at most one token per byte: cannot be known to be short
    over = load_suite(suite(tmp_path, text_suite(model, text, size + 1)), registry, devices=["cpu"])
    with pytest.raises(SuiteError, match=rf"which holds at most {size} tokens \(it has {size}"):
        preflight(over, registry)


def test_accuracy_task_texts_are_checked_too(tmp_path: Path, registry: Registry) -> None:
    model = local_model(tmp_path / "m", tokenizer=True)
    text = text_folder(tmp_path / "text")
    body = text_suite(model, text, 8) + f"accuracy:\n  - perplexity: {{text: {text}, tokens: 20}}\n"
    loaded = load_suite(suite(tmp_path, body), registry, devices=["cpu"])
    with pytest.raises(SuiteError) as info:
        preflight(loaded, registry)
    assert ":6: accuracy[0].perplexity (tokens=20" in str(info.value)
    assert "(eval split), which holds 10 tokens" in str(info.value)


def test_missing_text_file_is_refused_with_its_line(tmp_path: Path, registry: Registry) -> None:
    model = local_model(tmp_path / "m", tokenizer=False)
    body = text_suite(model, tmp_path / "nope.txt", 8)
    loaded = load_suite(suite(tmp_path, body), registry, devices=["cpu"])
    with pytest.raises(SuiteError, match=r"s\.yaml:4: text file '.*nope\.txt' not found"):
        preflight(loaded, registry)


# --- trust_remote_code --------------------------------------------------------------------------


def test_trust_remote_code_is_off_unless_the_suite_says_so_for_that_model(
    tmp_path: Path, registry: Registry
) -> None:
    trusted = local_model(tmp_path / "trusted", tokenizer=False)
    plain = local_model(tmp_path / "plain", tokenizer=False)
    body = (
        f"name: t\nmodels:\n  - {{id: {trusted}, trust_remote_code: true}}\n  - {plain}\n"
        "devices: [cpu]\nworkload: {generate: {prompt_tokens: 8}}\n"
    )
    loaded = load_suite(suite(tmp_path, body), registry, devices=["cpu"])
    flags = {c.model.id: c.model.trust_remote_code for c in loaded.cells}
    assert flags == {str(trusted): True, str(plain): False}
    (warning,) = preflight(loaded, registry)
    assert warning.startswith(f"warning: {tmp_path / 's.yaml'}:3: model {trusted} has ")
    assert "trust_remote_code: true" in warning and str(plain) not in warning


def test_check_and_run_print_one_trust_warning_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    trusted = local_model(tmp_path / "trusted", tokenizer=False)
    body = (
        f"name: t\nmodels: [{{id: {trusted}, trust_remote_code: true}}]\ndevices: [cpu]\n"
        "workload: {generate: {prompt_tokens: 8}}\n"
    )
    path = suite(tmp_path, body)
    for args in (["check", str(path)], ["run", "--dry-run", str(path)]):
        code, _out, err = cli(capsys, *args)
        assert code == 0, err
        (line,) = err.strip().splitlines()
        assert line.startswith("warning: ") and f"model {trusted} has trust_remote_code" in line
    assert not (tmp_path / "results").exists()


# --- cell count and wall time -------------------------------------------------------------------


def _history(url: str, durations: list[float]) -> None:
    with Store.open(url) as store:
        machine = store.ensure_machine(
            "m", {"hostname": "h", "cpu": "c", "cpu_count": 1, "ram_bytes": 1}
        )
        run = store.start_run(
            suite_name="old",
            suite_path="old.yaml",
            suite_hash="0" * 64,
            machine_id=machine,
            harness_version="0",
            git_commit=None,
            environment={},
        )
        for i, seconds in enumerate(durations):
            store.record(
                run,
                CellResult(
                    f"k{i}",
                    "tiny-random-llama",
                    "cpu",
                    "baseline",
                    (),
                    {"name": "generate", "params": {}},
                    "ok",
                    None,
                    0.0,
                    seconds,
                    (Value("latency.ttft_s", 0.1, "s"),),
                ),
            )


def test_check_prints_the_cell_count_and_a_wall_time_from_earlier_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    body = (
        "name: t\nmodels: [tiny-random-llama]\ndevices: [cpu]\n"
        "workload: {generate: {prompt_tokens: [8, 16, 32], batch_size: [1, 2]}}\n"
    )
    path = suite(tmp_path, body)
    code, out, _ = cli(capsys, "check", str(path))
    assert code == 0
    assert "ok, 6 cells, about 60 s at 10 s a cell (assumed: no earlier generate results)" in out
    db = tmp_path / "history.db"
    _history(f"sqlite:///{db}", [3.0, 4.0, 100.0])
    code, out, _ = cli(capsys, "check", str(path), "--db", f"sqlite:///{db}")
    assert code == 0
    assert (
        f"ok, 6 cells, about 24 s at 4 s a cell (median of 3 earlier generate cells in {db})"
        in (out)
    )


def test_max_cells_refuses_then_allows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    body = (
        "name: t\nmodels: [tiny-random-llama]\ndevices: [cpu]\n"
        "workload: {generate: {prompt_tokens: [8, 16, 32], batch_size: [1, 2]}}\n"
    )
    path = suite(tmp_path, body)
    code, _, err = cli(capsys, "check", str(path), "--max-cells", "5")
    assert code == 2
    assert "the matrix has 6 cells, about 60 s at 10 s a cell" in err
    assert "the limit is 5" in err and "--max-cells 6" in err
    assert cli(capsys, "check", str(path), "--max-cells", "6")[0] == 0
    assert cli(capsys, "run", "--dry-run", str(path), "--max-cells", "5")[0] == 2


def test_estimate_prefers_the_same_model_then_the_workload_then_an_assumption() -> None:
    spec = SuiteFile.model_validate(
        {"name": "t", "models": ["a", "b"], "workload": {"generate": {}}}
    )
    history = {("a", "generate"): [2.0, 4.0, 6.0], ("c", "generate"): [10.0], ("a", "train"): [1e6]}
    guess = estimate(spec, {"a": 10, "b": 5}, history)
    # a: median 4 s; b: median of every generate cell (2, 4, 6, 10) = 5 s
    assert guess == Estimate(10 * 4.0 + 5 * 5.0, (40 + 25) / 15, guess.basis)
    assert guess.basis == "median of 3 earlier generate cells"
    assumed = estimate(spec, {"a": 3}, {})
    assert assumed.seconds == 30.0 and assumed.basis.startswith("assumed")


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(4.4, "4 s"), (89, "89 s"), (600, "10 min"), (3 * 3600, "3.0 h"), (116 * 86400, "116 days")],
)
def test_human_duration(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


# --- devices at run time ------------------------------------------------------------------------


def test_an_absent_gpu_is_a_skipped_cell() -> None:
    from harness.testing import run_technique

    result = run_technique("baseline", device="cuda:7")
    assert result.status == "skipped"
    assert result.reason == "device cuda:7 is not available on this machine"


def test_a_gpu_index_beyond_the_count_is_not_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from harness.environment import Environment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert Environment.detect("cuda:3").cuda is False
