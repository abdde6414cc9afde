from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pluggy
import pytest
import torch

import harness.hookspecs
import harness.probes
from harness.probes import BUILTIN_METRICS
from harness.probes.cpu import CpuAllocatorProbe, RssProbe, window_peak_bytes
from harness.probes.cuda import CudaAllocatorProbe
from harness.probes.nvml import (
    NO_LIBRARY_REASON,
    NvmlEnergyProbe,
    NvmlMemoryProbe,
    NvmlPowerProbe,
    load_nvml,
    nvml_device_id,
    trapezoid_j,
)
from harness.probes.replay import ReplayNvml
from harness.results import Value

MiB = 2**20
GiB = 2**30


def _bytes(n: int) -> torch.Tensor:
    return torch.empty(n, dtype=torch.uint8)


def _only(values: list[Value]) -> Value:
    assert len(values) == 1
    return values[0]


# ---------------------------------------------------------------- registration


def test_hooks_register_every_builtin_probe_and_metric() -> None:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(harness.hookspecs)
    pm.register(harness.probes)
    pm.check_pending()
    probes = [cls for result in pm.hook.register_probes() for cls in result]
    metrics = [m for result in pm.hook.register_metrics() for m in result]

    names = [cls.name for cls in probes]
    assert names == [
        "cpu-allocator",
        "rss",
        "cuda-allocator",
        "nvml-memory",
        "nvml-counter",
        "nvml-power",
        "rapl",
    ]
    energy = {"nvml-counter", "nvml-power", "rapl"}
    assert {cls.name for cls in probes if harness.probes.is_energy_probe(cls)} == energy
    assert {cls.phase for cls in probes if cls.name not in energy} == {"memory"}

    by_name = {m.name: m for m in metrics}
    assert len(by_name) == len(metrics)  # no duplicates
    assert {m.name: m.unit for m in metrics} == {
        "memory.window_peak_bytes": "bytes",
        "memory.peak_rss_bytes": "bytes",
        "memory.peak_alloc_bytes": "bytes",
        "memory.peak_reserved_bytes": "bytes",
        "memory.device_used_bytes": "bytes",
        "energy.total_j": "J",
    }
    assert not any(m.higher_is_better for m in metrics)
    assert all(m.description and "\n" not in m.description for m in metrics)
    emitted = {m for cls in probes for m in cls.metrics}
    assert emitted == set(metrics) == set(BUILTIN_METRICS)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:7", "meta", "mps"])
def test_unavailable_never_raises(device: str) -> None:
    for cls in harness.probes.register_probes():
        reason = cls(device).unavailable()
        assert reason is None or (isinstance(reason, str) and reason)


def test_availability_on_this_cpu_machine() -> None:
    available = {
        cls.name for cls in harness.probes.register_probes() if not cls("cpu").unavailable()
    }
    assert {"cpu-allocator", "rss"} <= available
    assert not {"cuda-allocator", "nvml-memory", "nvml-counter", "nvml-power"} & available


def test_null_values_carry_reason_and_units() -> None:
    probe = CudaAllocatorProbe("cpu")
    assert probe.null_values("no GPU") == [
        Value("memory.window_peak_bytes", None, "bytes", reason="no GPU"),
        Value("memory.peak_alloc_bytes", None, "bytes", reason="no GPU"),
        Value("memory.peak_reserved_bytes", None, "bytes", reason="no GPU"),
    ]


