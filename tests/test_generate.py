"""The generate workload's statistics: CVs, the noisy flag, adaptive repeats, the table marker."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import pytest

from harness import report
from harness.results import Value
from harness.suite import PROTOCOL_VERSION, Policy, cell_key
from harness.testing import registry_with
from harness.worker import Worker
from harness.workloads.generate import (
    GenerateParams,
    SuppressEos,
    _converged,
    _cost_values,
    _enough,
    _itl_values,
    _stats_values,
    eos_token_ids,
    prompt_ids,
)

P2 = GenerateParams(new_tokens=2)  # TPOT = e2e − TTFT


def _stats(tpot: list[float], ttft: list[float] | None = None) -> dict[str, Value]:
    first = ttft or [1.0] * len(tpot)
    e2e = [t + d for t, d in zip(first, tpot, strict=True)]
    return {v.name: v for v in _stats_values(first, e2e, P2)}


def test_quiet_runs_are_not_noisy() -> None:
    stats = _stats([1.0, 1.0, 1.0])
    assert stats["stats.tpot_cv"] == Value("stats.tpot_cv", 0.0, "ratio", n=3, source="clock")
    assert stats["stats.ttft_cv"].value == 0.0
    assert stats["stats.noisy"] == Value("stats.noisy", 0.0, "flag", n=3, source="clock")


def test_wide_interval_is_noisy() -> None:
    # n = 6: the 95% interval is [min, max] = [1.0, 1.2]; half-width 0.1 > 5% of the median.
    stats = _stats([1.0, 1.0, 1.0, 1.0, 1.0, 1.2])
    assert stats["stats.noisy"].value == 1.0


def test_large_cv_is_noisy_even_with_a_narrow_interval() -> None:
    # n = 20: the interval is ranks 6..15 = [1.0, 1.0]; but two outliers give
    # mean 1.2, stdev sqrt((18·0.04 + 2·3.24)/19) = 0.6156, CV 0.513 > 0.1.
    stats = _stats([1.0] * 18 + [3.0, 3.0], ttft=[2.0] * 10 + [4.0] * 10)
    assert stats["stats.tpot_cv"].value == pytest.approx(0.6155870112510924 / 1.2)
    # TTFT: mean 3, stdev sqrt(20/19) → CV 0.34199...
    assert stats["stats.ttft_cv"].value == pytest.approx((20 / 19) ** 0.5 / 3)
    assert stats["stats.noisy"].value == 1.0


def test_half_width_at_the_threshold_is_not_noisy() -> None:
    # n = 6: [min, max] = [20, 22] around median 20: half-width 1 = 5% exactly; CV 0.040.
    stats = _stats([20.0, 20.0, 20.0, 20.0, 20.0, 22.0])
    assert stats["stats.noisy"].value == 0.0


def test_a_cell_that_never_converged_is_noisy_with_its_cv() -> None:
    stats = {v.name: v for v in _stats_values([1.0] * 6, [2.0] * 6, P2, converged=False)}
    assert stats["stats.noisy"].value == 1.0
    assert stats["stats.tpot_cv"].value == 0.0  # quiet samples, but the target was missed


def test_converged_against_the_target() -> None:
    ttft, quiet, shaky = [0.5] * 6, [1.5] * 6, [1.5, 1.5, 1.5, 1.5, 1.5, 1.6]
    assert _converged(ttft, quiet, P2, Policy()) is None  # no target: nothing to reach
    assert _converged(ttft, quiet, P2, Policy(target_ci=0.02)) is True
    # [1.0, 1.1] around 1.0: half-width 5% > 2%
    assert _converged(ttft, shaky, P2, Policy(target_ci=0.02)) is False
    assert _converged(ttft[:5], quiet[:5], P2, Policy(target_ci=0.5)) is False  # < 6 runs


def test_cost_values() -> None:
    fixed = {v.name: v for v in _cost_values(3, 4.5, None)}
    assert fixed["stats.repeats"].value == 3.0 and fixed["stats.converge_s"].value == 4.5
    assert fixed["stats.converged"].value is None
    assert "target_ci" in str(fixed["stats.converged"].reason)
    missed = {v.name: v for v in _cost_values(20, 30.0, False)}
    assert (missed["stats.converged"].value, missed["stats.repeats"].value) == (0.0, 20.0)


def test_itl_tails_need_enough_gaps() -> None:
    values = {v.name: v for v in _itl_values([0.01 * (i % 7 + 1) for i in range(45)])}
    assert values["latency.itl_p50_s"].value is not None
    assert values["latency.itl_p90_s"].value is not None  # 45 >= 10
    assert values["latency.itl_p95_s"].value is not None  # 45 >= 20
    p99 = values["latency.itl_p99_s"]
    assert p99.value is None and p99.n == 45
    assert p99.reason == (
        "p99 needs at least 100 inter-token gaps, 45 were measured: raise new_tokens or "
        "policy.repeats"
    )
    enough = {v.name: v for v in _itl_values([float(i) for i in range(1, 401)])}
    p99 = enough["latency.itl_p99_s"]
    assert p99.value == pytest.approx(396.01)  # numpy's linear interpolation
    # ranks of quantile_ci_ranks(400, 0.99) bound it
    low, high = p99.ci_low, p99.ci_high
    assert low is not None and high is not None
    assert low <= 396.01 <= high
    p50 = enough["latency.itl_p50_s"]
    assert (p50.ci_low, p50.ci_high) == (180.0, 221.0)  # median_ci_ranks(400) = (180, 221)


# ---------------------------------------------------------------- exactly new_tokens


def test_suppress_eos_gives_the_tokens_of_min_new_tokens() -> None:
    import torch
    from transformers import LogitsProcessorList

    from harness.assets import shakespeare_text
    from harness.models import BuiltinSource

    loaded = BuiltinSource().load("tiny-random-llama")
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = prompt_ids(tokenizer, shakespeare_text("prompt"), 1, 12)
    common = {"input_ids": ids, "max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        free = model.generate(**common)
        # Make the third greedy token the end-of-sequence token.
        eos = int(free[0, 12 + 2])
        model.generation_config.eos_token_id = eos
        assert eos_token_ids(model) == [eos]
        stopped = model.generate(**common)
        reference = model.generate(**common, min_new_tokens=8)
        ours = model.generate(**common, logits_processor=LogitsProcessorList([SuppressEos([eos])]))
    assert stopped.shape[1] < 12 + 8  # it would have stopped early
    assert ours.shape == (1, 12 + 8)
    assert ours.tolist() == reference.tolist()
    assert eos not in ours[:, 12:].tolist()[0]


def test_grounded_prompts_restart_their_own_passage() -> None:
    from harness.assets import shakespeare_text
    from harness.models import BuiltinSource

    tokenizer = BuiltinSource().load("tiny-random-llama").tokenizer
    text = shakespeare_text("prompt")
    plain = prompt_ids(tokenizer, text, 2, 10).tolist()
    grounded = prompt_ids(tokenizer, text, 2, 10, grounded=True).tolist()
    pool = plain[0] + plain[1]
    # passages of ⌈3/4 · 10⌉ = 8 tokens, each followed by its own first 2 tokens
    assert grounded == [pool[:8] + pool[:2], pool[8:16] + pool[8:10]]


def test_eos_token_ids() -> None:
    class Config:
        eos_token_id: Any = None

    class Model:
        generation_config = Config()

    model = Model()
    assert eos_token_ids(model) == []
    model.generation_config.eos_token_id = 2
    assert eos_token_ids(model) == [2]
    model.generation_config.eos_token_id = [2, 7]
    assert eos_token_ids(model) == [2, 7]
    assert eos_token_ids(object()) == []


# ---------------------------------------------------------------- adaptive repeats


def _enough_for(tpot: list[float], **policy: Any) -> bool:
    ttft = [0.5] * len(tpot)
    return _enough(ttft, [t + d for t, d in zip(ttft, tpot, strict=True)], P2, Policy(**policy))


def test_fixed_repeats() -> None:
    assert not _enough_for([1.0] * 4, repeats=5)
    assert _enough_for([1.0] * 5, repeats=5)


def test_target_ci_needs_a_95_percent_interval_then_the_target() -> None:
    policy = {"repeats": 2, "target_ci": 0.02, "max_repeats": 20}
    assert not _enough_for([1.0] * 5, **policy)  # fewer than 6 runs give no 95% interval
    assert _enough_for([1.0] * 6, **policy)  # [1.0, 1.0]: half-width 0
    # [1.0, 1.05] around 1.0: half-width 2.5% > 2%: keep going ...
    assert not _enough_for([1.0, 1.0, 1.0, 1.0, 1.0, 1.05], **policy)
    # ... until the interval of ranks (2, 9) at n = 10 is [1.0, 1.0].
    assert _enough_for([1.0] * 8 + [1.05, 0.96], **policy)


def test_target_ci_stops_at_max_repeats() -> None:
    noisy = [1.0, 2.0] * 10
    assert not _enough_for(noisy[:9], repeats=2, target_ci=0.02, max_repeats=10)
    assert _enough_for(noisy[:10], repeats=2, target_ci=0.02, max_repeats=10)
    # repeats above max_repeats: repeats wins.
    assert not _enough_for(noisy[:11], repeats=12, target_ci=0.02, max_repeats=10)
    assert _enough_for(noisy[:12], repeats=12, target_ci=0.02, max_repeats=10)


def _run(policy: dict[str, Any]) -> dict[str, Value]:
    from harness.suite import suite_from_data

    registry = registry_with()
    data = {
        "name": "adaptive",
        "models": ["tiny-random-llama"],
        "devices": ["cpu"],
        "workload": {"generate": {"prompt_tokens": 8, "new_tokens": 3}},
        "policy": {"warmup": 0, **policy},
    }
    (cell,) = suite_from_data(data, registry, devices=["cpu"]).cells
    result = Worker("cpu", registry).run(cell)
    assert result.status == "ok", result.reason
    return {v.name: v for v in result.values}


def test_adaptive_repeats_end_to_end() -> None:
    # An unreachable target runs max_repeats; a trivially met one stops at 6 runs.
    strict = _run({"repeats": 2, "target_ci": 1e-12, "max_repeats": 7})
    assert strict["latency.tpot_s"].n == 7
    loose = _run({"repeats": 2, "target_ci": 10.0})
    assert loose["latency.tpot_s"].n == 6
    assert strict["stats.repeats"].value == 7 and strict["stats.converged"].value == 0.0
    assert strict["stats.noisy"].value == 1.0  # it never reached its target
    assert loose["stats.repeats"].value == 6 and loose["stats.converged"].value == 1.0
    for values in (strict, loose):
        assert values["stats.converge_s"].value > 0  # type: ignore[operator]
        tpot = values["latency.tpot_s"]
        assert tpot.ci_low is not None and tpot.ci_high is not None
        assert tpot.ci_low <= tpot.value <= tpot.ci_high  # type: ignore[operator]
        assert values["stats.tpot_cv"].n == tpot.n
        assert values["stats.noisy"].value in (0.0, 1.0)


# ---------------------------------------------------------------- policy and cell key


def test_new_policy_fields_leave_existing_keys_unchanged() -> None:
    from harness.suite import ModelSpec, TaskSpec

    args = (ModelSpec(id="m"), (), TaskSpec("generate", {}), (), "cpu")
    base = cell_key(*args, Policy())
    # The key as computed before these fields existed: results stored then still resume.
    before = {
        "protocol": PROTOCOL_VERSION,
        "model": ModelSpec(id="m").model_dump(mode="json"),
        "stack": [],
        "workload": {"name": "generate", "params": {}},
        "accuracy": [],
        "device": "cpu",
        "policy": {"warmup": 2, "repeats": 5},
    }
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert base == hashlib.sha256(canonical.encode()).hexdigest()
    assert cell_key(*args, Policy(max_repeats=50)) == base  # only used with target_ci
    assert cell_key(*args, Policy(min_energy_window_s=1.0)) == base
    assert cell_key(*args, Policy(min_energy_window_s=2.0)) != base
    adaptive = cell_key(*args, Policy(target_ci=0.02))
    assert adaptive != base
    assert cell_key(*args, Policy(target_ci=0.02, max_repeats=50)) != adaptive


# ---------------------------------------------------------------- results table


class _FakeStore:
    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def cells_frame(self, **_: Any) -> pd.DataFrame:
        return self.frame

    def metric_reasons(self, name: str, **_: Any) -> dict[str, str]:
        return {}


def test_results_table_marks_noisy_rows(capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[dict[str, Any]] = [
        {"technique": "quiet", "tpot": 0.010, "noisy": 0.0},
        {"technique": "shaky", "tpot": 0.020, "noisy": 1.0},
        {"technique": "old", "tpot": 0.030, "noisy": float("nan")},  # stored before the flag
    ]
    frame = pd.DataFrame(
        [
            {
                "cell_key": str(i),
                "model": "m",
                "device": "cpu",
                "technique": r["technique"],
                "workload": "generate(new_tokens=4)",
                "status": "ok",
                "reason": None,
                "latency.tpot_s": r["tpot"],
                "latency.tpot_s.ci_low": r["tpot"] * 0.9,
                "latency.tpot_s.ci_high": r["tpot"] * 1.1,
                "stats.noisy": r["noisy"],
            }
            for i, r in enumerate(rows)
        ]
    )
    report.print_results(_FakeStore(frame))  # type: ignore[arg-type]
    out = capsys.readouterr().out
    lines = {
        name: line
        for name in ("quiet", "shaky", "old")
        for line in out.splitlines()
        if name in line
    }
    assert "ok ~" in lines["shaky"]
    assert "ok ~" not in lines["quiet"] and "ok ~" not in lines["old"]
    assert "20.00 ±2.00" in lines["shaky"]  # the CI is shown with the median
    assert "~ after the status marks a noisy cell" in " ".join(out.split())


def test_repeated_metrics_keep_their_samples_in_order() -> None:
    import statistics

    from harness.testing import run_technique

    result = run_technique("baseline", repeats=3).result
    values = {v.name: v for v in result.values}
    for name in ("latency.ttft_s", "latency.tpot_s", "throughput.decode_tok_s"):
        value = values[name]
        assert len(value.samples) == value.n == 3
        assert value.value == statistics.median(value.samples)
    ttft, e2e = values["latency.ttft_s"].samples, values["latency.e2e_s"].samples
    tpot = [(e - t) / 3 for t, e in zip(ttft, e2e, strict=True)]  # new_tokens 4
    assert list(values["latency.tpot_s"].samples) == tpot
