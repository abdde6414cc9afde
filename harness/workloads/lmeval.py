"""Accuracy task ``lm-eval``: standard benchmarks through EleutherAI's lm-evaluation-harness.

The stack's prepared model is wrapped as ``HFLM(pretrained=<model>, tokenizer=...)`` and
each task runs through ``lm_eval.simple_evaluate`` (``limit`` examples, no bootstrap). The
optional dependency is the extra ``bench[lmeval]``. Nothing here fails a cell:

- lm-eval not installed → every requested task's metric is null with the reason;
- a task's dataset not available (no hub here and not in the local datasets cache) → that
  task's metric is null with lm-eval's reason; the other tasks still run.

Where the hub is unreachable, datasets are looked up in offline mode (no retries), so a
missing dataset costs no time. ``include_path`` adds a folder of lm-eval task YAMLs, which
take precedence over the built-in ones: a standard task re-pointed at local data files
keeps its name and its metric. Log-likelihood tasks call the model's forward pass, not
``generate``: a KV-cache technique is only exercised by generative tasks (``gsm8k``).

Per-document evidence: each task's metric keeps every document's outcome (1 right, 0
wrong, by ``doc_id``, from lm-eval's logged samples) as its samples, and the runner reports
the documents that flipped against the reference stack (``flips.lmeval_<task>_*``).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import Field, field_validator

from harness.environment import package_versions
from harness.evidence import flip_metrics
from harness.markers import hookimpl
from harness.results import Measurement, MetricDef, Value
from harness.technique import Config, Prepared
from harness.workloads import Workload, WorkloadContext

TASKS: dict[str, tuple[str, MetricDef]] = {
    # lm-eval task name: (lm-eval result key, the metric it is stored as)
    "hellaswag": (
        "acc_norm,none",
        MetricDef("accuracy.lmeval_hellaswag", "fraction", True, "HellaSwag acc_norm (lm-eval)"),
    ),
    "arc_easy": (
        "acc_norm,none",
        MetricDef("accuracy.lmeval_arc_easy", "fraction", True, "ARC-Easy acc_norm (lm-eval)"),
    ),
    "arc_challenge": (
        "acc_norm,none",
        MetricDef(
            "accuracy.lmeval_arc_challenge", "fraction", True, "ARC-Challenge acc_norm (lm-eval)"
        ),
    ),
    "piqa": (
        "acc_norm,none",
        MetricDef("accuracy.lmeval_piqa", "fraction", True, "PIQA acc_norm (lm-eval)"),
    ),
    "winogrande": (
        "acc,none",
        MetricDef("accuracy.lmeval_winogrande", "fraction", True, "WinoGrande acc (lm-eval)"),
    ),
    "boolq": (
        "acc,none",
        MetricDef("accuracy.lmeval_boolq", "fraction", True, "BoolQ acc (lm-eval)"),
    ),
    "openbookqa": (
        "acc_norm,none",
        MetricDef("accuracy.lmeval_openbookqa", "fraction", True, "OpenBookQA acc_norm (lm-eval)"),
    ),
    "lambada_openai": (
        "acc,none",
        MetricDef("accuracy.lmeval_lambada_openai", "fraction", True, "LAMBADA acc (lm-eval)"),
    ),
    "mmlu": (
        "acc,none",
        MetricDef("accuracy.lmeval_mmlu", "fraction", True, "MMLU acc, all subjects (lm-eval)"),
    ),
    "gsm8k": (
        "exact_match,strict-match",
        MetricDef("accuracy.lmeval_gsm8k", "fraction", True, "GSM8K strict exact match (lm-eval)"),
    ),
    "wikitext": (
        "word_perplexity,none",
        MetricDef(
            "accuracy.lmeval_wikitext_word_perplexity",
            "ppl",
            False,
            "WikiText-2 word perplexity (lm-eval rolling log-likelihood)",
        ),
    ),
}


class LmEvalParams(Config):
    tasks: list[str] = Field(
        default_factory=lambda: ["hellaswag"], description=f"lm-eval tasks: {', '.join(TASKS)}"
    )
    limit: int | None = Field(200, ge=1, description="examples per task; null: all")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples; null: task's")
    batch_size: int = Field(1, ge=1, description="lm-eval batch size")
    include_path: str | None = Field(
        None, description="folder of lm-eval task YAMLs that take precedence over built-ins"
    )

    @field_validator("tasks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in TASKS]
        if unknown or not v:
            raise ValueError(
                f"unknown lm-eval task(s) {', '.join(unknown) or '(none given)'}; supported "
                f"(each stored as a registered metric): {', '.join(TASKS)}"
            )
        return v


def lm_eval_missing() -> str | None:
    """Why lm-eval cannot run here, or None."""
    if importlib.util.find_spec("lm_eval") is None:
        return "lm-eval is not installed: pip install 'bench[lmeval]'"
    return None


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)  # indexes every task YAML: seconds, once


@contextmanager
def offline_datasets(offline: bool) -> Iterator[None]:
    """Make ``datasets`` and the hub client read only their local caches inside the block.

    Both read their offline switch from module constants set at import, so the constants
    are switched for the block and restored after it.
    """
    if not offline:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


@contextmanager
def keep_weights(model: Any) -> Iterator[None]:
    """Make ``model.tie_weights()`` a no-op inside the block.

    ``HFLM`` calls it on the model it is given, which would re-tie a language head that a
    technique replaced (a quantized head of a tied-embedding model) and so change the model
    being measured.
    """
    own = vars(model).get("tie_weights")
    model.tie_weights = lambda *args, **kwargs: None
    try:
        yield
    finally:
        if own is None:
            del model.tie_weights
        else:
            model.tie_weights = own


def _null(task: str, reason: str) -> Value:
    metric = TASKS[task][1]
    return Value(metric.name, None, metric.unit, reason=reason)


class LmEval(Workload[LmEvalParams]):
    """lm-evaluation-harness tasks on the stack's model."""

    name = "lm-eval"
    kind = "accuracy"
    Params = LmEvalParams

    def run(self, prepared: Prepared, ctx: WorkloadContext) -> Measurement:
        p = self.params
        missing = lm_eval_missing()
        if missing:
            return Measurement(tuple(_null(t, missing) for t in p.tasks))

        import lm_eval
        from lm_eval.models.huggingface import HFLM

        from harness.models import hub_reachable

        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        with keep_weights(prepared.model):
            lm = HFLM(pretrained=prepared.model, tokenizer=ctx.tokenizer, batch_size=p.batch_size)
        manager = _task_manager(p.include_path)
        offline = not hub_reachable()
        version = getattr(lm_eval, "__version__", "?")
        values = []
        for task in p.tasks:
            key, metric = TASKS[task]
            try:
                with offline_datasets(offline):
                    out = lm_eval.simple_evaluate(
                        model=lm,
                        tasks=[task],
                        num_fewshot=p.num_fewshot,
                        limit=p.limit,
                        bootstrap_iters=0,
                        log_samples=True,
                        task_manager=manager,
                    )
            except Exception as exc:  # datasets and lm-eval raise many types; keep the reason
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                values.append(_null(task, f"lm-eval task {task!r} did not run: {reason}"))
                continue
            result = (out or {}).get("results", {}).get(task, {})
            if key not in result:
                got = ", ".join(k for k in result if k != "alias") or "nothing"
                values.append(_null(task, f"lm-eval task {task!r} gave no {key!r} (got {got})"))
                continue
            n = (out or {}).get("n-samples", {}).get(task, {}).get("effective", 1)
            source = f"lm-eval {version}" + (f", limit {p.limit}" if p.limit else "")
            outcomes = doc_outcomes(out, task, key)
            values.append(
                Value(
                    metric.name,
                    float(result[key]),
                    metric.unit,
                    n=n,
                    source=source,
                    samples=outcomes,
                )
            )
        return Measurement(tuple(values))


