"""NVML probes: device memory in use and the GPU's total-energy counter.

The NVML module is injectable: each probe takes ``nvml=`` (default: the real ``pynvml``
module from the nvidia-ml-py package, via ``load_nvml()``), so tests replay recorded
readings through ``ReplayNvml`` without a GPU.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from harness.probes import DEVICE_USED_BYTES, ENERGY_TOTAL_J, Phase, Probe
from harness.results import MetricDef, Value

NO_LIBRARY_REASON = "NVML library not found (no NVIDIA driver)"


class NvmlModule(Protocol):
    """The part of ``pynvml`` (nvidia-ml-py) the probes call."""

    NVMLError: type[Exception]
    NVMLError_LibraryNotFound: type[Exception]
    NVMLError_DriverNotLoaded: type[Exception]
    NVMLError_NotSupported: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any: ...
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...


def load_nvml() -> NvmlModule:
    """Import and return ``pynvml``, the module of the nvidia-ml-py package.

    The deprecated PyPI package also named ``pynvml`` wraps the same module and emits a
    ``FutureWarning`` on import; it is silenced here so probes print nothing.

    Raises:
        ImportError: nvidia-ml-py is not installed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import pynvml
    return pynvml  # type: ignore[no-any-return]


def nvml_device_id(device: str, cuda_visible_devices: str | None) -> int | str:
    """The NVML index (int) or UUID (str) of the GPU that torch calls ``device``.

    ``cuda:N`` is the N-th GPU visible to CUDA (``cuda`` means ``cuda:0``). With
    ``CUDA_VISIBLE_DEVICES`` unset that is NVML index N; when it is set, its N-th entry: an
    NVML index or a ``GPU-``/``MIG-`` UUID. As CUDA does, parsing stops at the first entry
    that is neither (``"0,2,-1,3"`` exposes 0 and 2).

    This assumes CUDA numbers GPUs in NVML's (PCI bus) order, which holds with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or when all GPUs are the same model.

    Args:
        device: A torch device string, ``cuda`` or ``cuda:N``.
        cuda_visible_devices: The value of ``CUDA_VISIBLE_DEVICES``, or None if unset.

    Raises:
        ValueError: ``device`` is not a CUDA device or is not among the visible ones.
    """
    kind, _, suffix = device.partition(":")
    if kind != "cuda" or not (suffix == "" or suffix.isdigit()):
        raise ValueError(f"{device!r} is not a CUDA device (expected 'cuda' or 'cuda:N')")
    index = int(suffix or 0)
    if cuda_visible_devices is None:
        return index
    visible: list[int | str] = []
    for entry in (part.strip() for part in cuda_visible_devices.split(",")):
        if entry.isdigit():
            visible.append(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            visible.append(entry)
        else:
            break
    if index >= len(visible):
        raise ValueError(
            f"{device} is not visible: CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} "
            f"exposes {len(visible)} GPU(s)"
        )
    return visible[index]


class _Unavailable(Exception):
    """Internal: carries the reason a probe cannot measure."""


class _NvmlProbe(Probe):
    """Shared set-up: device mapping, ``nvmlInit`` and the device handle."""

    no_gpu_reason: ClassVar[str]

    def __init__(self, device: str, nvml: NvmlModule | None = None) -> None:
        """Args:
        device: Torch device string (``cuda:N``).
        nvml: The NVML module to call; None loads ``pynvml`` when first needed.
        """
        super().__init__(device)
        self._nvml = nvml
        self._handle: Any = None
        self._reason: str | None = None

    def unavailable(self) -> str | None:
        if self._handle is None and self._reason is None:
            try:
                if not self.device.startswith("cuda"):
                    raise _Unavailable(self.no_gpu_reason)
                nvml = self._module()
                handle = self._open(nvml)
                self._check(nvml, handle)
                self._handle = handle
            except _Unavailable as err:
                self._reason = str(err)
        return self._reason

    def _ready(self) -> tuple[NvmlModule, Any]:
        reason = self.unavailable()
        if reason is not None:
            raise RuntimeError(f"{self.name}: {reason}")
        return self._module(), self._handle

    def _module(self) -> NvmlModule:
        if self._nvml is None:
            try:
                self._nvml = load_nvml()
            except ImportError as err:
                raise _Unavailable(
                    f"nvidia-ml-py is not installed ({err}); run 'pip install nvidia-ml-py'"
                ) from err
        return self._nvml

    def _open(self, nvml: NvmlModule) -> Any:
        try:
            target = nvml_device_id(self.device, os.environ.get("CUDA_VISIBLE_DEVICES"))
        except ValueError as err:
            raise _Unavailable(str(err)) from err
        try:
            nvml.nvmlInit()
        except nvml.NVMLError_LibraryNotFound as err:
            raise _Unavailable(NO_LIBRARY_REASON) from err
        except nvml.NVMLError_DriverNotLoaded as err:
            raise _Unavailable("NVIDIA driver not loaded (NVML: Driver Not Loaded)") from err
        except nvml.NVMLError as err:
            raise _Unavailable(f"NVML initialisation failed: {err}") from err
        try:
            if isinstance(target, int):
                return nvml.nvmlDeviceGetHandleByIndex(target)
            return nvml.nvmlDeviceGetHandleByUUID(target)
        except nvml.NVMLError as err:
            raise _Unavailable(f"NVML has no GPU {target!r} for {self.device}: {err}") from err

    def _check(self, nvml: NvmlModule, handle: Any) -> None:
        """Raise ``_Unavailable`` when this probe's reading is not supported."""


class NvmlMemoryProbe(_NvmlProbe):
    """GPU memory in use, as NVML reports it (``nvmlDeviceGetMemoryInfo().used``).

    Counts every process's allocations on the GPU plus the driver's own (CUDA context,
    cuBLAS workspaces), which torch's allocator statistics do not see. It is sampled at
    the window's start and end and the larger reading is reported, so a transient peak
    between them is missed: use ``cuda-allocator`` for peaks.
    """

    name: ClassVar[str] = "nvml-memory"
    phase: ClassVar[Phase] = "memory"
    metrics: ClassVar[tuple[MetricDef, ...]] = (DEVICE_USED_BYTES,)
    source: ClassVar[str] = "nvml"
    no_gpu_reason: ClassVar[str] = "no NVIDIA GPU: device memory needs NVML"

    def __init__(self, device: str, nvml: NvmlModule | None = None) -> None:
        super().__init__(device, nvml)
        self._used_at_start: int | None = None

    def _check(self, nvml: NvmlModule, handle: Any) -> None:
        try:
            nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError as err:
            raise _Unavailable(f"NVML memory info unreadable on {self.device}: {err}") from err

    def start(self) -> None:
        nvml, handle = self._ready()
        self._used_at_start = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)

    def stop(self) -> list[Value]:
        nvml, handle = self._ready()
        at_start = self._used_at_start
        if at_start is None:
            raise RuntimeError("nvml-memory: stop() called without start()")
        self._used_at_start = None
        used = max(at_start, int(nvml.nvmlDeviceGetMemoryInfo(handle).used))
        return [self._value(DEVICE_USED_BYTES.name, float(used), self.source)]


