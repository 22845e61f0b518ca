"""The private parts of Ray, Optuna and W&B that the project relies on still exist.

Checked with ray 2.60.0, optuna 5.1.0 and wandb 0.31.0; ``pyproject.toml`` caps ray below 3 and
optuna below 6. An upgrade that removes or renames one of these fails here, naming the attribute and
the module that uses it, instead of failing inside a search.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import optuna
import pytest
import ray.air.integrations.wandb as ray_wandb
import wandb
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.search.optuna import OptunaSearch

CHECKED_WITH = {"ray": "2.60.0", "optuna": "5.1.0", "wandb": "0.31.0"}


def check_internals(owner: Any, attributes: Iterable[str], used_in: str) -> None:
    """Fail, naming every missing attribute of ``owner`` and where the project uses it."""
    missing = [name for name in attributes if not hasattr(owner, name)]
    if missing:
        label = getattr(owner, "__name__", type(owner).__name__)
        raise AssertionError(
            f"{label} lacks {', '.join(missing)} (used in {used_in}; checked with "
            f"{', '.join(f'{k} {v}' for k, v in CHECKED_WITH.items())})"
        )


def test_the_guard_fails_on_a_missing_attribute():
    class StandIn:  # an OptunaSearch of a future version that renamed one attribute
        def __init__(self):
            self._ot_study = object()
            self._ot_trials_by_id = {}

    check_internals(StandIn(), ["_ot_study"], "search/study.py")
    with pytest.raises(AssertionError, match=r"StandIn lacks _ot_trials \(used in search/study.py; checked with ray 2.60.0"):
        check_internals(StandIn(), ["_ot_study", "_ot_trials"], "search/study.py")


def test_the_installed_versions_are_within_the_caps():
    import ray

    assert int(ray.__version__.split(".")[0]) < 3
    assert int(optuna.__version__.split(".")[0]) < 6


def test_optuna_search_internals(tmp_path):
    # search/study.py (PruneAwareOptunaSearch) reads and replaces these on every result and on restore.
    searcher = OptunaSearch(space={"x": tune.uniform(0.0, 1.0)}, metric="val_acc", mode="max",
                            points_to_evaluate=[{"x": 0.5}])
    check_internals(searcher, ["_ot_trials", "_ot_study", "_completed_trials", "_points_to_evaluate", "_storage",
                               "_study_name", "_sampler", "_metric", "_mode"], "search/study.py")
    searcher.suggest("trial-1")
    trial = searcher._ot_trials["trial-1"]
    check_internals(trial, ["_trial_id"], "search/study.py (PruneAwareOptunaSearch.restore)")
    # restore() rebinds each trial to a reopened study with optuna.Trial(study, trial_id).
    assert list(inspect.signature(optuna.Trial.__init__).parameters)[1:3] == ["study", "trial_id"]
    rebound = optuna.Trial(searcher._ot_study, trial._trial_id)
    assert rebound.number == trial.number
    frozen = searcher._ot_study.get_trials(deepcopy=False)[0]
    check_internals(frozen, ["_trial_id"], "search/study.py (PruneAwareOptunaSearch.restore)")


def test_optuna_journal_internals(tmp_path):
    # search/study.py (SnapshotDurableJournalBackend) appends with Optuna's own lock, less the fsync.
    from optuna.storages.journal import _file

    check_internals(_file, ["get_lock_file"], "search/study.py")
    backend = JournalFileBackend(str(tmp_path / "study.journal"))
    check_internals(backend, ["_lock", "_file_path"], "search/study.py")
    with _file.get_lock_file(backend._lock):
        assert backend._file_path == str(tmp_path / "study.journal")


def test_ray_wandb_internals():
    # search/wandb_logging.py subclasses the callback and reuses its result cleaning.
    check_internals(ray_wandb, ["WANDB_ENV_VAR", "WANDB_PROCESS_RUN_INFO_HOOK", "_run_wandb_process_run_info_hook",
                                "_clean_log", "_is_allowed_type"], "search/wandb_logging.py")
    callback = ray_wandb.WandbLoggerCallback(project="internals", mode="offline")
    check_internals(callback, ["_exclude_results", "AUTO_CONFIG_KEYS", "excludes", "log_config", "kwargs",
                               "video_kwargs", "image_kwargs", "_upload_timeout", "project", "group"],
                    "search/wandb_logging.py (WandbRunsCallback)")
    from ray.air.util import node

    check_internals(node, ["_force_on_current_node"], "search/wandb_logging.py")


def test_tuner_run_config_internals(tmp_path):
    # search/tuner.py's restore_tuner gives a restored Tuner this run's console and verbosity.
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(storage_path=str(tmp_path), name="x"))
    check_internals(tuner, ["_local_tuner"], "search/tuner.py (restore_tuner)")
    run_config = tuner._local_tuner.get_run_config()
    assert hasattr(run_config, "callbacks") and hasattr(run_config, "verbose")


def test_wandb_settings_internals():
    # analysis/_wandb.py turns off the system-metrics sampler of the summary run.
    assert "x_disable_stats" in wandb.Settings.model_fields, "wandb.Settings lacks x_disable_stats (analysis/_wandb.py)"


def test_ray_tune_logger_and_search_generator_internals(tmp_path):
    # search/result_loggers.py truncates and reopens the files Ray's JSON and CSV loggers hold.
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search import SearchGenerator

    check_internals(JsonLoggerCallback(), ["_trial_files", "log_trial_start"], "search/result_loggers.py")
    check_internals(CSVLoggerCallback(), ["_trial_files", "_trial_csv", "_trial_continue", "_setup_trial"],
                    "search/result_loggers.py")
    # search/tuner.py (RelocatableSearchGenerator) re-points the restored experiment spec's storage.
    generator = SearchGenerator(OptunaSearch(space={"x": tune.uniform(0.0, 1.0)}, metric="m", mode="max"))
    check_internals(generator, ["_experiment", "set_state", "get_state"], "search/tuner.py")
    assert "experiment" in generator.get_state()
    # search/stopping.py reads whether a trial has a checkpoint save in flight.
    from ray.tune.experiment import Trial

    assert isinstance(inspect.getattr_static(Trial, "is_saving"), property), "Trial.is_saving (search/stopping.py)"
    # search/result_loggers.py reads a trial's results from its storage.
    from ray.train._internal.storage import StorageContext

    context = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="trial_x")
    check_internals(context, ["storage_filesystem", "storage_fs_path", "trial_fs_path", "experiment_dir_name"],
                    "search/result_loggers.py, search/tuner.py")


def test_ray_checkpoint_manager_internals():
    # search/surviving_checkpoints.py re-points a restored trial at a checkpoint that still exists.
    from ray.train import CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.tune.experiment.trial import _TrainingRunMetadata

    check_internals(_CheckpointManager(CheckpointConfig()), ["_checkpoint_results", "_latest_checkpoint_result"],
                    "search/surviving_checkpoints.py")
    check_internals(_TrainingRunMetadata(), ["checkpoint_manager"], "search/surviving_checkpoints.py")


def test_the_checkpoint_line_search_trainable_silences_is_logged_where_it_looks():
    # search/trainable.py raises the level of the loggers that print "Checkpoint successfully created".
    import importlib

    from search.trainable import _CHATTY_WORKER_LOGGERS

    for name in _CHATTY_WORKER_LOGGERS:
        module = importlib.import_module(name)
        assert "Checkpoint successfully created" in inspect.getsource(module) and module.logger.name == name, name
