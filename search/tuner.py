"""Build (or restore) the one ``ray.tune.Tuner`` of a search: searcher, scheduler, callbacks, storage.

- Searcher: :class:`search.study.PruneAwareOptunaSearch` (TPE or random, seeded) over the study in
  ``study.journal``, behind a ``ConcurrencyLimiter``; the baseline config is its first point.
- Scheduler: ASHA on the metric, time unit = epoch, ``max_t`` = max epochs, grace period
  ``--grace-period`` (default :func:`search.preflight.asha_grace_period`), reduction factor
  ``--reduction-factor`` (default 3: the top third of the trials at each rung continue); or FIFO
  (``--scheduler none``).
- Epoch budget (``--epoch-budget``): a Ray ``Stopper`` ends the search once the trials have run that
  many epochs in all (:class:`search.stopping.EpochBudget`).
- Checkpoints: every epoch, ``num_to_keep=2`` ranked by the metric (Ray always keeps the latest as
  well, which is what a restarted trial resumes from). ``FailureConfig`` retries a crashed trial
  from its last checkpoint.
- Loggers: Ray's JSON and CSV result files, one record per epoch (:mod:`search.result_loggers`; not
  TensorBoard, see _configure_ray_tune).
- Stopping: Ctrl-C, SIGTERM and the time budget end the search resumably, once no checkpoint is in
  flight (:mod:`search.stopping`).
- W&B: :class:`search.wandb_logging.WandbRunsCallback` (Ray's ``WandbLoggerCallback`` with one shared
  logging actor the driver never waits on); group = experiment, tags = domain, searcher, outcome.
- Console: :class:`search.console.LiveConsole`; Ray's own output only with ``--console verbose``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from search.console import LIVE, VERBOSE, LiveConsole
from search.result_loggers import EpochCSVLoggerCallback, EpochJsonLoggerCallback
from search.settings import SearchSettings
from search.stopping import EpochBudget, GracefulStop
from search.surviving_checkpoints import ResumeFromSurvivingCheckpoint
from search.unrecorded_trials import TRIAL_DIR_PREFIX, SetAsideUnrecordedTrials
from search.study import STUDY_FILE, PruneAwareOptunaSearch, make_sampler, relocate_journal
from search.trainable import train_nsm

WANDB_DIR = "wandb"  # offline W&B runs, inside the experiment directory
CHECKPOINTS_TO_KEEP = 2
MAX_FAILURES = 2  # retries of a crashed trial, each from its last checkpoint

# Ray snapshots the experiment state (which trials finished, the searcher) every ~10 s by default;
# a driver killed in between would re-run trials that had finished. Two seconds keeps that window
# small at a negligible cost for searches of tens of trials.
EXPERIMENT_SNAPSHOT_PERIOD_S = "2"


def build_tuner(
    settings: SearchSettings,
    param_space: dict[str, Any],
    points_to_evaluate: list[dict[str, Any]],
    wandb_mode: str,
    extra_callbacks: list[tune.Callback] | None = None,
    trainable: Callable[[dict[str, Any]], None] = train_nsm,
) -> tune.Tuner:
    """A new Tuner for ``settings``; its study is created in the experiment directory.

    ``trainable`` is the nsm trainable; bench/scale.py passes a stand-in to measure the driver alone.
    """
    _configure_ray_tune(settings)
    baseline = dict(points_to_evaluate[0]) if points_to_evaluate else {}
    searcher = PruneAwareOptunaSearch(
        journal_path=settings.experiment_dir / STUDY_FILE,
        # For a URI, Ray's snapshots carry the journal to the location (see search.storage).
        copy_journal_into_snapshots=settings.remote,
        study_name=settings.name,
        max_epochs=settings.max_epochs,
        sampler=make_sampler(settings.searcher, settings.seed, settings.num_samples),
        points_to_evaluate=points_to_evaluate,
    )
    return tune.Tuner(
        _with_resources(trainable, settings),
        param_space={**param_space, "epochs": settings.max_epochs},
        tune_config=tune.TuneConfig(
            metric=settings.metric,
            mode=settings.mode,
            search_alg=RelocatableSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent)),
            scheduler=_scheduler(settings),
            num_samples=settings.num_samples,
            # The time budget is GracefulStop's (see _callbacks): Ray's own stopper terminates
            # pending trials, which a later --resume could then never start.
            time_budget_s=None,
            trial_dirname_creator=trial_dirname,
            # A new trial reuses a finished trial's worker: no second torch import and data load.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=settings.name,
            storage_path=settings.storage_path,
            callbacks=[*_callbacks(settings, wandb_mode, baseline), *(extra_callbacks or []),
                       *_console_callbacks(settings, baseline)],
            # Ray's per-trial boxes and status tables are off unless asked for (search.console).
            verbose=_ray_verbosity(settings),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=CHECKPOINTS_TO_KEEP,
                checkpoint_score_attribute=settings.metric,
                checkpoint_score_order=settings.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            stop=EpochBudget(settings.name, settings.epoch_budget) if settings.epoch_budget else None,
            # nsm's run files are written to the trial's working directory; sync them to the trial dir.
            sync_config=tune.SyncConfig(sync_artifacts=True),
        ),
    )


def restore_tuner(settings: SearchSettings, baseline: dict[str, Any] | None = None) -> tune.Tuner:
    """The Tuner of an interrupted search: unfinished and errored trials continue from their checkpoints.

    The console of this run (``settings.console``) replaces the one the search was created with.
    Directories of trials no snapshot recorded are set aside first (:mod:`search.unrecorded_trials`).
    """
    _configure_ray_tune(settings)
    relocate_journal(settings.name, settings.experiment_dir / STUDY_FILE)
    _relocated_storage[settings.name] = settings.storage_path
    tuner = tune.Tuner.restore(
        settings.experiment_path,
        trainable=_with_resources(train_nsm, settings),
        resume_unfinished=True,
        resume_errored=True,
    )
    # Tuner.restore takes no RunConfig: the stored one (private to Ray; checked in
    # tests/test_library_internals.py) gets this run's console and verbosity.
    run_config = tuner._local_tuner.get_run_config()
    run_config.verbose = _ray_verbosity(settings)
    run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, (LiveConsole, SetAsideUnrecordedTrials))]
    run_config.callbacks += [*_console_callbacks(settings, baseline or {}), SetAsideUnrecordedTrials(settings.experiment_path)]
    return tuner


# experiment name -> its storage path now, for a search generator Ray restores (see below).
_relocated_storage: dict[str, str] = {}


class RelocatableSearchGenerator(SearchGenerator):
    """Ray's ``SearchGenerator``, whose new trials follow an experiment that was moved or copied.

    Ray saves the generator with the experiment spec, storage path included, and restores it as
    saved: after a move, the trials a resumed search created were set up in the old location (and
    failed there when it was gone). Restored trials are re-pointed by Ray itself; this does the same
    for the ones still to come.
    """

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        experiment = self._experiment
        storage_path = _relocated_storage.get(experiment.storage.experiment_dir_name) if experiment else None
        if storage_path is None:
            return
        from ray.train._internal.storage import StorageContext

        here = StorageContext(storage_path=storage_path, experiment_dir_name=experiment.storage.experiment_dir_name)
        moved = copy.copy(experiment.storage)
        moved.storage_filesystem, moved.storage_fs_path = here.storage_filesystem, here.storage_fs_path
        experiment.storage = moved
        experiment.spec["storage"] = moved


def trial_dirname(trial: tune.experiment.Trial) -> str:
    """``trial_<id>``: Ray's default name repeats every config key and overflows path limits."""
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


