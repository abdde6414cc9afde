"""NVML probes: device memory in use, the GPU's total-energy counter, power polling.

The NVML module is injectable: each probe takes ``nvml=`` (default: the real ``pynvml``
module from the nvidia-ml-py package, via ``load_nvml()``), so tests replay recorded
readings through ``ReplayNvml`` without a GPU.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
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
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...


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
    return pynvml


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

    name: ClassVar[str] = "nvml-counter"
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
            raise RuntimeError("nvml-counter: stop() called without start()")
        self._mj_at_start = None
        delta_mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) - at_start
        if delta_mj < 0:
            reason = (
                f"NVML energy counter went backwards by {-delta_mj} mJ on {self.device} "
                "(driver reloaded during the window?)"
            )
            return self.null_values(reason)
        return [self._value(ENERGY_TOTAL_J.name, delta_mj / 1000, self.source)]


#: Sampling interval of ``nvml-power``, s. NVML's power reading is refreshed by the driver
#: every ~20-100 ms depending on the GPU, so sampling faster only repeats readings.
POWER_INTERVAL_S = 0.02


def trapezoid_j(samples: Sequence[tuple[float, float]]) -> float:
    """Energy of a power trace by the trapezoidal rule.

    Args:
        samples: (time s, power mW) pairs in time order; at least two.

    Returns:
        sum_i (p_i + p_{i+1}) / 2 × (t_{i+1} − t_i) / 1000, in joules.

    Raises:
        ValueError: fewer than two samples, or times going backwards.
    """
    if len(samples) < 2:
        raise ValueError(f"trapezoid_j() needs at least two samples, got {len(samples)}")
    total_mj = 0.0
    for (t0, p0), (t1, p1) in itertools.pairwise(samples):
        if t1 < t0:
            raise ValueError(f"power samples go back in time: {t0} s, then {t1} s")
        total_mj += (p0 + p1) / 2 * (t1 - t0)
    return total_mj / 1000


class NvmlPowerProbe(_NvmlProbe):
    """Energy over the window by polling NVML's power reading: the fallback for GPUs
    without the total-energy counter (before Volta).

    ``start()`` reads ``nvmlDeviceGetPowerUsage`` (mW) and starts a thread that reads it
    again every ``interval_s`` (default ``POWER_INTERVAL_S``, 20 ms); ``stop()`` stops the
    thread, reads once more and integrates the (time, power) samples with the trapezoidal
    rule (``trapezoid_j``): E = Σ (p_i + p_{i+1}) / 2 · Δt_i, in joules. Times come from
    ``clock`` (``time.perf_counter``).

    Accuracy: the reading is whatever the driver last published, refreshed every 1/6 s
    to 1 s depending on the product. NVML documents it as instantaneous on GA100 and older
    GPUs (every GPU this probe serves: those without the counter predate Volta), accurate
    to ±5% of the draw on Fermi and Kepler, and as a 1 s average on Ampere (except GA100)
    and newer, where it would smear the window's edges. Short windows therefore carry a
    large relative error: ``policy.min_energy_window_s`` extends them. Because the counter
    is more precise, this probe declares itself unavailable where
    ``nvmlDeviceGetTotalEnergyConsumption`` works: ``nvml-counter`` measures those GPUs.
    """

    name: ClassVar[str] = "nvml-power"
    phase: ClassVar[Phase] = "timing"
    metrics: ClassVar[tuple[MetricDef, ...]] = (ENERGY_TOTAL_J,)
    source: ClassVar[str] = "nvml-power"
    no_gpu_reason: ClassVar[str] = "no NVIDIA GPU: power polling needs NVML"

    def __init__(
        self,
        device: str,
        nvml: NvmlModule | None = None,
        *,
        interval_s: float = POWER_INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Args:
        device: Torch device string (``cuda:N``).
        nvml: The NVML module to call; None loads ``pynvml`` when first needed.
        interval_s: Seconds between two readings of the polling thread.
        clock: Seconds since an arbitrary zero (tests pass a fake).
        """
        super().__init__(device, nvml)
        self.interval_s = interval_s
        self._clock = clock
        self._samples: list[tuple[float, float]] = []
        self._error: str | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def _check(self, nvml: NvmlModule, handle: Any) -> None:
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except nvml.NVMLError:
            pass  # no counter: polling is the fallback
        else:
            raise _Unavailable(
                f"{self.device} has NVML's total-energy counter, which nvml-counter reads; "
                "power polling is only the fallback for GPUs without it"
            )
        try:
            nvml.nvmlDeviceGetPowerUsage(handle)
        except nvml.NVMLError as err:
            raise _Unavailable(f"NVML power reading unsupported on {self.device}: {err}") from err

    @property
    def samples(self) -> list[tuple[float, float]]:
        """The (time s, power mW) samples of the last window."""
        return list(self._samples)

    def _sample(self) -> None:
        nvml, handle = self._ready()
        power_mw = float(nvml.nvmlDeviceGetPowerUsage(handle))
        self._samples.append((self._clock(), power_mw))

    def _poll(self) -> None:
        while not self._halt.wait(self.interval_s):
            try:
                self._sample()
            except Exception as err:  # recorded, reported by stop() as a null value
                self._error = f"{type(err).__name__}: {err}"
                return

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("nvml-power: start() called twice without stop()")
        self._samples = []
        self._error = None
        self._halt.clear()
        self._sample()
        self._thread = threading.Thread(target=self._poll, name="bench-nvml-power", daemon=True)
        self._thread.start()

    def stop(self) -> list[Value]:
        thread = self._thread
        if thread is None:
            raise RuntimeError("nvml-power: stop() called without start()")
        self._halt.set()
        thread.join()
        self._thread = None
        if self._error is not None:
            return self.null_values(f"NVML power polling failed on {self.device}: {self._error}")
        self._sample()
        return [self._value(ENERGY_TOTAL_J.name, trapezoid_j(self._samples), self.source)]
