"""``bench doctor``: what this machine can measure, with the reasons null metrics carry."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from harness.doctor import Diagnosis, ProbeStatus, diagnose, render
from harness.testing import registry_with
from harness.workloads.energy import energy_unavailable_reason

ROOT = Path(__file__).resolve().parent.parent


def _text(diagnosis: Diagnosis) -> str:
    out = io.StringIO()
    render(diagnosis, Console(file=out, width=400, color_system=None))
    return out.getvalue()


def test_every_probe_on_every_device_with_its_reason() -> None:
    registry = registry_with()
    d = diagnose(registry)
    devices = ["cpu", *d.gpus]
    assert [(s.probe, s.device) for s in d.probes] == [
        (name, device) for name in registry.probes for device in devices
    ]
    kinds = {s.probe: s.kind for s in d.probes}
    assert kinds["nvml-counter"] == kinds["nvml-power"] == kinds["rapl"] == "energy"
    assert kinds["cpu-allocator"] == kinds["rss"] == "memory"
    on_cpu = {s.probe: s.reason for s in d.probes if s.device == "cpu"}
    assert on_cpu["cpu-allocator"] is None
    for name, cls in registry.probes.items():
        assert on_cpu[name] == cls("cpu").unavailable()
    assert d.cpu_count >= 1 and d.ram_bytes > 0 and d.cpu
    assert "torch" in d.libraries
    assert [a.name for a in d.assets] == ["smollm2-135m", "tiny-random-llama", "shakespeare"]


def test_screen_shows_the_reasons_stored_with_null_energy() -> None:
    registry = registry_with()
    d = diagnose(registry)
    text = _text(d)
    for status in d.probes:
        assert status.probe in text
        if status.reason is not None:
            assert f"no: {status.reason}" in text  # a wide console: no wrapping
    if d.energy_meter("cpu") is None:
        assert "Energy on cpu: no meter" in text
        # The cell's null energy reason is built from exactly these probe reasons.
        reason = energy_unavailable_reason([cls("cpu") for cls in registry.probes.values()])
        for part in reason.split("; "):
            name, why = part.split(": ", 1)
            assert ProbeStatus(name, "energy", "cpu", why) in d.probes
    for asset in d.assets:
        assert f"Asset      {asset.name}: " in text


def test_energy_meter_picks_the_first_available() -> None:
    probes = (
        ProbeStatus("rss", "memory", "cpu", None),
        ProbeStatus("nvml-counter", "energy", "cpu", "no NVIDIA GPU"),
        ProbeStatus("rapl", "energy", "cpu", None),
        ProbeStatus("nvml-counter", "energy", "cuda:0", None),
    )
    d = Diagnosis("cpu", 2, 2**30, {"cuda:0": "GPU"}, None, probes, {}, ())
    assert d.energy_meter("cpu") == "rapl"
    assert d.energy_meter("cuda:0") == "nvml-counter"
    assert d.energy_meter("cuda:1") is None
    text = _text(d)
    assert "Energy on cpu: measured by rapl." in text
    assert "GPU   cuda:0: GPU" in text


def test_bench_doctor_exits_zero() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "harness", "doctor"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "bench doctor: what this machine can measure" in done.stdout
    assert "nvml-counter" in done.stdout and "rapl" in done.stdout
