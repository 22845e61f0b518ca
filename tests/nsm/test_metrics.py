"""The metric registry: one direction per metric, the task's per-epoch metrics, one-line errors."""

from __future__ import annotations

import pytest

import nsm
from nsm import ConfigError
from nsm import metrics
from nsm.domains import DOMAIN_TASKS, DOMAINS, GRAIL_SPLITS, SYNTHETIC, canonical_domain, resolve_domains, task_of


def test_metric_names_are_the_graph_classification_epoch_metrics():
    assert nsm.METRIC_NAMES is metrics.TASKS[metrics.GRAPH_CLASSIFICATION].epoch_metrics
    assert set(nsm.METRIC_NAMES) <= set(metrics.METRICS)
    assert all(task_of(domain).epoch_metrics == nsm.METRIC_NAMES for domain in SYNTHETIC)
    assert set(DOMAIN_TASKS) == set(DOMAINS) and set(DOMAIN_TASKS.values()) <= set(metrics.TASKS)


def test_grail_splits_are_link_prediction_domains_ranked_on_val_mrr():
    for split in GRAIL_SPLITS:
        for spelling in (split, split.lower(), split.upper()):
            task = task_of(spelling)
            assert task.name == metrics.LINK_PREDICTION and task.default_metric == "val_mrr"
    assert {"val_auc_pr", "val_hits_at_10", "val_mrr", "val_task_loss"} <= set(task.epoch_metrics)
    assert {"test_auc_pr", "test_hits_at_10", "test_mrr"} <= set(task.test_metrics)
    assert "val_mrr" in metrics.ranking_metrics(metrics.LINK_PREDICTION)
    assert "val_mrr" not in metrics.ranking_metrics(metrics.GRAPH_CLASSIFICATION)


def test_domain_names_and_groups():
    assert resolve_domains("all") == SYNTHETIC == ("planning", "causal", "kg")
    assert resolve_domains("GRAIL") == GRAIL_SPLITS and len(GRAIL_SPLITS) == 12
    assert resolve_domains("Nell_V2") == ("nell_v2",) and canonical_domain("wn18rr_v3") == "WN18RR_v3"
    from nsm.data import grail

    assert grail.SPLITS == GRAIL_SPLITS
    with pytest.raises(ConfigError, match="unknown domain 'wn18rr_v9'.*WN18RR_v1.*grail"):
        resolve_domains("wn18rr_v9")


@pytest.mark.parametrize(
    ("name", "direction"),
    [("val_acc", "max"), ("val_loss", "min"), ("val_task_loss", "min"), ("train_acc", "max"), ("gpu_mem_mb", "min"),
     ("graphs_per_s", "max"), ("epoch_time_s", "min"), ("val_auc_pr", "max"), ("val_hits_at_10", "max"),
     ("val_mrr", "max"), ("test_mrr", "max"), ("test_acc", "max"), ("test_loss", "min")],
)
def test_directions(name, direction):
    assert metrics.mode(name) == direction


def test_every_task_metric_and_tie_break_is_registered():
    for task in metrics.TASKS.values():
        for name in (*task.epoch_metrics, *task.test_metrics, task.default_metric):
            assert name in metrics.METRICS, name
    for metric in metrics.METRICS.values():
        assert metric.description and metric.format
        if metric.rankable:
            assert metrics.METRICS[metric.tie_break].rankable, metric.name
    assert metrics.tie_break("val_acc") == ("val_task_loss", "min")
    assert metrics.tie_break("val_loss") == ("val_acc", "max")


def test_bookkeeping_metrics_cannot_be_ranked_on():
    for name in ("epoch", "lr"):
        with pytest.raises(ConfigError, match="bookkeeping"):
            metrics.mode(name)
        assert name not in metrics.ranking_metrics()
    with pytest.raises(ConfigError, match="must be one of nsm's ranking metrics") as error:
        metrics.ranking_metric("epoch")
    assert "\n" not in str(error.value)


def test_ranking_metrics_are_those_a_task_reports_every_epoch():
    graph = metrics.ranking_metrics(metrics.GRAPH_CLASSIFICATION)
    assert "val_acc" in graph and "gpu_mem_mb" in graph and "test_acc" not in graph
    # Registered for link prediction, but not reported by graph classification.
    with pytest.raises(ConfigError, match="got 'val_mrr'"):
        metrics.ranking_metric("val_mrr", metrics.GRAPH_CLASSIFICATION)
    with pytest.raises(ConfigError, match="unknown metric 'accuracy'"):
        metrics.get("accuracy")


def test_display_formats():
    assert metrics.format_value("val_acc", 0.93456) == "0.9346"
    assert metrics.format_value("graphs_per_s", 1234.6) == "1235"
    assert metrics.format_value("epoch", 3.0) == "3"
    assert metrics.format_value("val_loss", float("nan")) == "nan"
    assert metrics.format_value("lr", 1e-4) == "1.00e-04"
