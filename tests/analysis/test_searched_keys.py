"""Searched keys come from the space, metrics from the registry, and one ranking serves search and analysis.

One real search over ``dropout`` (a choice) besides the usual three keys, ranked on ``val_loss``.
"""

from __future__ import annotations

import json
import math

import pytest
from ray.tune import ExperimentAnalysis, ResultGrid

from analysis import best, compare, evaluate, importance
from nsm.config import load_config_file
from search.report import format_report
from tests.analysis.conftest import SMALL_SPACE, run_search

SEARCHED = ["lr", "cycle_weight", "batch_size", "dropout"]


@pytest.fixture(scope="module")
def dropout_experiment(tmp_path_factory):
    space = tmp_path_factory.mktemp("space") / "dropout.yaml"
    space.write_text(SMALL_SPACE + "  dropout: {type: choice, values: [0.0, 0.1, 0.3]}\n")
    return run_search(tmp_path_factory.mktemp("results"), "dropout", space, "--metric", "val_loss", num_samples=4)


@pytest.fixture(scope="module")
def summary(dropout_experiment):
    return json.loads((dropout_experiment / "summary.json").read_text())


def test_the_searched_keys_are_recorded_and_shown_in_the_summary(dropout_experiment, summary):
    assert json.loads((dropout_experiment / "search.json").read_text())["searched_keys"] == SEARCHED
    assert summary["searched_keys"] == SEARCHED
    for row in summary["trials"]:
        assert {key: row[key] for key in SEARCHED} == {key: row["config"][key] for key in SEARCHED}
    assert len({row["dropout"] for row in summary["trials"]}) > 1  # the search really varied it
    header = format_report(summary).splitlines()[1]
    assert header.split()[2:6] == SEARCHED


def test_val_loss_picks_the_lowest_loss_trial_in_the_summary(dropout_experiment, summary):
    grid = ResultGrid(ExperimentAnalysis(str(dropout_experiment)))
    lowest = {result.metrics["trial_id"]: result.metrics_dataframe["val_loss"].min() for result in grid}
    assert summary["metric"] == "val_loss" and summary["mode"] == "min"
    assert summary["best"]["val_loss"] == pytest.approx(min(lowest.values()))
    assert lowest[summary["best"]["trial_id"]] == pytest.approx(min(lowest.values()))
    ranked = [row["val_loss"] for row in summary["trials"]]
    assert ranked == sorted(ranked)


def test_best_py_picks_the_same_trial_and_shows_dropout(dropout_experiment, summary, capsys):
    assert best.main([str(dropout_experiment)]) == 0
    out = capsys.readouterr().out
    assert "ranked by val_loss (min)" in out
    table = out.split("ranked by val_loss (min)\n")[1].split("best:")[0].splitlines()
    assert "dropout" in table[0].split()
    results = json.loads((dropout_experiment / "best" / "final_results.json").read_text())
    assert results["source"]["trial_id"] == summary["best"]["trial_id"]
    assert results["source"]["mode"] == "min"
    assert results["source"]["value"] == pytest.approx(summary["best"]["val_loss"])
    # The exported config carries the best trial's sampled dropout.
    exported = load_config_file(dropout_experiment / "best" / "best_config.yaml")
    assert exported.dropout == summary["best"]["dropout"]
    assert all(getattr(exported, key) == pytest.approx(summary["best"][key]) for key in SEARCHED)


def test_importance_covers_dropout(dropout_experiment, capsys):
    assert importance.main([str(dropout_experiment)]) == 0
    out = capsys.readouterr().out
    result = json.loads((dropout_experiment / "analysis" / "importance" / "importance.json").read_text())
    assert result["params"] == SEARCHED
    assert set(result["importances"]) == set(SEARCHED)
    assert sum(result["importances"].values()) == pytest.approx(1.0)
    assert result["direction"] == "minimize"
    assert any(line.split()[0] == "dropout" for line in out.splitlines()[1:] if line.strip())


@pytest.mark.parametrize("tool", [best.main, evaluate.main, compare.main])
@pytest.mark.parametrize("metric", ["accuracy", "epoch"])
def test_an_unknown_or_bookkeeping_metric_is_one_line_exit_2(experiment, tool, metric, capsys):
    assert tool([str(experiment), "--metric", metric]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --metric must be one of nsm's ranking metrics") and err.count("\n") == 1, err
    assert f"got {metric!r}" in err


def test_trials_without_the_recorded_keys_fall_back_to_the_keys_that_vary(experiment_copy):
    from analysis.experiment import open_experiment

    settings = json.loads((experiment_copy / "search.json").read_text())
    del settings["searched_keys"]  # a search.json written before the keys were recorded
    (experiment_copy / "search.json").write_text(json.dumps(settings))
    opened = open_experiment(experiment_copy)
    assert {"lr", "cycle_weight"} <= set(opened.searched_keys) <= {"lr", "cycle_weight", "batch_size"}
    assert not math.isnan(float(best.ranked_trials(opened).iloc[0]["val_acc"]))
