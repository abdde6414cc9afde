"""Test-only techniques: load with BENCH_PLUGINS=bench_testplugins (tests/plugins on the path).

Besides the simple ones, each fault a worker can meet has a technique that causes it in
``prepare``: ``aborty`` (``os.abort``), ``exity`` (``sys.exit(3)``), ``explode`` (raises),
``sleepy`` (hangs past the timeout), ``hog`` (allocates until an address-space limit it sets
on its own worker refuses), ``victim`` (waits to be SIGKILLed from outside); ``pid`` records
its worker's process id as a metric, so a test can tell a fresh worker from the old one.
"""

from __future__ import annotations

import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness import Applied, Config, Context, Environment, Prepared, Skip, Technique, hookimpl
from harness.results import MetricDef


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


class Aborty(Technique):
    """Aborts its worker (SIGABRT), as a failed C assertion would."""

    name = "aborty"

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        os.abort()


class Exity(Technique):
    """Calls ``sys.exit(3)``: SystemExit is not an Exception, so it ends the worker."""

    name = "exity"

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        sys.exit(3)


class HogConfig(Config):
    headroom_mb: int = Field(256, ge=16, description="address space allowed beyond the current")
    via: Literal["python", "torch"] = Field("python", description="bytearray or torch.ones")


def _address_space_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


class Hog(Technique):
    """Allocates 16 MiB blocks until the address-space limit (RLIMIT_AS) refuses one:
    Python raises MemoryError, torch a RuntimeError from its CPU allocator.

    The limit is set on its own worker to the current size plus ``headroom_mb``, so the
    host never runs short; the soft limit is restored before the MemoryError leaves.
    """

    name = "hog"
    Config = HogConfig

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _address_space_bytes() + self.config.headroom_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        hoard: list[object] = []
        try:
            while True:
                if self.config.via == "torch":
                    import torch

                    hoard.append(torch.ones(16 * 2**20, dtype=torch.uint8))
                else:
                    hoard.append(bytearray(16 * 2**20))
        finally:
            hoard.clear()
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class VictimConfig(Config):
    pidfile: str = Field(description="file the worker writes its process id to")
    seconds: float = 300.0


class Victim(Technique):
    """Writes its worker's process id to ``pidfile`` and waits to be killed from outside."""

    name = "victim"
    Config = VictimConfig

    def prepare(self, prepared: Prepared, ctx: Context) -> Prepared:
        path = Path(self.config.pidfile)
        path.with_suffix(".tmp").write_text(str(os.getpid()))
        path.with_suffix(".tmp").rename(path)
        time.sleep(self.config.seconds)
        return prepared


class PidConfig(Config):
    tag: int = 0


class Pid(Technique):
    """Changes nothing; reports its worker's process id as ``test.worker_pid``."""

    name = "pid"
    Config = PidConfig

    def metrics(self, ctx: Context) -> dict[str, float]:
        return {"test.worker_pid": float(os.getpid())}


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
    return [
        *(Sleepy, Crashy, Explode, Skippy, Listy, Aborty, Exity, Hog, Victim, Pid),
        *(Inert, PasskeyOracle),
    ]


@hookimpl
def register_metrics() -> list[MetricDef]:
    return [MetricDef("test.worker_pid", "1", False, "process id of the worker (tests only)")]
