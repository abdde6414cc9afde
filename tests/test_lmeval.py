"""``lm-eval``: never fails a cell; a task re-pointed at local data runs offline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness.models import BuiltinSource
from harness.technique import Prepared
from harness.testing import workload_context
from harness.workloads import lmeval
from harness.workloads.lmeval import TASKS, LmEval, LmEvalParams

needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed here"
)


def test_only_tasks_with_a_registered_metric_are_accepted() -> None:
    with pytest.raises(ValueError, match=r"unknown lm-eval task.*supported.*hellaswag"):
        LmEvalParams(tasks=["hellaswag", "my_task"])
    assert LmEvalParams().tasks == ["hellaswag"]
    names = [metric.name for _, metric in TASKS.values()]
    assert len(set(names)) == len(names)
    assert all(name.startswith("accuracy.lmeval_") for name in names)


def test_without_lm_eval_every_metric_is_null_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        lmeval.importlib.util, "find_spec", lambda name: None if name == "lm_eval" else real(name)
    )
    params = LmEvalParams(tasks=["hellaswag", "wikitext"])
    values = LmEval(params).run(Prepared(model=None), workload_context(None)).values
    assert [v.name for v in values] == [
        "accuracy.lmeval_hellaswag",
        "accuracy.lmeval_wikitext_word_perplexity",
    ]
    assert all(v.value is None for v in values)
    assert all("pip install 'bench[lmeval]'" in (v.reason or "") for v in values)


def test_hflm_cannot_re_tie_a_prepared_models_weights() -> None:
    import torch

    class Tied(torch.nn.Module):
        ties = 0

        def tie_weights(self) -> None:
            type(self).ties += 1

    model = Tied()
    with lmeval.keep_weights(model):
        model.tie_weights()
    assert Tied.ties == 0
    model.tie_weights()
    assert Tied.ties == 1
    assert "tie_weights" not in vars(model)


BOOLQ = """\
task: boolq
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{passage}}}}\\nQuestion: {{{{question}}}}?\\nAnswer:"
doc_to_target: label
doc_to_choice: ["no", "yes"]
metric_list:
  - metric: acc
"""


@pytest.mark.slow  # importing lm-eval and indexing its task files takes tens of seconds
@needs_lm_eval
def test_local_task_runs_and_a_missing_dataset_is_a_null_metric(tmp_path: Path) -> None:
    rows = [
        {"passage": "Water is wet.", "question": "is water wet", "label": 1},
        {"passage": "Fire is cold.", "question": "is fire hot", "label": 1},
        {"passage": "Ice is cold.", "question": "is ice hot", "label": 0},
        {"passage": "Snow is white.", "question": "is snow black", "label": 0},
    ]
    data = tmp_path / "boolq.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "boolq.yaml").write_text(BOOLQ.format(data=data))
    tiny = BuiltinSource().load("tiny-random-llama")
    params = LmEvalParams(tasks=["boolq", "hellaswag"], limit=4, include_path=str(tmp_path))
    boolq, hellaswag = (
        LmEval(params).run(Prepared(tiny.model), workload_context(tiny.tokenizer)).values
    )
    assert boolq.name == "accuracy.lmeval_boolq"
    assert boolq.value in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert boolq.n == 4
    assert boolq.source is not None and boolq.source.startswith("lm-eval ")
    # hellaswag's dataset is on the hub, which this machine cannot reach: null, with why.
    assert hellaswag.name == "accuracy.lmeval_hellaswag"
    assert hellaswag.value is None
    assert "hellaswag" in (hellaswag.reason or "") and "did not run" in (hellaswag.reason or "")