def test_importing_probes_loads_neither_torch_nor_nvml() -> None:
    code = (
        "import sys, harness; pre = {'torch', 'pynvml'} & set(sys.modules); "
        "import harness.probes as p; import harness.probes.cpu, harness.probes.cuda, "
        "harness.probes.nvml, harness.probes.rapl, harness.probes.replay; p.register_metrics(); "
        "print(sorted(({'torch', 'pynvml'} & set(sys.modules)) - pre))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- cpu-allocator


@pytest.mark.parametrize(
    ("deltas", "peak"),
    [([], 0), ([-5, 3], 0), ([1, 3, -1, 2, -5], 5), ([4, -4, 2], 4), ([-2, 3], 1)],
)
def test_window_peak_bytes(deltas: list[int], peak: int) -> None:
    assert window_peak_bytes(deltas) == peak


def test_cpu_allocator_exact_peak_of_known_pattern() -> None:
    probe = CpuAllocatorProbe("cpu")
    assert probe.unavailable() is None
    probe.start()
    a = _bytes(1 * MiB)
    b = _bytes(3 * MiB)
    del a  # 4 MiB → 3 MiB
    c = _bytes(2 * MiB)  # 5 MiB: the peak
    del b, c
    value = _only(probe.stop())
    assert value == Value(
        "memory.window_peak_bytes", float(5 * MiB), "bytes", n=1, source="torch-profiler"
    )


def test_cpu_allocator_reports_requested_sizes_unrounded() -> None:
    probe = CpuAllocatorProbe("cpu")
    probe.start()
    a = torch.empty(7, dtype=torch.float32)  # 28 bytes
    b = _bytes(1000)
    del a, b
    assert _only(probe.stop()).value == 1028.0


def test_cpu_allocator_real_ops() -> None:
    x = torch.randn(256, 256)
    linear = torch.nn.Linear(256, 512)
    probe = CpuAllocatorProbe("cpu")
    probe.start()
    with torch.no_grad():
        out = torch.nn.functional.gelu(linear(x))  # two 256x512 fp32 tensors alive at once
    del out
    assert _only(probe.stop()).value == float(2 * 256 * 512 * 4)


def test_cpu_allocator_window_is_relative_to_its_start() -> None:
    probe = CpuAllocatorProbe("cpu")
    probe.start()
    kept = _bytes(2 * MiB)
    assert _only(probe.stop()).value == float(2 * MiB)

    probe.start()
    del kept  # freed inside this window: the running sum goes to -2 MiB
    small = _bytes(1 * MiB)  # -1 MiB: never above the start
    assert _only(probe.stop()).value == 0.0
    del small

    probe.start()
    assert _only(probe.stop()).value == 0.0  # nothing allocated


def test_cpu_allocator_follows_the_calling_thread_only() -> None:
    probe = CpuAllocatorProbe("cpu")
    probe.start()
    other = threading.Thread(target=lambda: _bytes(1 * MiB))
    other.start()
    other.join()
    x = torch.randn(1000, 1000)  # intra-op threads of this thread are seen
    y = x.sum(dim=0)
    del x, y
    assert _only(probe.stop()).value == float(1000 * 1000 * 4 + 1000 * 4)


def test_cpu_allocator_only_on_cpu() -> None:
    reason = CpuAllocatorProbe("cuda:0").unavailable()
    assert reason is not None and "cuda-allocator" in reason
    assert CpuAllocatorProbe("cpu:0").unavailable() is None


def test_cpu_allocator_stop_without_start() -> None:
    with pytest.raises(RuntimeError, match="without start"):
        CpuAllocatorProbe("cpu").stop()


def test_cpu_allocator_gives_the_profilers_memory_back() -> None:
    """A stopped profiler's records (~20 kB an operator) go back to the OS: later RSS
    windows start where they would have without it (without the fix: about +370 MB)."""
    x = torch.ones(4)
    for _ in range(2):  # the first pays for the profiler's one-time set-up
        rss_before = _status_kb("VmRSS")
        probe = CpuAllocatorProbe("cpu")
        probe.start()
        for _ in range(20_000):
            x = x + 1
        probe.stop()
    assert _status_kb("VmRSS") - rss_before < 64 * 1024  # kB


# ---------------------------------------------------------------- rss


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_rss_peak_sees_touched_memory_and_resets() -> None:
    import mmap

    probe = RssProbe("cpu")
    assert probe.unavailable() is None
    rss_before = _status_kb("VmRSS") * 1024
    probe.start()
    block = mmap.mmap(-1, 64 * MiB)  # its own mapping: no allocator keeps it after close
    for page in range(0, 64 * MiB, mmap.PAGESIZE):
        block[page] = 1  # written, so resident
    first = _only(probe.stop())
    block.close()  # munmap: the pages go back to the OS
    assert first.source == "vmhwm" and first.unit == "bytes"
    assert first.value is not None and first.value >= rss_before + 64 * MiB

    probe.start()  # the high-water mark is reset to the current RSS
    rss_now = _status_kb("VmRSS") * 1024
    second = _only(probe.stop()).value
    assert second is not None and rss_now - 8 * MiB <= second < first.value - 32 * MiB


def test_rss_reads_vmhwm_from_status(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("Name:\tpython\nVmHWM:\t  12345 kB\nVmRSS:\t 100 kB\n")
    (tmp_path / "clear_refs").write_text("")
    probe = RssProbe("cuda:0", proc_self=tmp_path)  # RSS is host memory: any device
    assert probe.unavailable() is None
    probe.start()
    assert (tmp_path / "clear_refs").read_text() == "5"
    assert probe.stop() == [
        Value("memory.peak_rss_bytes", 12345.0 * 1024, "bytes", n=1, source="vmhwm")
    ]


def test_rss_unavailable_without_proc(tmp_path: Path) -> None:
    reason = RssProbe("cpu", proc_self=tmp_path).unavailable()
    assert reason is not None and reason.startswith("cannot read VmHWM from")

    (tmp_path / "status").write_text("VmHWM:\t 1 kB\n")
    (tmp_path / "clear_refs").mkdir()  # not writable as a file
    reason = RssProbe("cpu", proc_self=tmp_path).unavailable()
    assert reason is not None and reason.startswith("cannot reset the RSS high-water mark")


# ---------------------------------------------------------------- cuda-allocator


def test_cuda_allocator_unavailable_reasons() -> None:
    assert CudaAllocatorProbe("cpu").unavailable() == (
        "cuda-allocator measures CUDA devices; device 'cpu' is not one"
    )
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    reason = CudaAllocatorProbe("cuda:0").unavailable()
    assert reason is not None and reason.startswith("CUDA is not available (torch ")


@pytest.mark.gpu
def test_cuda_allocator_exact_peaks() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = "cuda:0"
    probe = CudaAllocatorProbe(device)
    assert probe.unavailable() is None
    resident = torch.empty(8 * MiB, dtype=torch.uint8, device=device)
    at_start = torch.cuda.memory_allocated(device)
    probe.start()
    a = torch.empty(1 * MiB, dtype=torch.uint8, device=device)
    b = torch.empty(3 * MiB, dtype=torch.uint8, device=device)
    del a
    c = torch.empty(2 * MiB, dtype=torch.uint8, device=device)
    del b, c
    values = {v.name: v for v in probe.stop()}
    assert values["memory.window_peak_bytes"].value == float(5 * MiB)
    assert values["memory.peak_alloc_bytes"].value == float(at_start + 5 * MiB)
    reserved = values["memory.peak_reserved_bytes"].value
    assert reserved is not None and reserved >= at_start + 5 * MiB
    assert {v.source for v in values.values()} == {"cuda-allocator"}
    del resident


# ---------------------------------------------------------------- nvml (replayed)


def test_energy_from_replayed_counter() -> None:
    # The first reading answers unavailable()'s check that the counter exists.
    fake = ReplayNvml(energy_mj=[999_000, 1_000_000, 1_250_500])
    probe = NvmlEnergyProbe("cuda:0", nvml=fake)
    assert probe.phase == "timing"
    assert probe.unavailable() is None
    probe.start()
    assert probe.stop() == [Value("energy.total_j", 250.5, "J", n=1, source="nvml-counter")]
    assert fake.opened == [0]


def test_energy_counter_going_backwards_is_null_with_reason() -> None:
    probe = NvmlEnergyProbe("cuda:0", nvml=ReplayNvml(energy_mj=[5_000, 5_000, 1_000]))
    probe.start()
    value = _only(probe.stop())
    assert value.value is None
    assert value.reason is not None and "went backwards by 4000 mJ" in value.reason


def test_energy_unavailable_reasons_from_replayed_errors() -> None:
    cases = {
        "NVMLError_LibraryNotFound": NO_LIBRARY_REASON,
        "NVMLError_DriverNotLoaded": "NVIDIA driver not loaded (NVML: Driver Not Loaded)",
    }
    for error, reason in cases.items():
        probe = NvmlEnergyProbe("cuda:0", nvml=ReplayNvml(init_error=error))
        assert probe.unavailable() == reason
        with pytest.raises(RuntimeError, match=reason.split(" (")[0]):
            probe.start()
    pre_volta = NvmlEnergyProbe("cuda:0", nvml=ReplayNvml(energy_error="NVMLError_NotSupported"))
    assert pre_volta.unavailable() == (
        "cuda:0 has no NVML total-energy counter (needs a Volta or newer GPU)"
    )


@pytest.mark.parametrize(
    ("samples", "joules"),
    [
        ([(0.0, 1000.0), (1.0, 1000.0)], 1.0),  # 1 W for 1 s
        ([(0.0, 0.0), (2.0, 4000.0)], 4.0),  # a ramp 0 → 4 W over 2 s
        # 75 J + 75 J + 400 J
        ([(10.0, 100_000.0), (10.5, 200_000.0), (11.0, 100_000.0), (13.0, 300_000.0)], 550.0),
        ([(0.0, 5000.0), (0.0, 9000.0), (1.0, 9000.0)], 9.0),  # equal times add nothing
    ],
)
def test_trapezoid_j(samples: list[tuple[float, float]], joules: float) -> None:
    assert trapezoid_j(samples) == joules


def test_trapezoid_j_rejects_bad_traces() -> None:
    with pytest.raises(ValueError, match="at least two samples"):
        trapezoid_j([(0.0, 1.0)])
    with pytest.raises(ValueError, match="back in time"):
        trapezoid_j([(1.0, 1.0), (0.5, 1.0)])


class _Ticks:
    """A clock reading successive scripted times, s."""

    def __init__(self, times: list[float]) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def test_power_polling_integrates_replayed_samples_exactly() -> None:
    # A pre-Volta GPU: no energy counter. unavailable() reads the power once to check it;
    # start() and stop() read it at t = 0 s and t = 2 s; the polling thread sleeps an hour.
    fake = ReplayNvml(energy_error="NVMLError_NotSupported", power_mw=[70_000, 60_000, 90_000])
    probe = NvmlPowerProbe("cuda:0", nvml=fake, interval_s=3600, clock=_Ticks([0.0, 2.0]))
    assert probe.phase == "timing"
    assert probe.unavailable() is None
    probe.start()
    (value,) = probe.stop()
    assert value == Value("energy.total_j", 150.0, "J", n=1, source="nvml-power")  # 75 W × 2 s
    assert probe.samples == [(0.0, 60_000.0), (2.0, 90_000.0)]


def test_power_polling_thread_samples_a_linear_ramp() -> None:
    # Power rising linearly with the (fake) time: the trapezoid rule is exact for any
    # number of samples the thread happens to take.
    now = [0.0]

    def clock() -> float:
        now[0] += 0.001
        return now[0]

    def power_mw() -> int:
        return 50_000 + round(now[0] * 1e6)  # 50 W + 1000 W/s: integer mW at each µs step

    fake = ReplayNvml(energy_error="NVMLError_NotSupported", power_mw=power_mw)
    probe = NvmlPowerProbe("cuda:0", nvml=fake, interval_s=0.001, clock=clock)
    assert probe.unavailable() is None
    probe.start()
    threading.Event().wait(0.05)
    (value,) = probe.stop()
    samples = probe.samples
    assert len(samples) >= 3  # start, at least one from the thread, stop
    (t0, _), (t1, _) = samples[0], samples[-1]
    # Readings are taken just before the clock ticks, so p(t) = 50 W + 1000 W/s · (t − 1 ms).
    exact = 50 * (t1 - t0) + 1000 * ((t1 - 0.001) ** 2 - (t0 - 0.001) ** 2) / 2
    assert value.value == pytest.approx(exact, rel=1e-9)


def test_power_probe_defers_to_the_energy_counter() -> None:
    probe = NvmlPowerProbe("cuda:0", nvml=ReplayNvml(energy_mj=[1_000], power_mw=[50_000]))
    assert probe.unavailable() == (
        "cuda:0 has NVML's total-energy counter, which nvml-counter reads; power polling is "
        "only the fallback for GPUs without it"
    )


def test_power_probe_unavailable_without_power_reading() -> None:
    fake = ReplayNvml(energy_error="NVMLError_NotSupported", power_error="NVMLError_NotSupported")
    reason = NvmlPowerProbe("cuda:0", nvml=fake).unavailable()
    assert reason is not None and reason.startswith("NVML power reading unsupported on cuda:0")
    assert NvmlPowerProbe("cpu").unavailable() == "no NVIDIA GPU: power polling needs NVML"


def test_power_polling_failure_is_null_with_reason() -> None:
    fake = ReplayNvml(energy_error="NVMLError_NotSupported", power_mw=[1, 2])  # then none left
    probe = NvmlPowerProbe("cuda:0", nvml=fake, interval_s=0.001)
    probe.start()
    threading.Event().wait(0.05)
    (value,) = probe.stop()
    assert value.value is None
    assert value.reason == (
        "NVML power polling failed on cuda:0: IndexError: ReplayNvml: no recorded power "
        "readings left"
    )
    with pytest.raises(RuntimeError, match="without start"):
        probe.stop()


def test_nvml_probes_on_cpu_never_touch_nvml() -> None:
    fake = ReplayNvml(init_error="NVMLError_LibraryNotFound")
    assert NvmlEnergyProbe("cpu", nvml=fake).unavailable() == "no NVIDIA GPU: energy needs NVML"
    assert NvmlMemoryProbe("cpu", nvml=fake).unavailable() == (
        "no NVIDIA GPU: device memory needs NVML"
    )


@pytest.mark.parametrize(
    ("readings", "expected"),
    [([GiB, 10 * GiB, 12 * GiB], 12 * GiB), ([GiB, 12 * GiB, 10 * GiB], 12 * GiB)],
)
def test_device_memory_is_max_of_start_and_stop(readings: list[int], expected: int) -> None:
    probe = NvmlMemoryProbe("cuda", nvml=ReplayNvml(memory_used_bytes=readings))
    assert probe.unavailable() is None
    probe.start()
    assert probe.stop() == [
        Value("memory.device_used_bytes", float(expected), "bytes", n=1, source="nvml")
    ]


def test_visible_devices_map_cuda_index_to_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    fake = ReplayNvml(energy_mj=[0], device_count=4)
    assert NvmlEnergyProbe("cuda:1", nvml=fake).unavailable() is None
    assert fake.opened == [1]

    uuid = "GPU-8f6a3a1c-0000-1111-2222-333344445555"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", uuid)
    fake = ReplayNvml(energy_mj=[0], uuids=[uuid])
    assert NvmlEnergyProbe("cuda:0", nvml=fake).unavailable() is None
    assert fake.opened == [uuid]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    reason = NvmlMemoryProbe("cuda:1", nvml=ReplayNvml()).unavailable()
    assert reason == "cuda:1 is not visible: CUDA_VISIBLE_DEVICES='2' exposes 1 GPU(s)"

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    reason = NvmlMemoryProbe("cuda:5", nvml=ReplayNvml(device_count=2)).unavailable()
    assert reason is not None and reason.startswith("NVML has no GPU 5 for cuda:5")


@pytest.mark.parametrize(
    ("device", "visible", "expected"),
    [
        ("cuda", None, 0),
        ("cuda:3", None, 3),
        ("cuda:0", "2,0", 2),
        ("cuda:1", " 2, 0 ", 0),
        ("cuda:1", "GPU-a,MIG-b", "MIG-b"),
    ],
)
def test_nvml_device_id(device: str, visible: str | None, expected: int | str) -> None:
    assert nvml_device_id(device, visible) == expected


@pytest.mark.parametrize(
    ("device", "visible"),
    [("cpu", None), ("cuda:x", None), ("cuda:2", "0,1,-1,3"), ("cuda:0", ""), ("cuda:0", "-1")],
)
def test_nvml_device_id_rejects(device: str, visible: str | None) -> None:
    with pytest.raises(ValueError):
        nvml_device_id(device, visible)


# ---------------------------------------------------------------- nvml (real library)


def _nvml_present() -> bool:
    nvml = load_nvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return False
    return True


def test_real_nvml_reasons_without_driver() -> None:
    if _nvml_present():
        pytest.skip("NVML works here")
    assert NvmlEnergyProbe("cuda:0").unavailable() == NO_LIBRARY_REASON
    assert NvmlMemoryProbe("cuda:0").unavailable() == NO_LIBRARY_REASON
    assert NvmlEnergyProbe("cpu").unavailable() == "no NVIDIA GPU: energy needs NVML"


def test_load_nvml_is_silent() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            "from harness.probes.nvml import load_nvml\nm = load_nvml(); print(m.__name__)",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert (result.stdout, result.stderr) == ("pynvml\n", "")


@pytest.mark.gpu
def test_real_nvml_energy_and_memory() -> None:
    if not torch.cuda.is_available() or not _nvml_present():
        pytest.skip("needs an NVIDIA GPU with NVML")
    energy = NvmlEnergyProbe("cuda:0")
    memory = NvmlMemoryProbe("cuda:0")
    if energy.unavailable() is not None:
        pytest.skip(str(energy.unavailable()))
    assert memory.unavailable() is None
    x = torch.ones(4096, 4096, device="cuda:0")
    memory.start()
    torch.cuda.synchronize()
    energy.start()
    for _ in range(50):
        x = x @ x / 4096
    torch.cuda.synchronize()
    joules = _only(energy.stop()).value
    used = _only(memory.stop()).value
    assert joules is not None and joules >= 0.0
    assert used is not None and used >= 4096 * 4096 * 4
