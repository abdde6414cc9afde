"""Test-only techniques: load with BENCH_PLUGINS=bench_testplugins (tests/plugins on the path)."""

from __future__ import annotations

import os
import re
import time
from typing import Any

from pydantic import Field

from harness import Applied, Config, Context, Environment, Prepared, Skip, Technique, hookimpl


class SleepyConfig(Config):
    seconds: float = 60.0


class Sleepy(Technique):
    """Sleeps in prepare: exercises the per-cell timeout."""

    name = "sleepy"
    Config = SleepyConfig

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        time.sleep(self.config.seconds)
        return prepared


class Crashy(Technique):
    """Kills its own worker process: exercises crash recovery."""

    name = "crashy"

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        os._exit(3)


class Explode(Technique):
    """Raises: exercises the error status."""

    name = "explode"

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        raise RuntimeError("boom")


class Skippy(Technique):
    name = "skippy"

    def check(self, env: Environment) -> None:
        raise Skip("needs hardware this test does not have")


class ListyConfig(Config):
    modules: list[str] = Field(default_factory=lambda: ["lm_head"])
    ratio: float = 0.5


class Listy(Technique):
    """Takes a list parameter: a list of lists expands the matrix, a flat list does not."""

    name = "listy"
    Config = ListyConfig


class Inert(Technique):
    """Changes nothing and says so in ``verify``: exercises the not-applied status."""

    name = "inert"

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        return Applied(False, "changed nothing", {"kv.budget_tokens": 0.0})


class OracleConfig(Config):
    wrong: list[int] = Field(default_factory=list, description="passkey trials answered wrong")


class PasskeyOracle(Technique):
    """Answers each passkey prompt with the key it hides (trials in ``wrong`` get another
    number); every other generation runs unchanged. Exercises per-trial flips."""

    name = "passkey-oracle"
    Config = OracleConfig

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        import torch

        model = prepared.model
        original = model.generate
        trials = [0]

        def generate(*args: Any, **kwargs: Any) -> Any:
            ids = kwargs["input_ids"]
            found = re.search(r"pass key is (\d+)", ctx.tokenizer.decode(ids[0]))
            if found is None:
                return original(*args, **kwargs)
            key = found.group(1)
            if trials[0] in self.config.wrong:
                key = str(int(key) + 1)
            trials[0] += 1
            answer = ctx.tokenizer(f" {key}.", add_special_tokens=False)["input_ids"]
            return torch.cat([ids, torch.tensor([answer], device=ids.device)], dim=1)

        model.generate = generate
        prepared.cleanup.append(lambda: delattr(model, "generate"))
        return prepared

    def verify(self, prepared: Prepared, ctx: Context) -> Applied:
        return Applied(True, "answers passkey prompts from the prompt")


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Sleepy, Crashy, Explode, Skippy, Listy, Inert, PasskeyOracle]
