from __future__ import annotations

import pytest

from harness import Environment, Skip
from harness.testing import registry_with

ENV = Environment("cpu", cuda=False)


def test_require_passes_for_an_importable_module() -> None:
    ENV.require("json", install="pip install json")
    ENV.require("email.mime", install="pip install email")


@pytest.mark.parametrize("module", ["bench_no_such_module", "json.no_such_submodule"])
def test_require_skips_with_the_install_command(module: str) -> None:
    with pytest.raises(Skip, match=rf"^{module} is not installed: pip install 'bench\[train\]'$"):
        ENV.require(module, install="pip install 'bench[train]'")


def test_require_skips_when_a_parent_package_is_missing() -> None:
    """``find_spec("a.b")`` raises when ``a`` is missing; ``require`` skips instead."""
    with pytest.raises(Skip, match=r"^no_such_parent\.quanto is not installed: pip install x$"):
        ENV.require("no_such_parent.quanto", install="pip install x")


@pytest.mark.parametrize(
    ("technique", "module"),
    [
        ("galore", "galore_torch"),
        ("apollo", "apollo_torch"),
        ("apollo-mini", "apollo_torch"),
        ("adam-8bit", "bitsandbytes"),
        ("lora", "peft"),
        ("qlora", "bitsandbytes"),
    ],
)
def test_training_techniques_skip_without_their_library(
    technique: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = registry_with().techniques[technique]
    tech = cls(cls.Config())
    tech.check(ENV)  # installed here ([train] extra): no skip
    real = Environment.has
    monkeypatch.setattr(Environment, "has", staticmethod(lambda m: m != module and real(m)))
    with pytest.raises(Skip, match=rf"^{module} is not installed: pip install 'bench\[train\]'$"):
        tech.check(ENV)
