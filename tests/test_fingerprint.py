"""Cell fingerprints: file digests, identity, and what the worker records for a cell."""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest

from harness import fingerprint as fp
from harness.calibration import PARTS, speed
from harness.cell import cell_result
from harness.store import Store
from harness.suite import suite_from_data
from harness.testing import registry_with, run_technique


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    fp._file_digest.cache_clear()


def test_small_files_are_hashed_whole(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'{"hidden_size": 576}')
    expected = hashlib.sha256(b'{"hidden_size": 576}').hexdigest()
    assert fp.file_digest(path) == f"sha256:{expected}"


def test_large_files_are_sampled_and_copies_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fp, "FULL_HASH_MAX_BYTES", 1000)
    monkeypatch.setattr(fp, "EDGE_BYTES", 100)
    monkeypatch.setattr(fp, "SAMPLE_BYTES", 10)
    monkeypatch.setattr(fp, "SAMPLE_COUNT", 4)
    data = bytearray(os.urandom(5000))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(bytes(data))
    digest = fp.file_digest(weights)
    assert digest.startswith("sampled-sha256:")
    copy = tmp_path / "copy" / "model.safetensors"
    copy.parent.mkdir()
    shutil.copyfile(weights, copy)
    os.utime(copy, ns=(1, 1))  # another modification time: the cache key, not the digest
    assert fp.file_digest(copy) == digest
    # chunks at 0..100 (edge), 1000, 2000, 3000, 4000 (10 bytes each), 4900..5000 (edge)
    for offset, changes in ((50, True), (2005, True), (4950, True), (2500, False)):
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        other = tmp_path / f"changed-{offset}.safetensors"
        other.write_bytes(bytes(changed))
        assert (fp.file_digest(other) != digest) is changes, offset


def test_folder_files_skip_hidden_entries(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "lock").write_text("x")
    (tmp_path / ".gitattributes").write_text("x")
    files = fp.folder_files(tmp_path)
    assert list(files) == ["config.json"]
    assert fp.files_hash(files) == fp.sha256_text(f"config.json\0{files['config.json']}\n")
    assert fp.files_hash({}) is None


def test_identity_leaves_out_what_a_comparison_is_about() -> None:
    base = {
        "model": {"id": "m", "dtype": "auto", "trust_remote_code": False, "sha256": "a"},
        "workload": {"name": "generate", "params": {"new_tokens": 8}, "inputs": {"ids": "1"}},
        "stack": [{"name": "baseline", "config": {}}],
        "device": {"name": "cpu", "gpu": None},
        "software": {"transformers": "5.23.0"},
    }
    other_software = fp.merge(
        base, {"software": {"transformers": "5.24.0"}, "model": {"sha256": "b"}}
    )
    assert other_software["model"]["id"] == "m"  # merged, not replaced
    assert fp.identity_hash(other_software) == fp.identity_hash(base)
    other_inputs = fp.merge(base, {"workload": {"inputs": {"ids": "2"}}})
    assert fp.identity_hash(other_inputs) != fp.identity_hash(base)
    assert fp.identity_hash(None) is None
    flat = fp.flatten(other_software)
    assert flat["software.transformers"] == "5.24.0"
    assert flat["workload.params"] == '{"new_tokens":8}'  # an identity field, kept whole
    assert fp.is_identity("workload.params") and not fp.is_identity("model.sha256")


def test_tokenizer_digest_is_its_serialisation() -> None:
    from harness.models import BuiltinSource

    tokenizer = BuiltinSource().load("tiny-random-llama").tokenizer
    digest = fp.tokenizer_digest(tokenizer)
    assert digest["sha256"] == fp.sha256_text(tokenizer.backend_tokenizer.to_str())
    assert fp.tokenizer_digest(tokenizer) is digest  # cached per object