def doc_outcomes(out: Any, task: str, key: str) -> tuple[float, ...]:
    """Each document's outcome of the metric ``key`` (``acc_norm,none``), by ``doc_id``.

    From lm-eval's logged samples (``log_samples=True``): the per-document value of the
    metric under its filter, when every one is 1/0 (multiple choice, exact match); empty
    for metrics that are not right/wrong per document (word perplexity).
    """
    metric, _, filter_name = key.partition(",")
    rows = (out or {}).get("samples", {}).get(task, [])
    picked = sorted(
        (r for r in rows if r.get("filter", "none") == filter_name and metric in r),
        key=lambda r: int(r.get("doc_id", 0)),
    )
    values = [r[metric] for r in picked]
    if not values or not all(isinstance(v, (int, float)) and v in (0, 1) for v in values):
        return ()
    return tuple(float(v) for v in values)


@hookimpl
def register_workloads() -> list[type[Workload]]:
    return [LmEval]


#: Tasks whose documents are right or wrong one by one: their flips are reported.
OUTCOME_TASKS = tuple(task for task, (_, metric) in TASKS.items() if metric.unit == "fraction")


@hookimpl
def register_metrics() -> list[MetricDef]:
    metrics = [metric for _, metric in TASKS.values()]
    return metrics + [m for t in OUTCOME_TASKS for m in flip_metrics(TASKS[t][1])]


@hookimpl
def environment_info() -> dict[str, str]:
    """Versions of lm-evaluation-harness, stored with every run."""
    return package_versions("lm-eval")
