"""Each --searcher with ASHA, end to end on a tiny space: stopped, resumed, every trial told to Optuna as it ended.

(ASHA + tpe is covered by tests/search/test_search.py, no scheduler + tpe by test_exactly_once.py.)
"""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState

from analysis.audit import audit_experiment
from search.run import main
from search.study import load_study

SAMPLES, EPOCHS = 5, 3
STUDY_STATE = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}


@pytest.mark.parametrize("searcher", ["tpe-mv", "random"])
def test_searcher_with_asha_stops_resumes_and_tells_optuna_each_outcome(searcher, tmp_path, tiny_space, ray_session):
    storage, name = tmp_path / "results", f"choice-{searcher}"
    args = ["--domain", "planning", "--space", str(tiny_space), "--num-samples", str(SAMPLES),
            "--max-epochs", str(EPOCHS), "--scheduler", "asha", "--searcher", searcher, "--metric", "val_loss",
            "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--max-concurrent", "2", "--wandb", "disabled",
            "--storage-path", str(storage), "--name", name, "--seed", "0"]
    # A time budget of 1 s stops the search the way Ctrl-C does, at its first step: a deterministic interruption.
    assert main([*args, "--time-budget-s", "1"]) == 0
    stopped = json.loads((storage / name / "summary.json").read_text())
    assert any(row["status"] in ("not_started", "unfinished") for row in stopped["trials"])

    assert main(["--resume", name, "--storage-path", str(storage), "--time-budget-s", "600"]) == 0
    experiment_dir = storage / name
    assert json.loads((experiment_dir / "search.json").read_text())["searcher"] == searcher  # kept on resume
    summary = json.loads((experiment_dir / "summary.json").read_text())
    assert summary["num_trials"] == SAMPLES
    audit = audit_experiment(experiment_dir)
    assert audit.ok and audit.trials == SAMPLES, audit.lines()

    by_ray_id = {t.user_attrs.get("ray_trial_id"): t for t in load_study(experiment_dir).trials}
    for row in summary["trials"]:
        assert row["status"] in STUDY_STATE, row
        trial = by_ray_id[row["trial_id"]]
        assert trial.state == STUDY_STATE[row["status"]], (row, trial.state)
        # ASHA's stop leaves the trial short of max epochs, and the study holds exactly the epochs it ran.
        assert (row["epochs"] < EPOCHS) == (row["status"] == "pruned"), row
        assert sorted(trial.intermediate_values) == list(range(1, row["epochs"] + 1))