def _cell(prompt_tokens: int = 16, text: str = "shakespeare") -> Any:
    data = {
        "name": "fp",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": prompt_tokens, "new_tokens": 4, "text": text}},
        "policy": {"warmup": 0, "repeats": 1},
    }
    (cell,) = suite_from_data(data, registry_with(), devices=["cpu"]).cells
    return cell


def test_a_timed_out_cell_keeps_what_the_suite_says() -> None:
    result = cell_result(_cell(), "timeout", "cell ran longer than 600 s", 0.0)
    assert result.fingerprint is not None
    assert result.fingerprint["model"]["id"] == "tiny-random-llama"
    assert result.fingerprint["workload"]["params"]["prompt_tokens"] == 16
    assert result.fingerprint["stack"] == [{"name": "baseline", "config": {}}]
    assert "timeout_s" not in result.fingerprint["policy"]
    assert "software" not in result.fingerprint  # only the worker knows


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    result = run_technique("baseline").result
    assert result.status == "ok", result.reason
    assert result.fingerprint is not None
    return result.fingerprint


def test_the_worker_records_files_inputs_and_software(measured: dict[str, Any]) -> None:
    model = measured["model"]
    assert model["source"] == "builtin"
    assert set(model["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert model["sha256"] == fp.files_hash(model["files"])
    workload = measured["workload"]
    text = workload["texts"]["shakespeare"]["prompt"]
    assert text["source"] == "shakespeare" and len(text["sha256"]) == 64
    assert workload["inputs"]["prompt_shape"] == [1, 16]
    assert workload["tokenizer"]["class"]
    software = measured["software"]
    assert {"python", "torch", "transformers", "bench", "plugins", "git_commit"} <= set(software)
    assert measured["device"]["kind"] == "cpu" and measured["device"]["cpu"]
    assert measured["host"]["cpus"] == os.cpu_count()
    calibration = measured["host"]["calibration"]
    assert set(calibration) == set(PARTS) and all(t > 0 for t in calibration.values())
    assert speed(calibration) == pytest.approx(statistics.geometric_mean(calibration.values()))


def test_other_prompts_give_other_inputs(measured: dict[str, Any], tmp_path: Path) -> None:
    from harness.models import BuiltinSource
    from harness.testing import workload_context
    from harness.workloads.generate import Generate, GenerateParams

    tokenizer = BuiltinSource().load("tiny-random-llama").tokenizer
    ctx = workload_context(tokenizer)
    same = Generate(GenerateParams(prompt_tokens=16, new_tokens=4)).fingerprint(ctx)
    assert same == measured["workload"]["inputs"]
    longer = Generate(GenerateParams(prompt_tokens=17, new_tokens=4)).fingerprint(ctx)
    assert longer["prompt_ids_sha256"] != same["prompt_ids_sha256"]
    text = tmp_path / "other.txt"
    text.write_text("Entirely different words, repeated to be long enough. " * 40)
    other = Generate(GenerateParams(prompt_tokens=16, new_tokens=4, text=str(text)))
    assert other.fingerprint(ctx)["prompt_ids_sha256"] != same["prompt_ids_sha256"]


def test_fingerprints_are_stored_with_their_identity_hash(
    measured: dict[str, Any], db_url: str
) -> None:
    result = cell_result(_cell(), "ok", None, 0.0, observed=measured)
    with Store.open(db_url) as store:
        machine = store.ensure_machine(
            "m", {"hostname": "h", "cpu": "c", "cpu_count": 2, "ram_bytes": 1}
        )
        run = store.start_run(
            suite_name="fp",
            suite_path="fp.yaml",
            suite_hash="0",
            machine_id=machine,
            harness_version="0",
            git_commit=None,
            environment={},
        )
        store.record(run, result)
        assert store.fingerprints(run_id=run) == {result.key: result.fingerprint}
        from sqlalchemy import select

        from harness.store.schema import Cell

        with store.engine.connect() as connection:
            stored = connection.scalar(select(Cell.fingerprint_hash))
    assert stored == fp.identity_hash(result.fingerprint)
