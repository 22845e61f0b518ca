"""The printed report: the searched keys as columns, metric formats from the registry, unranked rows unnumbered."""

from __future__ import annotations

import math

from search.report import format_cross_domain, format_report


def summary(**overrides):
    rows = [
        {"trial_id": "a", "lr": 3e-3, "dropout": 0.3, "val_loss": 0.21234, "epochs": 4, "status": "completed"},
        {"trial_id": "b", "lr": 1e-4, "dropout": 0.0, "val_loss": 0.5, "epochs": 2, "status": "pruned"},
        {"trial_id": "c", "lr": 1e-2, "dropout": 0.1, "val_loss": 0.1, "epochs": 1, "status": "unfinished"},
        {"trial_id": "d", "lr": 1e-2, "dropout": 0.1, "val_loss": math.nan, "epochs": 1, "status": "diverged"},
    ]
    return {"experiment": "exp", "experiment_dir": "/r/exp", "domain": "planning", "metric": "val_loss", "mode": "min",
            "searcher": "tpe", "scheduler": "asha", "searched_keys": ["lr", "dropout"], "num_trials": 4,
            "best": rows[0], "baseline": rows[1], "gain_over_baseline": rows[0]["val_loss"] - rows[1]["val_loss"],
            "trials": rows, "best_checkpoint": "/r/exp/trial_a/checkpoint.pt", **overrides}


def test_report_shows_the_searched_keys_and_numbers_only_ranked_rows():
    lines = format_report(summary()).splitlines()
    assert lines[0].endswith("ranked by val_loss (min)")
    assert lines[1].split() == ["rank", "trial", "lr", "dropout", "best", "val_loss", "epochs", "status"]
    assert lines[2].split() == ["1", "a", "3.00e-03", "0.3000", "0.2123", "4", "completed"]
    assert lines[3].split()[0] == "2" and lines[4].split()[0] == "-" and lines[5].split()[:2] == ["-", "d"]
    assert "best: val_loss 0.2123 (-0.2877 over the baseline) with lr=3.00e-03, dropout=0.3000 (trial a)" in lines
    assert any(line.split()[:3] == ["base", "b", "1.00e-04"] and line.split()[3] == "0" for line in lines)


def test_cross_domain_summary_has_a_column_per_searched_key_of_any_domain():
    first = summary()
    second = summary(domain="kg", searched_keys=["lr", "hidden_dim"],
                     best={**first["best"], "hidden_dim": 32}, experiment_dir="/r/exp-kg")
    lines = format_cross_domain([first, second]).splitlines()
    assert lines[1].split() == ["domain", "best", "baseline", "gain", "lr", "dropout", "hidden_dim", "experiment"]
    assert lines[2].split()[:7] == ["planning", "0.2123", "0.5000", "-0.2877", "3.00e-03", "0.3000", "-"]
    assert lines[3].split()[6] == "32"
