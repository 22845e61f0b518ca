"""PruneAwareOptunaSearch tells Optuna the truth about each trial, and survives save/restore."""

from __future__ import annotations

import math

import pytest
from optuna.trial import TrialState
from ray import tune

from search.outcome import STATUS_KEY
from search.study import STUDY_FILE, PruneAwareOptunaSearch, load_study, make_sampler

MAX_EPOCHS = 3
SPACE = {
    "domain": "planning",
    "lr": tune.loguniform(1e-5, 1e-2),
    "cycle_weight": tune.loguniform(1e-3, 0.3),
    "batch_size": tune.choice([16, 32, 64, 128]),
}
BASELINE = {"lr": 1e-4, "cycle_weight": 0.01, "batch_size": 64}


def make_searcher(experiment_dir, points=(BASELINE,)) -> PruneAwareOptunaSearch:
    searcher = PruneAwareOptunaSearch(
        journal_path=experiment_dir / STUDY_FILE,
        study_name=experiment_dir.name,
        max_epochs=MAX_EPOCHS,
        sampler=make_sampler("tpe", seed=0, num_samples=8),
        points_to_evaluate=list(points),
    )
    searcher.set_search_properties("val_acc", "max", SPACE)
    return searcher


def result(epoch: int, val_acc: float, status: str = "running") -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "val_acc": val_acc, STATUS_KEY: status}


def run(searcher, trial_id: str, values: list[float], *, status: str = "running", error: bool = False, stopped=False):
    searcher.suggest(trial_id)
    for epoch, value in enumerate(values, start=1):
        last = epoch == len(values)
        if last and stopped:
            break  # Ray does not call on_trial_result for the result the scheduler stops on
        searcher.on_trial_result(trial_id, result(epoch, value))
    final = result(len(values), values[-1], status) if values else None
    searcher.on_trial_complete(trial_id, result=final, error=error)


@pytest.fixture
def experiment_dir(tmp_path):
    path = tmp_path / "exp-1"
    path.mkdir()
    return path


def test_states_told_to_optuna(experiment_dir):
    searcher = make_searcher(experiment_dir)
    run(searcher, "full", [0.5, 0.8, 0.7])  # best epoch is not the last
    run(searcher, "asha", [0.4, 0.45], stopped=True)
    run(searcher, "nan", [0.5, math.nan], status="diverged")
    run(searcher, "oom", [math.nan], status="infeasible")
    run(searcher, "crash", [0.5], error=True)

    study = load_study(experiment_dir)
    by_ray_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert by_ray_id["full"].state == TrialState.COMPLETE
    assert by_ray_id["full"].value == pytest.approx(0.8)  # the best epoch: what the report ranks on
    assert by_ray_id["full"].intermediate_values == {1: 0.5, 2: 0.8, 3: 0.7}
    assert by_ray_id["full"].params == BASELINE  # the research default is asked first

    pruned = by_ray_id["asha"]
    assert pruned.state == TrialState.PRUNED
    # Both epochs reach the study, including the one Ray only passes to on_trial_complete.
    assert pruned.intermediate_values == {1: 0.4, 2: 0.45}
    assert pruned.user_attrs["outcome"] == "pruned"

    for name, outcome in (("nan", "diverged"), ("oom", "infeasible"), ("crash", "error")):
        assert by_ray_id[name].state == TrialState.FAIL
        assert by_ray_id[name].user_attrs["outcome"] == outcome


def test_restore_reopens_the_journal_and_fails_orphans(experiment_dir, tmp_path):
    searcher = make_searcher(experiment_dir)
    run(searcher, "done", [0.5, 0.6, 0.7])
    searcher.suggest("running")
    searcher.on_trial_result("running", result(1, 0.55))
    checkpoint = tmp_path / "searcher.pkl"
    searcher.save(str(checkpoint))
    searcher.suggest("asked-after-snapshot")  # lost when the driver dies before the next snapshot

    # A restored Tuner builds a fresh searcher from tuner.pkl, sets it up, then restores its state.
    restored = make_searcher(experiment_dir)
    restored.restore(str(checkpoint))
    restored.on_trial_result("running", result(2, 0.65))
    restored.on_trial_result("running", result(3, 0.6))
    restored.on_trial_complete("running", result=result(3, 0.6))

    study = load_study(experiment_dir)
    states = {t.user_attrs["ray_trial_id"]: t.state for t in study.trials}
    assert states == {"done": TrialState.COMPLETE, "running": TrialState.COMPLETE, "asked-after-snapshot": TrialState.FAIL}
    # The set-up of the restored searcher did not enqueue the baseline a second time.
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert study.trials[1].value == pytest.approx(0.65)


def test_a_trial_told_after_the_snapshot_is_not_told_again_on_restore(experiment_dir, tmp_path):
    """SIGKILL after the study recorded a trial's end but before Ray's snapshot did: Ray resumes the
    trial and re-runs its last epochs; the study keeps the trial as it was told, and nothing raises."""
    searcher = make_searcher(experiment_dir)
    searcher.suggest("late")
    searcher.on_trial_result("late", result(1, 0.5))
    checkpoint = tmp_path / "searcher.pkl"
    searcher.save(str(checkpoint))
    searcher.on_trial_result("late", result(2, 0.6))
    searcher.on_trial_result("late", result(3, 0.7))
    searcher.on_trial_complete("late", result=result(3, 0.7))

    restored = make_searcher(experiment_dir)
    restored.restore(str(checkpoint))
    restored.on_trial_result("late", result(2, 0.6))  # the re-run
    restored.on_trial_result("late", result(3, 0.7))
    restored.on_trial_complete("late", result=result(3, 0.7))

    (trial,) = [t for t in load_study(experiment_dir).trials if t.user_attrs["ray_trial_id"] == "late"]
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.7)
    assert trial.intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7}
