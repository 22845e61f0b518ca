"""The metric registry: every metric's name, direction, display format and meaning, in one place.

nsm reports the metrics of its task every epoch (``TASKS[task].epoch_metrics``; for graph
classification these are ``nsm.METRIC_NAMES``) and the ``test_*`` metrics once, at the end of a run.
Everything that ranks, prunes, tie-breaks, formats or summarises a metric reads it from here: the
search driver (``--metric``, its mode), ASHA and Optuna (through the mode), the search report, the
analysis tools, the W&B summaries and the benches.

A metric's direction is ``"max"`` or ``"min"``, or None for bookkeeping values (``epoch``, ``lr``)
that are never ranked on. Its ``tie_break`` names the metric that orders trials tied on it (see
:func:`search.ranking.rank_trials`): the lower ``val_task_loss`` for accuracy and ranking metrics
(the task loss, not the total loss, whose cycle term grows with cycle_weight), the higher ``val_acc``
for losses and costs.

Link prediction (GraIL's splits) ranks on ``val_mrr`` by default, not ``val_hits_at_10``: the
validation lists are 200 (100 queries x head/tail), so Hits@10 moves in steps of 0.005 and saturates
near the top of the range on most splits (the PPR shortcut alone reaches 0.8-0.97 on the test lists),
which gives ASHA and TPE many ties to break and little gradient; MRR uses the whole rank, separates
configs that Hits@10 ties, and rewards the same thing (true triples ranked high). Hits@10 is still
reported every epoch and at test time, where the published numbers are compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nsm.errors import ConfigError

MAX, MIN = "max", "min"


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str | None  # "max", "min", or None: bookkeeping, never ranked on
    format: str  # format spec of one value, e.g. ".4f"
    description: str
    tie_break: str | None = None  # the metric that orders trials tied on this one

    @property
    def rankable(self) -> bool:
        return self.direction is not None

    def format_value(self, value: Any) -> str:
        """``value`` in this metric's format; ``nan`` for a missing or non-finite value."""
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "nan"
        try:
            return format(int(value) if self.format == "d" else float(value), self.format)
        except (TypeError, ValueError):
            return str(value)


_SCORE_TIE = "val_task_loss"  # for accuracies and ranking metrics
_COST_TIE = "val_acc"  # for losses, times and memory


def _score(name: str, description: str) -> Metric:
    return Metric(name, MAX, ".4f", description, _SCORE_TIE)


def _loss(name: str, description: str) -> Metric:
    return Metric(name, MIN, ".4f", description, _COST_TIE)


_ALL = (
    Metric("epoch", None, "d", "epochs completed, counted from 1"),
    _loss("train_loss", "training loss of the epoch: task loss + cycle_weight x cycle loss"),
    _loss("train_task_loss", "training task loss (cross-entropy) of the epoch"),
    _loss("train_cycle_loss", "training cycle-consistency loss of the epoch (mean squared error per node)"),
    _score("train_acc", "training accuracy of the epoch"),
    _loss("val_loss", "validation loss: task loss + cycle_weight x cycle loss"),
    _loss("val_task_loss", "validation task loss (cross-entropy)"),
    _loss("val_cycle_loss", "validation cycle-consistency loss (mean squared error per node)"),
    _score("val_acc", "validation accuracy"),
    _score("val_acc_class0", "validation accuracy on class 0 graphs"),
    _score("val_acc_class1", "validation accuracy on class 1 graphs"),
    _score("val_auc_pr", "validation area under the precision-recall curve of link scores"),
    _score("val_hits_at_10", "validation share of true links ranked in the top 10 of their candidates"),
    _score("val_mrr", "validation mean reciprocal rank of true links among their candidates"),
    Metric("lr", None, ".2e", "learning rate used during the epoch"),
    Metric("epoch_time_s", MIN, ".2f", "wall time of the epoch, training and evaluation", _COST_TIE),
    Metric("graphs_per_s", MAX, ".0f", "training throughput of the epoch", _COST_TIE),
    Metric("gpu_mem_mb", MIN, ".0f", "peak GPU memory allocated during the epoch (0 on CPU)", _COST_TIE),
    _loss("test_loss", "test loss of the best weights: task loss + cycle_weight x cycle loss"),
    _loss("test_task_loss", "test task loss of the best weights"),
    _loss("test_cycle_loss", "test cycle-consistency loss of the best weights"),
    _score("test_acc", "test accuracy of the best weights"),
    _score("test_acc_class0", "test accuracy of the best weights on class 0 graphs"),
    _score("test_acc_class1", "test accuracy of the best weights on class 1 graphs"),
    _score("test_auc_pr", "test area under the precision-recall curve of the best weights"),
    _score("test_hits_at_10", "test Hits@10 of the best weights"),
    _score("test_mrr", "test mean reciprocal rank of the best weights"),
)

