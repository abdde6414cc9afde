"""Model sources: resolution, cheap checks, loading, dtypes and the real default model."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import assets
from harness.errors import ModelError
from harness.models import (
    BuiltinSource,
    GGUFSource,
    HubSource,
    LoadedModel,
    LoadRequest,
    LocalSource,
    ModelSource,
    resolve_source,
    torch_dtype,
)
from harness.models.sources import register_model_sources

SOURCES = register_model_sources()
SMOLLM2_PARAMS = 134_515_008
TINY_PARAMS = 3_219_776
MISSING_HUB_ID = "bench-tests/no-such-model"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return assets.tiny_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything opens a network connection."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during a check")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("auto", None),
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
        ("float16", torch.float16),
        ("fp16", torch.float16),
        ("torch.bfloat16", torch.bfloat16),
    ],
)
def test_torch_dtype_names(name: str, expected: torch.dtype | None) -> None:
    assert torch_dtype(name) is expected


def test_unknown_dtype_lists_what_is_allowed() -> None:
    with pytest.raises(ModelError, match=r"unknown dtype 'int4': allowed are auto, float32, fp32"):
        torch_dtype("int4")


# ---------------------------------------------------------------- one load signature


def test_load_builds_one_request_for_open() -> None:
    """``load``'s keywords are defined once, on the base; sources implement ``open``."""
    seen: list[LoadRequest] = []

    class Recording(ModelSource):
        name = "recording"

        def open(self, request: LoadRequest) -> LoadedModel:
            seen.append(request)
            return LoadedModel(model=None, tokenizer=None, source=self.name, path="")

    Recording().load("m", dtype="bf16", revision="v1", trust_remote_code=True, device="cuda:1")
    Recording().load("n")
    assert seen == [
        LoadRequest("m", "bf16", "v1", True, "cuda:1"),
        LoadRequest("n", "auto", None, False, "cpu"),
    ]


def test_builtin_sources_implement_open_not_load() -> None:
    for source in SOURCES:
        assert "open" in vars(source), source.name
        assert "load" not in vars(source), f"{source.name} redefines the load signature"


# ---------------------------------------------------------------- resolution


def test_sources_are_registered_in_priority_order() -> None:
    assert [s.name for s in SOURCES] == ["builtin", "gguf", "local", "hub"]


def test_resolution_by_shape(tiny_dir: Path) -> None:
    cases = {
        "smollm2-135m": BuiltinSource,
        "tiny-random-llama": BuiltinSource,
        "models/llama.Q4_K_M.gguf": GGUFSource,
        str(tiny_dir): LocalSource,
        "./not-there": LocalSource,
        "HuggingFaceTB/SmolLM2-135M": HubSource,
    }
    for model_id, expected in cases.items():
        assert type(resolve_source(model_id, SOURCES)) is expected, model_id


def test_unknown_model_message_lists_builtins_and_suggests_a_fix() -> None:
    with pytest.raises(ModelError) as caught:
        resolve_source("smolm2-135m", SOURCES, key="models[0].id")
    assert str(caught.value) == (
        "unknown model 'smolm2-135m': not a built-in (smollm2-135m, tiny-random-llama), a local "
        "folder with config.json, a .gguf file, or a hub id 'org/name'. Did you mean "
        "'smollm2-135m'? Check the suite's models[0].id."
    )


def test_missing_folder_and_file_fail_the_check(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model folder '\./not-there' not found"):
        LocalSource().check("./not-there")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"has no config\.json"):
        LocalSource().check(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="has no weights"):
        LocalSource().check(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match=r"GGUF file '.*missing\.gguf' not found"):
        GGUFSource().check(str(tmp_path / "missing.gguf"))


def test_checks_do_not_touch_the_network(no_network: None, tiny_dir: Path) -> None:
    BuiltinSource().check("smollm2-135m")
    LocalSource().check(str(tiny_dir))
    HubSource().check("HuggingFaceTB/SmolLM2-135M")


# ---------------------------------------------------------------- hub


def test_hub_check_offline_fails_for_an_uncached_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"'bench-tests/no-such-model' \(HF_HUB_OFFLINE is set"):
        HubSource().check(MISSING_HUB_ID)


