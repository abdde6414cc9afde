"""Machine and library fingerprint, and the facts techniques check before they run."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from functools import cache
from typing import Any

from harness.errors import Skip

# The core's own libraries. Each plugin reports the libraries it uses through the
# ``environment_info`` hook (``package_versions``); a run stores both.
LIBRARIES: tuple[str, ...] = (
    "bench",
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "nvidia-ml-py",
    "pluggy",
    "pydantic",
)


@dataclass(frozen=True)
class Environment:
    """What a technique's ``check`` may look at.

    Attributes:
        device: the cell's torch device string.
        cuda: whether CUDA is usable for this device (False for a GPU index the machine lacks).
        gpu_name: name of the cell's GPU, if any.
        cuda_capability: compute capability (major, minor) of the cell's GPU, if any.
    """

    device: str
    cuda: bool
    gpu_name: str | None = None
    cuda_capability: tuple[int, int] | None = None

    @property
    def device_kind(self) -> str:
        return self.device.split(":")[0]

    @staticmethod
    def has(package: str) -> bool:
        """Whether an importable module of that name is installed."""
        return importlib.util.find_spec(package) is not None

    @classmethod
    def require(cls, module: str, *, install: str) -> None:
        """Skip the cell unless ``module`` can be imported; the reason names ``install``.

        Args:
            module: import name; a dotted one (``"optimum.quanto"``) is checked parent
                first, so a missing parent package is a skip too, not an import error.
            install: the command that installs it, e.g. ``"pip install 'bench[train]'"``.

        Raises:
            Skip: ``"<module> is not installed: <install>"``.
        """
        parts = module.split(".")
        if not all(cls.has(".".join(parts[: i + 1])) for i in range(len(parts))):
            raise Skip(f"{module} is not installed: {install}")

    @classmethod
    def detect(cls, device: str) -> Environment:
        import torch

        cuda = torch.cuda.is_available()
        if device.startswith("cuda") and cuda:
            index = torch.device(device).index or 0
            if index >= torch.cuda.device_count():
                return cls(device, False)  # a GPU this machine lacks: its cells are skipped
            return cls(
                device,
                True,
                torch.cuda.get_device_name(index),
                torch.cuda.get_device_capability(index),
            )
        return cls(device, cuda)


def package_versions(*distributions: str) -> dict[str, str]:
    """The installed versions of the named distributions; those not installed are left out.

    The one helper for ``environment_info`` implementations:
    ``return package_versions("bitsandbytes", "hqq")``.

    Args:
        distributions: PyPI distribution names (``optimum-quanto``, not ``optimum.quanto``).

    Returns:
        Distribution name -> version string, in the order given.
    """
    versions = {}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def library_versions() -> dict[str, str]:
    """The Python version and the versions of the core's installed ``LIBRARIES``."""
    return {"python": platform.python_version(), **package_versions(*LIBRARIES)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def _gpus() -> tuple[list[str], str | None]:
    """GPU names and driver version from nvidia-smi, without importing torch or NVML."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return [], None
    rows = [line.split(", ") for line in out.strip().splitlines() if line]
    return [r[0] for r in rows], (rows[0][1] if rows and len(rows[0]) > 1 else None)


@cache
def machine_info() -> dict[str, Any]:
    """The facts stored in the ``machines`` table."""
    gpus, driver = _gpus()
    return {
        "hostname": socket.gethostname(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "ram_bytes": _ram_bytes(),
        "gpu": gpus[0] if gpus else None,
        "gpu_count": len(gpus),
        "driver": driver,
    }


def fingerprint(info: dict[str, Any]) -> str:
    """sha256 of the machine facts: results are resumed and compared per fingerprint."""
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