METRICS: dict[str, Metric] = {metric.name: metric for metric in _ALL}
"""Every metric nsm reports, by name."""


@dataclass(frozen=True)
class Task:
    """What a kind of domain reports: its per-epoch metrics (in report order), its final test metrics,
    and the metric a search ranks on by default."""

    name: str
    epoch_metrics: tuple[str, ...]
    test_metrics: tuple[str, ...]
    default_metric: str


GRAPH_CLASSIFICATION = "graph_classification"
LINK_PREDICTION = "link_prediction"

TASKS: dict[str, Task] = {
    GRAPH_CLASSIFICATION: Task(
        name=GRAPH_CLASSIFICATION,
        epoch_metrics=(
            "epoch", "train_loss", "train_task_loss", "train_cycle_loss", "train_acc", "val_loss", "val_task_loss",
            "val_cycle_loss", "val_acc", "val_acc_class0", "val_acc_class1", "lr", "epoch_time_s", "graphs_per_s",
            "gpu_mem_mb",
        ),
        test_metrics=("test_loss", "test_task_loss", "test_cycle_loss", "test_acc", "test_acc_class0", "test_acc_class1"),
        default_metric="val_acc",
    ),
    # GraIL's task: each target triple's enclosing subgraph classified true vs corrupted (val_acc,
    # val_task_loss: on the validation AUC pairs), and ranked among its candidates (val_mrr, val_hits_at_10).
    LINK_PREDICTION: Task(
        name=LINK_PREDICTION,
        epoch_metrics=(
            "epoch", "train_loss", "train_task_loss", "train_cycle_loss", "train_acc", "val_loss", "val_task_loss",
            "val_cycle_loss", "val_acc", "val_auc_pr", "val_hits_at_10", "val_mrr", "lr", "epoch_time_s",
            "graphs_per_s", "gpu_mem_mb",
        ),
        test_metrics=("test_loss", "test_task_loss", "test_cycle_loss", "test_acc", "test_auc_pr", "test_hits_at_10",
                      "test_mrr"),
        default_metric="val_mrr",
    ),
}

METRIC_NAMES: tuple[str, ...] = TASKS[GRAPH_CLASSIFICATION].epoch_metrics
"""The metrics a graph-classification run reports every epoch, in order (``nsm.METRIC_NAMES``)."""


def get(name: str) -> Metric:
    """The registered metric ``name``; ConfigError naming the known ones otherwise."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
    return METRICS[name]


def epoch_metrics(task: str | None = None) -> tuple[str, ...]:
    """Metrics reported every epoch by ``task``, or by any task, in report order."""
    tasks = [TASKS[task]] if task is not None else list(TASKS.values())
    return tuple(dict.fromkeys(name for entry in tasks for name in entry.epoch_metrics))


def ranking_metrics(task: str | None = None) -> tuple[str, ...]:
    """Metrics a search can rank and prune on: those reported every epoch (by ``task``, or by any
    task) that have a direction."""
    return tuple(name for name in epoch_metrics(task) if METRICS[name].rankable)


def ranking_metric(name: str, task: str | None = None) -> Metric:
    """The metric ``name`` if trials can be ranked on it; ConfigError (one line) otherwise."""
    allowed = ranking_metrics(task)
    if name not in allowed:
        raise ConfigError(f"must be one of nsm's ranking metrics ({', '.join(allowed)}), got {name!r}")
    return METRICS[name]


def mode(name: str) -> str:
    """``"max"`` or ``"min"``: how ``name`` is optimised."""
    metric = get(name)
    if metric.direction is None:
        raise ConfigError(f"metric {name!r} is bookkeeping and has no direction to optimise")
    return metric.direction


def tie_break(name: str) -> tuple[str, str] | None:
    """(metric, mode) that orders trials tied on ``name``, or None."""
    secondary = get(name).tie_break
    return (secondary, mode(secondary)) if secondary is not None else None


def is_better(value: float, than: float, mode: str) -> bool:
    """Whether ``value`` beats ``than`` in ``mode`` ("max" or "min")."""
    return value > than if mode == MAX else value < than


def format_value(name: str, value: Any) -> str:
    """``value`` in the registered format of ``name`` (``.4g`` for an unregistered name)."""
    metric = METRICS.get(name)
    if metric is None:
        return "nan" if value is None else (format(value, ".4g") if isinstance(value, (int, float)) else str(value))
    return metric.format_value(value)