def test_hub_load_offline_names_the_id_and_the_alternatives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as caught:
        HubSource().load(MISSING_HUB_ID)
    message = str(caught.value)
    assert message.startswith(f"cannot load hub model {MISSING_HUB_ID!r}")
    assert "--local-dir ./no-such-model' and set models[].id to ./no-such-model" in message
    assert "smollm2-135m, tiny-random-llama" in message
    assert "\n" not in message


def test_hub_load_without_offline_flag_still_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unreachable hub (this sandbox) or a repository that does not exist: either way one line.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(ModelError, match=r"cannot load hub model 'bench-tests/no-such-model'"):
        HubSource().load(MISSING_HUB_ID)


# ---------------------------------------------------------------- loading


def test_local_folder_loads_in_eval_mode_with_config_dtype(tiny_dir: Path) -> None:
    loaded = LocalSource().load(str(tiny_dir))
    assert isinstance(loaded, LoadedModel)
    assert (loaded.source, loaded.path) == ("local", str(tiny_dir.resolve()))
    assert not loaded.model.training
    assert loaded.model.dtype == torch.float32
    assert loaded.model.num_parameters() == TINY_PARAMS
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    assert loaded.tokenizer.pad_token == "<|im_end|>"


def test_explicit_dtype_overrides_the_checkpoint(tiny_dir: Path) -> None:
    loaded = LocalSource().load(str(tiny_dir), dtype="bf16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_auto_dtype_follows_config_and_defaults_to_float32(tmp_path: Path) -> None:
    folder = assets.tiny_model_dir(tmp_path / "m")
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "bfloat16"
    config_path.write_text(json.dumps(config))
    assert LocalSource().load(str(folder)).model.dtype == torch.bfloat16
    del config["dtype"]
    config_path.write_text(json.dumps(config))
    assert LocalSource().load(str(folder)).model.dtype == torch.float32


def test_builtin_tiny_model_loads_and_generates_deterministically() -> None:
    loaded = BuiltinSource().load("tiny-random-llama")
    assert loaded.source == "builtin"
    assert loaded.path == str(assets.provision("tiny-random-llama"))
    inputs = loaded.tokenizer("To be, or not to be", return_tensors="pt")
    runs = [
        loaded.model.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6)
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    assert runs[0].shape == (1, inputs.input_ids.shape[1] + 6)


def test_importing_models_does_not_import_torch() -> None:
    code = (
        "import sys, harness.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- the real default model


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    """The built-in default model, converted once into the cache (honours BENCH_CACHE)."""
    return BuiltinSource().load("smollm2-135m")


@pytest.mark.slow
def test_smollm2_is_the_real_pretrained_model(smollm2: LoadedModel) -> None:
    model = smollm2.model
    assert model.num_parameters() == SMOLLM2_PARAMS
    config = model.config
    facts = (
        config.model_type,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
        config.hidden_size,
        config.tie_word_embeddings,
    )
    assert facts == ("llama", 30, 9, 3, 64, 576, True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # A random model would not know this; the pretrained one does by a wide margin.
    inputs = smollm2.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        next_id = int(model(**inputs).logits[0, -1].argmax())
    assert smollm2.tokenizer.decode([next_id]) == " Paris"


@pytest.mark.slow
def test_smollm2_greedy_generation_is_deterministic(smollm2: LoadedModel) -> None:
    inputs = smollm2.tokenizer("Once upon a time", return_tensors="pt")
    runs = [
        smollm2.model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.slow
def test_smollm2_folder_is_plain_fp32_and_not_converted_again(smollm2: LoadedModel) -> None:
    folder = Path(smollm2.path)
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == "float32"
    assert "quantization_config" not in config
    weights = folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = BuiltinSource().load("smollm2-135m")
    assert again.path == smollm2.path
    assert weights.stat().st_mtime_ns == before
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_gguf_source_dequantizes_into_a_plain_model() -> None:
    from harness.assets.builtin_models import smollm2_gguf

    loaded = GGUFSource().load(str(smollm2_gguf()))
    assert loaded.source == "gguf"
    assert loaded.model.num_parameters() == SMOLLM2_PARAMS
    assert not hasattr(loaded.model.config, "quantization_config")
    assert all(type(p) is torch.nn.Parameter for p in loaded.model.parameters())