class NvmlEnergyProbe(_NvmlProbe):
    """Energy over the window from NVML's total-energy counter.

    ``nvmlDeviceGetTotalEnergyConsumption`` is a counter of the energy the GPU consumed
    since the driver was loaded, in millijoules (Volta and newer; older GPUs answer
    NVML_ERROR_NOT_SUPPORTED). The probe reads it at ``start()`` and ``stop()`` and emits
    the difference in joules: (stop_mJ - start_mJ) / 1000. The caller synchronizes the
    device before both reads so the window holds exactly the measured work. The counter
    advances in steps (its update period depends on the GPU), so windows much shorter
    than that must be extended by repetition.
    """

    name: ClassVar[str] = "nvml-energy"
    phase: ClassVar[Phase] = "timing"
    metrics: ClassVar[tuple[MetricDef, ...]] = (ENERGY_TOTAL_J,)
    source: ClassVar[str] = "nvml-counter"
    no_gpu_reason: ClassVar[str] = "no NVIDIA GPU: energy needs NVML"

    def __init__(self, device: str, nvml: NvmlModule | None = None) -> None:
        super().__init__(device, nvml)
        self._mj_at_start: int | None = None

    def _check(self, nvml: NvmlModule, handle: Any) -> None:
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except nvml.NVMLError_NotSupported as err:
            raise _Unavailable(
                f"{self.device} has no NVML total-energy counter (needs a Volta or newer GPU)"
            ) from err
        except nvml.NVMLError as err:
            raise _Unavailable(f"NVML energy counter unreadable on {self.device}: {err}") from err

    def start(self) -> None:
        nvml, handle = self._ready()
        self._mj_at_start = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    def stop(self) -> list[Value]:
        nvml, handle = self._ready()
        at_start = self._mj_at_start
        if at_start is None:
            raise RuntimeError("nvml-energy: stop() called without start()")
        self._mj_at_start = None
        delta_mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) - at_start
        if delta_mj < 0:
            reason = (
                f"NVML energy counter went backwards by {-delta_mj} mJ on {self.device} "
                "(driver reloaded during the window?)"
            )
            return self.null_values(reason)
        return [self._value(ENERGY_TOTAL_J.name, delta_mj / 1000, self.source)]


