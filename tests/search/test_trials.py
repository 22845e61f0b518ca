"""The one ranking rule (search.trials.rank_trials) that the search report and analysis share."""

from __future__ import annotations

import math

import pandas as pd

from search.trials import epoch_history, rank_trials, score_trial, varied_keys


def history(*rows: dict) -> pd.DataFrame:
    return epoch_history(pd.DataFrame([{"epoch": epoch, **row} for epoch, row in enumerate(rows, start=1)]))


def ranked_ids(scores, metric="val_acc", mode="max"):
    ranked, unranked = rank_trials(scores, metric, mode)
    return [s.trial_id for s in ranked], [s.trial_id for s in unranked]


def test_ties_at_the_best_accuracy_go_to_the_lower_task_loss_then_the_earlier_epoch():
    scores = [
        score_trial("a", history({"val_acc": 1.0, "val_task_loss": 0.30}, {"val_acc": 1.0, "val_task_loss": 0.20}), "val_acc", "max", "TERMINATED"),
        score_trial("b", history({"val_acc": 0.9, "val_task_loss": 0.05}), "val_acc", "max", "TERMINATED"),
        score_trial("c", history({"val_acc": 1.0, "val_task_loss": 0.10}), "val_acc", "max", "TERMINATED"),
        # Same score and task loss as d, but it reached val_acc 1.0 one epoch later.
        score_trial("e", history({"val_acc": 0.5, "val_task_loss": 0.4}, {"val_acc": 1.0, "val_task_loss": 0.05}), "val_acc", "max", "TERMINATED"),
        score_trial("d", history({"val_acc": 1.0, "val_task_loss": 0.05}), "val_acc", "max", "TERMINATED"),
    ]
    assert ranked_ids(scores) == (["d", "e", "c", "a", "b"], [])
    assert scores[0].tie_break == 0.20 and scores[0].best_epoch == 1 and scores[0].epochs == 2


def test_a_loss_is_minimised_and_its_ties_go_to_the_higher_accuracy():
    scores = [
        score_trial("a", history({"val_loss": 0.5, "val_acc": 0.7}), "val_loss", "min", "TERMINATED"),
        score_trial("b", history({"val_loss": 0.2, "val_acc": 0.8}), "val_loss", "min", "TERMINATED"),
        score_trial("c", history({"val_loss": 0.2, "val_acc": 0.9}), "val_loss", "min", "TERMINATED"),
    ]
    assert ranked_ids(scores, "val_loss", "min") == (["c", "b", "a"], [])


def test_unfinished_and_scoreless_trials_are_never_ranked():
    scores = [
        score_trial("running", history({"val_acc": 0.99}), "val_acc", "max", "RUNNING"),
        score_trial("pending", history(), "val_acc", "max", "PENDING"),
        score_trial("diverged", history({"val_acc": math.nan}), "val_acc", "max", "TERMINATED"),
        score_trial("crashed", history({"val_acc": 0.6}), "val_acc", "max", "ERROR"),
        score_trial("done", history({"val_acc": 0.8}), "val_acc", "max", "TERMINATED"),
    ]
    assert ranked_ids(scores) == (["done", "crashed"], ["running", "pending", "diverged"])


def test_a_restored_trial_keeps_the_later_report_of_a_repeated_epoch():
    frame = pd.DataFrame([{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.9}, {"epoch": 2, "val_acc": 0.7}])
    assert epoch_history(frame)["val_acc"].tolist() == [0.5, 0.7]


def test_varied_keys_are_the_keys_that_differ_between_trials():
    configs = [{"domain": "kg", "lr": 0.1, "dropout": 0.1, "hidden_dim": 16},
               {"domain": "kg", "lr": 0.2, "dropout": 0.3, "hidden_dim": 16}]
    assert varied_keys(configs) == ["lr", "dropout"]
