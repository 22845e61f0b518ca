"""best.py on a real experiment: the ranking and the exported files agree with Ray's own ResultGrid."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
import yaml
from ray.tune import ExperimentAnalysis, ResultGrid

from analysis import best
from analysis.experiment import open_experiment
from nsm import METRIC_NAMES
from nsm.train import TrainConfig, load_checkpoint, load_config_file


@pytest.fixture(scope="module")
def grid(experiment) -> ResultGrid:
    return ResultGrid(ExperimentAnalysis(str(experiment)))


def _history(result) -> pd.DataFrame:
    return result.metrics_dataframe.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def test_best_trial_and_value_agree_with_the_result_grid(exported, grid):
    reference = grid.get_best_result(metric="val_acc", mode="max", scope="all")
    history = _history(reference)
    results = json.loads((exported / "final_results.json").read_text())
    assert results["source"]["trial_id"] == reference.metrics["trial_id"]
    assert results["source"]["value"] == pytest.approx(history["val_acc"].max())
    # The best epoch is the first epoch with the best val_acc, not the last epoch.
    best_epoch = int(history.loc[history["val_acc"].idxmax(), "epoch"])
    assert results["best_epoch"] == best_epoch
    assert results["best_metrics"]["val_acc"] == pytest.approx(history["val_acc"].max())


def test_best_model_holds_the_weights_of_the_best_epoch(exported, grid):
    reference = grid.get_best_result(metric="val_acc", mode="max", scope="all")
    exported_checkpoint = load_checkpoint(exported / "best_model.pt")
    best_epoch = json.loads((exported / "final_results.json").read_text())["best_epoch"]
    assert exported_checkpoint["epoch"] == best_epoch
    kept = {int(metrics["epoch"]): checkpoint for checkpoint, metrics in reference.best_checkpoints}
    if best_epoch in kept:
        with kept[best_epoch].as_directory() as directory:
            ray_checkpoint = load_checkpoint(f"{directory}/checkpoint.pt")
        expected = ray_checkpoint["model"]
    else:  # Ray dropped it; nsm keeps the best weights in every later checkpoint
        with reference.checkpoint.as_directory() as directory:
            expected = load_checkpoint(f"{directory}/checkpoint.pt")["best_model"]
    for name, tensor in expected.items():
        assert torch.equal(exported_checkpoint["model"][name], tensor), name


def test_exported_files_use_the_nsm_formats(exported, grid):
    for name in best.BEST_FILES:
        assert (exported / name).is_file(), name
    config = load_config_file(exported / "best_config.yaml")
    assert load_config_file(exported / "best_config.json") == config
    assert set(yaml.safe_load((exported / "best_config.yaml").read_text())) == set(TrainConfig().to_dict())
    history = json.loads((exported / "training_history.json").read_text())
    results = json.loads((exported / "final_results.json").read_text())
    reference = _history(grid.get_best_result(metric="val_acc", mode="max", scope="all"))
    assert [row["epoch"] for row in history] == reference["epoch"].tolist()
    assert all(set(row) == set(METRIC_NAMES) for row in history)
    assert [row["val_acc"] for row in history] == pytest.approx(reference["val_acc"].tolist())
    for key in ("status", "config", "best_epoch", "best_metrics", "final_metrics", "test_metrics", "epochs_run",
                "wall_time_s", "num_parameters"):
        assert key in results, key
    assert set(results["test_metrics"]) == {"test_loss", "test_task_loss", "test_cycle_loss", "test_acc",
                                            "test_acc_class0", "test_acc_class1"}
    assert 0.0 <= results["test_metrics"]["test_acc"] <= 1.0
    assert results["epochs_run"] == len(history)
    # The exported config is the trial's own config (device left to the machine that runs it).
    trial_config = dict(load_checkpoint(exported / "best_model.pt")["config"])
    assert {**trial_config, "device": "auto"} == config.to_dict()


def test_ranking_matches_the_grid_dataframe(experiment, grid):
    frame = grid.get_dataframe(filter_metric="val_acc", filter_mode="max")
    ranked = best.ranked_trials(open_experiment(experiment))
    assert set(ranked["trial_id"]) == set(frame["trial_id"])
    by_id = frame.set_index("trial_id")["val_acc"]
    assert ranked["val_acc"].tolist() == pytest.approx([by_id[t] for t in ranked["trial_id"]])
    assert ranked["val_acc"].is_monotonic_decreasing
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))


def test_cli_prints_the_ranked_trials(experiment, exported, capsys):
    assert best.main([str(experiment), "--top", "2"]) == 0
    out = capsys.readouterr().out
    trial_id = json.loads((exported / "final_results.json").read_text())["source"]["trial_id"]
    assert f"best: trial {trial_id}" in out
    assert "note:" not in out  # the experiment is complete
    table = out.split("ranked by val_acc (max)\n")[1].split("best:")[0].strip().splitlines()
    assert len(table) == 1 + 2  # header + top 2


def test_still_running_experiment_uses_finished_trials_and_says_so(experiment_copy, capsys):
    from tests.analysis.conftest import set_trial_status

    grid = ResultGrid(ExperimentAnalysis(str(experiment_copy)))
    best_id = grid.get_best_result(metric="val_acc", mode="max", scope="all").metrics["trial_id"]
    set_trial_status(experiment_copy, "PENDING", {best_id})
    assert best.main([str(experiment_copy)]) == 0
    out = capsys.readouterr().out
    assert "note: experiment" in out and "still running" in out and "2 of 3" in out
    results = json.loads((experiment_copy / "best" / "final_results.json").read_text())
    assert results["source"]["trial_id"] != best_id
    assert results["source"]["experiment_complete"] is False
    assert math.isfinite(results["source"]["value"])
