"""compare.py (cross-experiment table and chart) and importance.py (fANOVA over the Optuna study)."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest
from ray.tune import ExperimentAnalysis, ResultGrid

from analysis import compare, importance
from search.study import load_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_compare_table_agrees_with_ray(experiment, experiment_copy, tmp_path, capsys):
    out = tmp_path / "compare"
    assert compare.main([str(experiment), str(experiment_copy), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "comparison.json").read_text())
    assert [row["experiment"] for row in rows] == ["exp", "exp"]
    assert (out / "comparison.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "comparison.csv").read_text().startswith("experiment,domain,best_trial")
    grid = ResultGrid(ExperimentAnalysis(str(experiment)))
    best = grid.get_best_result(metric="val_acc", mode="max", scope="all")
    seconds = [result.metrics["time_total_s"] for result in grid]
    row = rows[0]
    assert row["domain"] == "planning"
    assert row["best_trial"] == best.metrics["trial_id"]
    assert row["best_val_acc"] == pytest.approx(best.metrics_dataframe["val_acc"].max())
    assert row["trials"] == row["trials_finished"] == len(grid) == 3
    assert row["gpu_hours"] == 0.0  # CPU-only trials
    assert row["cpu_hours"] == pytest.approx(sum(seconds) * 1.0 / 3600)  # 1 CPU per trial on this machine
    assert 0 <= row["test_acc"] <= 1 and row["val_cycle_loss"] > 0
    assert row["epochs"] == 2 and row["total_epochs"] == 6
    assert rows[1]["best_val_acc"] == row["best_val_acc"]
    assert "planning" in printed and "3/3" in printed


def test_importance_sums_to_one_over_the_searched_parameters(experiment, capsys):
    assert importance.main([str(experiment)]) == 0
    capsys.readouterr()
    directory = experiment / "analysis" / "importance"
    result = json.loads((directory / "importance.json").read_text())
    study = load_study(experiment)
    searched = {name for trial in study.trials for name in trial.distributions}
    assert searched == {"lr", "cycle_weight", "batch_size"}
    assert set(result["importances"]) == searched
    assert sum(result["importances"].values()) == pytest.approx(1.0)
    assert all(value >= 0 for value in result["importances"].values())
    assert result["evaluator"] == "fanova"  # scikit-learn is installed in the dev environment
    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=sorted(searched))
    assert result["importances"] == pytest.approx(expected)
    for name in importance.PLOTS:
        assert (directory / f"{name}.png").read_bytes()[:8] == PNG_MAGIC, name


def test_importance_without_a_study_is_an_error(experiment_copy, capsys):
    (experiment_copy / "study.journal").unlink()
    assert importance.main([str(experiment_copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "study.journal" in err and err.count("\n") == 1
    assert not (experiment_copy / "study.journal").exists()  # opening did not create it
    assert not (experiment_copy / "analysis").exists()


def test_importance_needs_complete_trials(experiment_copy, tmp_path, capsys):
    # A study with a single complete trial: a clear error, not a crash.
    study = load_study(experiment_copy)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "one.journal")))
    one = optuna.create_study(study_name="exp", storage=storage, direction="maximize")
    one.add_trial(next(t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE))
    (experiment_copy / "study.journal").unlink()
    shutil.copy(tmp_path / "one.journal", experiment_copy / "study.journal")
    assert importance.main([str(experiment_copy)]) == 2
    assert "at least 2 complete trials" in capsys.readouterr().err


def test_importance_lines_align_past_a_long_key_name():
    result = {"study": "s", "complete_trials": 2, "trials": 3, "evaluator": "fanova", "requested_evaluator": "fanova",
              "importances": {"train_pathless_facts": 0.75, "lr": 0.25}}
    rows = importance.format_importance(result).splitlines()[1:]
    assert len({row.index(".") for row in rows}) == 1  # one column of values
    assert rows[0].startswith("  train_pathless_facts ")