def _configure_ray_tune(settings: SearchSettings) -> None:
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_SNAPSHOT_PERIOD_S)
    if settings.console == VERBOSE:
        os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
    else:
        # Ray's newer output engine prints a boxed experiment table even at verbose=0; the older one
        # prints nothing at 0 (errors are logged by Tune's controller either way).
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        # Optuna logs each study it creates at INFO; the live view already names the experiment.
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Frequent snapshots are intended (see above); Ray warns about them unless told not to.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ray's default loggers include TensorBoard, whose per-result flushes were a sixth of the driver's
    # time at hundreds of trials (bench/scale.py); W&B is the dashboard here. The JSON and CSV loggers
    # that ResultGrid and the analysis read are added explicitly in _callbacks.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


def _ray_verbosity(settings: SearchSettings) -> int | None:
    """None: Ray's default (its detailed output) for ``--console verbose``; 0 (silent) otherwise."""
    return None if settings.console == VERBOSE else 0


def _console_callbacks(settings: SearchSettings, baseline: dict[str, Any]) -> list[tune.Callback]:
    if settings.console != LIVE:
        return []
    return [LiveConsole(settings.name, settings.metric, settings.num_samples, settings.max_epochs,
                        settings.searched_keys or list(baseline), baseline)]


def _with_resources(trainable: Callable[[dict[str, Any]], None], settings: SearchSettings) -> Any:
    return tune.with_resources(trainable, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})


def _scheduler(settings: SearchSettings) -> TrialScheduler:
    if settings.scheduler == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        max_t=settings.max_epochs,
        grace_period=min(settings.grace_period, settings.max_epochs),
        reduction_factor=settings.reduction_factor,
        # Let trials that reach max_t end on their own, so nsm writes final_results.json.
        stop_last_trials=False,
    )


def _callbacks(settings: SearchSettings, wandb_mode: str, baseline: dict[str, Any]) -> list[tune.Callback]:
    loggers: list[tune.Callback] = [EpochJsonLoggerCallback(), EpochCSVLoggerCallback(), ResumeFromSurvivingCheckpoint()]
    stop = GracefulStop(settings.name, settings.time_budget_s)
    if wandb_mode == "disabled":
        return [*loggers, stop]
    import wandb

    from search.wandb_logging import WandbRunsCallback

    wandb_dir = Path(settings.experiment_dir)
    (wandb_dir / WANDB_DIR).mkdir(parents=True, exist_ok=True)
    return [
        *loggers,
        WandbRunsCallback(
            project=settings.wandb_project,
            group=settings.name,
            tags=[settings.domain, settings.searcher],
            dir=str(wandb_dir),
            mode=wandb_mode,
            # Trial actors' output reaches the driver's console; W&B's per-run banners would drown it.
            settings=wandb.Settings(silent=True),
            metric=settings.metric,
            max_epochs=settings.max_epochs,
            domain=settings.domain,
            searched_keys=settings.searched_keys or list(baseline),
            baseline=baseline,
        ),
        stop,
    ]


def resolve_wandb_mode(requested: str) -> str:
    """``auto`` is online when an API key is configured (env or ``wandb login``), offline otherwise."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return "offline" if os.environ["WANDB_MODE"] == "dryrun" else os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import wandb

        # Reads the env/netrc credentials without prompting or contacting the server.
        return "online" if wandb.login(prompt=False, verify=False) else "offline"
    except Exception:
        return "offline"