# ---------------------------------------------------------------- replay (tests, no GPU)


@dataclass(frozen=True)
class ReplayMemoryInfo:
    """What ``nvmlDeviceGetMemoryInfo`` returns, in bytes."""

    total: int
    free: int
    used: int


class ReplayNvml:
    """A stand-in for ``pynvml`` that replays recorded readings, for tests without a GPU.

    Each call to ``nvmlDeviceGetTotalEnergyConsumption`` returns the next value of
    ``energy_mj`` and each call to ``nvmlDeviceGetMemoryInfo`` the next of
    ``memory_used_bytes``; a probe's ``unavailable()`` makes one such call to check the
    reading is supported, so a recording starts with that reading. Error classes are the
    real ones from ``pynvml``, so the probes' error handling is exercised as on a GPU.

    Args:
        energy_mj: Successive energy-counter readings, mJ.
        memory_used_bytes: Successive device-memory readings, bytes.
        memory_total_bytes: Device memory size reported with each reading, bytes.
        device_count: GPUs NVML reports (indices 0..count-1).
        uuids: UUIDs accepted by ``nvmlDeviceGetHandleByUUID``.
        init_error: Name of the ``pynvml`` error class ``nvmlInit`` raises, e.g.
            ``"NVMLError_LibraryNotFound"``; None to succeed.
        energy_error: Name of the error class the energy counter raises, e.g.
            ``"NVMLError_NotSupported"`` (a pre-Volta GPU); None to replay readings.
    """

    def __init__(
        self,
        energy_mj: Sequence[int] = (),
        memory_used_bytes: Sequence[int] = (),
        *,
        memory_total_bytes: int = 80 * 2**30,
        device_count: int = 1,
        uuids: Sequence[str] = (),
        init_error: str | None = None,
        energy_error: str | None = None,
    ) -> None:
        real = load_nvml()
        self.NVMLError: type[Exception] = real.NVMLError
        self.NVMLError_LibraryNotFound: type[Exception] = real.NVMLError_LibraryNotFound
        self.NVMLError_DriverNotLoaded: type[Exception] = real.NVMLError_DriverNotLoaded
        self.NVMLError_NotSupported: type[Exception] = real.NVMLError_NotSupported
        self._errors = real
        self._energy_mj = list(energy_mj)
        self._memory_used = list(memory_used_bytes)
        self._memory_total = memory_total_bytes
        self._device_count = device_count
        self._uuids = tuple(uuids)
        self._init_error = init_error
        self._energy_error = energy_error
        self.opened: list[int | str] = []  # the device indices / UUIDs asked for, in order

    def _raise(self, error_class: str) -> None:
        raise getattr(self._errors, error_class)()

    def nvmlInit(self) -> None:
        if self._init_error is not None:
            self._raise(self._init_error)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if not 0 <= index < self._device_count:
            self._raise("NVMLError_InvalidArgument")
        self.opened.append(index)
        return ("replay-gpu", index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        if uuid not in self._uuids:
            self._raise("NVMLError_NotFound")
        self.opened.append(uuid)
        return ("replay-gpu", uuid)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        if self._energy_error is not None:
            self._raise(self._energy_error)
        if not self._energy_mj:
            raise IndexError("ReplayNvml: no recorded energy readings left")
        return self._energy_mj.pop(0)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> ReplayMemoryInfo:
        if not self._memory_used:
            raise IndexError("ReplayNvml: no recorded memory readings left")
        used = self._memory_used.pop(0)
        return ReplayMemoryInfo(total=self._memory_total, free=self._memory_total - used, used=used)
