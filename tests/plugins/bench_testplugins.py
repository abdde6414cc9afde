"""Test-only techniques: load with BENCH_PLUGINS=bench_testplugins (tests/plugins on the path)."""

from __future__ import annotations

import os
import time

from pydantic import Field

from harness import Config, Context, Environment, Prepared, Skip, Technique, hookimpl


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


@hookimpl
def register_techniques() -> list[type[Technique]]:
    return [Sleepy, Crashy, Explode, Skippy, Listy]
