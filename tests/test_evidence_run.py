"""A suite end to end: per-trial flips against the reference, quality gates, not-applied
cells, one-time costs and applied checks, as stored and as ``bench results`` prints them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import Store

pytestmark = pytest.mark.slow  # a suite of four cells in worker processes

SUITE = """\
name: evidence
models: [tiny-random-llama]
devices: [cpu]
workload:
  generate: {prompt_tokens: 16, new_tokens: 3}
techniques:
  - passkey-oracle
  - passkey-oracle: {wrong: [0, 1]}
  - inert
  - baseline
reference: passkey-oracle
accuracy:
  - passkey: {context_tokens: [128], depths: [0.25, 0.75], trials: 2, new_tokens: 4}
gates:
  accuracy.passkey: {min_recovery: 0.9}
  flips.passkey_right_to_wrong: {max: 0.25}
policy: {warmup: 0, repeats: 1}
"""


def test_flips_gates_and_not_applied_cells(tmp_path: Path, db_url: str, test_plugins: None) -> None:
    suite = tmp_path / "evidence.yaml"
    suite.write_text(SUITE)
    bench = [sys.executable, "-m", "harness"]
    done = subprocess.run(
        [*bench, "run", str(suite), "--db", db_url], capture_output=True, text=True, env=os.environ
    )
    assert done.returncode == 1, done.stderr  # a not-applied cell is a failed cell
    store = Store.open(db_url, read_only=True)
    frame = store.cells_frame().set_index("technique")

    assert frame["status"].to_dict() == {
        "passkey-oracle": "ok",
        "passkey-oracle(wrong=[0, 1])": "ok",
        "inert": "not-applied",
        "baseline": "ok",
    }
    # not-applied: the check's reason, the evidence kept, no accuracy task run after it.
    inert = frame.loc["inert"]
    assert inert["reason"] == "inert: changed nothing"
    assert inert["check.applied"] == 0.0
    assert inert["latency.tpot_s"] > 0
    assert inert.isna()["accuracy.passkey"]

    oracle, half, base = (
        frame.loc[t] for t in ("passkey-oracle", "passkey-oracle(wrong=[0, 1])", "baseline")
    )
    assert (oracle["accuracy.passkey"], half["accuracy.passkey"]) == (1.0, 0.5)
    # Trials 0 and 1 flipped right → wrong against the reference (the oracle); the random
    # baseline gets every trial wrong.
    assert half["flips.passkey_right_to_wrong"] == 0.5
    assert half["flips.passkey_wrong_to_right"] == 0.0
    assert half["flips.passkey_changed"] == 0.5
    assert base["flips.passkey_right_to_wrong"] == 1.0
    assert oracle["flips.passkey_changed"] == 0.0
    # Gates: judged against the reference of the same run.
    assert (oracle["gate.passed"], half["gate.passed"], base["gate.passed"]) == (1.0, 0.0, 0.0)
    reasons = store.metric_reasons("gate.passed")
    half_key = half["cell_key"]
    assert "accuracy.passkey 0.5× fails min_recovery 0.9" in reasons[half_key]
    assert "flips.passkey_right_to_wrong 0.5 fails max 0.25" in reasons[half_key]
    # One-time costs and the applied check are stored with every ok cell.
    for row in (oracle, half, base):
        assert row["cost.prepare_s"] >= 0 and row["cost.load_s"] > 0
        assert row["cost.prepare_peak_bytes"] > 0 and row["cost.load_peak_bytes"] > 0
        assert row["check.applied"] == 1.0
    assert store.metric_reasons("check.applied")[base["cell_key"]] == (
        "baseline: runs the model as loaded; nothing to check"
    )
    # The trials' outcomes are stored as samples, in trial order.
    samples = store.samples_frame()
    half_trials = samples[
        (samples["cell_key"] == half_key) & (samples["name"] == "accuracy.passkey")
    ]
    assert list(half_trials["value"]) == [0.0, 0.0, 1.0, 1.0]

    shown = subprocess.run(
        [*bench, "results", "--db", db_url], capture_output=True, text=True, env=os.environ
    )
    assert shown.returncode == 0, shown.stderr
    assert "not-applied" in shown.stdout
    assert "✗gate" in shown.stdout
    assert "passkey 50%/0%" in shown.stdout
    assert "fails min_recovery 0.9" in shown.stdout  # the gate's footnote
