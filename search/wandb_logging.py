"""W&B logging of a search: one W&B run per trial, written by one logging actor, never waited on.

Ray's ``WandbLoggerCallback`` creates two actors per trial (a ``Queue`` and a logging actor) and
puts every result into the queue with a blocking ``ray.get``. The first result of each trial waited
for both actors to start (a process each, importing wandb): 3.7 s on average, 11 s at worst, on a
2-core machine (``bench/scale.py --wandb offline``; 22 s on S3 storage). :class:`WandbRunsCallback`
keeps Ray's callback API and settings (project, group, API key, ``mode``...) but:

- one actor (:class:`_WandbRuns`, started once, zero CPUs, on the driver's node) holds the runs of
  all trials (``wandb.init(reinit="create_new")``: several runs in one process);
- the driver only submits actor calls (``.remote()``), never waits for them: a Ray actor runs the
  calls of one caller in submission order, so a run's results are logged in order, after its start;
- the actor is not restarted (a restarted one would have lost its open runs).

What W&B holds, per trial run:

- each epoch once, at ``step = epoch``. A trial restarted from a checkpoint (resume, retry) runs again
  the epochs after it; W&B cannot replace a logged step, so an epoch at or below the highest one
  already logged for the trial (by this driver, in ``result.json`` by an earlier one, or in the
  offline run files a killed driver left) is not sent again. A resumed trial continues the same
  run: same run id, ``resume="allow"``;
- summaries: every ranking metric's best value in its registered direction (:mod:`nsm.metrics`) and
  its last (``val_acc = {"max": .., "last": ..}``); and, when the trial ends, ``final_status``
  (completed, pruned, diverged, infeasible, failed), ``best_epoch``, ``best_<metric>``,
  ``is_baseline``, the domain and the searched keys' values. The outcome is also a tag;
- a readable name: ``<domain>-<trial id> key=value ...``.

When the search ends (or is stopped), the actor finishes every open run and shuts W&B's service
down before it is released, so offline run files are complete (W&B's service may otherwise not
have written a run's last records when its process ends).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import ray
from ray.air.constants import TRAINING_ITERATION
from ray.air.integrations.wandb import (
    WANDB_ENV_VAR,
    WANDB_PROCESS_RUN_INFO_HOOK,
    WandbLoggerCallback,
    _clean_log,
    _is_allowed_type,
    _run_wandb_process_run_info_hook,
)
from ray.air.util.node import _force_on_current_node
from ray.tune.utils import flatten_dict

from nsm import metrics as nsm_metrics
from nsm.config import holds_values
from search.outcome import ERROR, trial_outcome
from search.result_loggers import EPOCH_KEY, highest_recorded_epoch
from search.wandb_offline import highest_logged_step

FAILED = "failed"  # W&B's word for outcome.ERROR: the trial raised after its retries


def define_summaries(run: Any) -> None:
    """Give every ranking metric of ``run`` a summary of its best value (by its direction) and its last."""
    for metric in nsm_metrics.METRICS.values():
        if metric.rankable:
            run.define_metric(metric.name, summary=f"{metric.direction},last")


def run_name(domain: str, trial_id: str, values: dict[str, Any]) -> str:
    """``planning-1a2b3c4d lr=2.3e-03 cycle_weight=0.059 batch_size=16``."""
    return " ".join([f"{domain}-{trial_id}", *(f"{key}={_short(value)}" for key, value in values.items())])


class _WandbRuns:
    """The logging actor: every trial's W&B run, by trial id (see the module doc)."""

    def __init__(self) -> None:
        import wandb

        self._wandb = wandb
        self._runs: dict[str, tuple[Any, set[str], set[str]]] = {}

    def start(self, trial_id: str, logdir: str, exclude: list[str], to_config: list[str], init_kwargs: dict) -> None:
        if trial_id in self._runs:
            return
        run = self._wandb.init(**init_kwargs, reinit="create_new")
        run.config.update({"trial_log_path": logdir}, allow_val_change=True)
        define_summaries(run)
        _run_wandb_process_run_info_hook(run)  # a user's own hook (Ray's WANDB_PROCESS_RUN_INFO_HOOK)
        self._runs[trial_id] = (run, set(exclude), set(to_config))

    def log(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._runs:
            return
        run, exclude, to_config = self._runs[trial_id]
        log, config_update = _split_result(result, exclude, to_config)
        if config_update:
            run.config.update(config_update, allow_val_change=True)
        run.log(log, step=log.get(TRAINING_ITERATION))

    def finish(self, trial_id: str, summary: dict[str, Any], tags: list[str]) -> None:
        entry = self._runs.pop(trial_id, None)
        if entry is None:
            return
        run = entry[0]
        run.summary.update(summary)
        if tags:
            run.tags = tuple(dict.fromkeys([*(run.tags or ()), *tags]))
        run.finish()

    def close(self) -> int:
        """Finish the runs still open (trials of a stopped search) and wait for W&B's service."""
        for trial_id in list(self._runs):
            self._runs.pop(trial_id)[0].finish()
        self._wandb.teardown()
        return 0


class WandbRunsCallback(WandbLoggerCallback):
    """Ray's ``WandbLoggerCallback`` with one shared, never-awaited logging actor (see the module doc).

    ``metric``, ``max_epochs``, ``domain``, ``searched_keys`` and ``baseline`` (the searched values of
    the baseline config) fill the end-of-trial summary.
    """

    def __init__(self, *args: Any, metric: str = "val_acc", max_epochs: int = 0, domain: str = "",
                 searched_keys: list[str] | None = None, baseline: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("resume", "allow")
        super().__init__(*args, **kwargs)
        self._metric = metric
        self._mode = nsm_metrics.mode(metric)
        self._max_epochs = max_epochs
        self._domain = domain
        self._keys = list(searched_keys or [])
        self._baseline = dict(baseline or {})
        self._baseline_id: str | None = None
        self._actor: Any = None
        self._logged_epoch: dict[Any, float] = {}
        self._best: dict[Any, tuple[float, int]] = {}  # trial -> (best metric value, its epoch)
        self._open: set[Any] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_actor"] = None  # the Tuner pickles its callbacks; an actor handle is not kept
        return state

    def log_trial_start(self, trial: Any) -> None:
        # What earlier drivers (or this one, before a retry) logged for this trial: its results, and
        # for offline runs the run files themselves, which a SIGKILLed driver may have written further
        # than the results it had synced. (Online, W&B itself drops steps below the resumed run's.)
        wandb_dir = Path(self.kwargs.get("dir") or ".") / "wandb"
        self._logged_epoch[trial] = max(self._logged_epoch.get(trial, -math.inf), highest_recorded_epoch(trial),
                                        highest_logged_step(wandb_dir, trial.trial_id))
        if trial in self._open:
            return  # a trial restarted in this driver continues its open run
        values = {key: (trial.config or {}).get(key) for key in self._keys}
        if self._baseline_id is None and self._baseline and holds_values(values, self._baseline):
            self._baseline_id = trial.trial_id
        config = _clean_log({k: v for k, v in trial.config.items() if k not in self.excludes and k != "callbacks"})
        init_kwargs = dict(id=trial.trial_id, name=run_name(self._domain, trial.trial_id, values), resume=False,
                           allow_val_change=True, group=self.group or trial.experiment_dir_name,
                           project=self.project, config=config)
        init_kwargs.update(self.kwargs)
        tags = [*init_kwargs.get("tags", ())]
        if self._is_baseline(trial):
            tags.append("baseline")
        init_kwargs["tags"] = tags
        exclude = [*self._exclude_results, *self.excludes, *([] if self.log_config else ["config"])]
        self._runs_actor().start.remote(trial.trial_id, trial.local_path, exclude, self.AUTO_CONFIG_KEYS, init_kwargs)
        self._open.add(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._open:
            self.log_trial_start(trial)
        epoch = result.get(EPOCH_KEY)
        if isinstance(epoch, (int, float)) and math.isfinite(epoch):
            if epoch <= self._logged_epoch[trial]:
                return  # a re-run epoch: W&B already holds it
            self._logged_epoch[trial] = epoch
            result = {**result, TRAINING_ITERATION: int(epoch)}  # logged at step=training_iteration
            value = result.get(self._metric)
            best = self._best.get(trial)
            if isinstance(value, (int, float)) and math.isfinite(value) and (
                    best is None or nsm_metrics.is_better(value, best[0], self._mode)):
                self._best[trial] = (float(value), int(epoch))
        self._runs_actor().log.remote(trial.trial_id, _clean_log(result, video_kwargs=self.video_kwargs,
                                                                 image_kwargs=self.image_kwargs))

    def log_trial_save(self, trial: Any) -> None:
        pass  # checkpoints are not uploaded (upload_checkpoints is not offered by the search)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial not in self._open:
            return
        self._open.discard(trial)
        status = FAILED if failed else trial_outcome(trial.last_result, self._max_epochs)
        status = FAILED if status == ERROR else status
        best_value, best_epoch = self._best.pop(trial, (math.nan, 0))
        values = {key: (trial.config or {}).get(key) for key in self._keys}
        summary = {"final_status": status, "best_epoch": best_epoch, f"best_{self._metric}": best_value,
                   "is_baseline": self._is_baseline(trial), "domain": self._domain,
                   "searched_keys": list(self._keys), **{f"param/{k}": v for k, v in values.items()}}
        self._runs_actor().finish.remote(trial.trial_id, summary, [status])
        self._logged_epoch.pop(trial, None)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Finish every open run (those of trials a stop left unfinished too) and wait for the files."""
        if self._actor is None:
            return
        try:
            ray.get(self._actor.close.remote(), timeout=self._upload_timeout)
        except Exception as error:  # a timeout, or the actor died: say so, the search itself is done
            print(f"warning: W&B logging did not finish cleanly: {str(error).splitlines()[0] if str(error) else error!r}")
        ray.kill(self._actor)
        self._actor = None
        self._open.clear()

    def __del__(self) -> None:
        pass  # Ray's __del__ waits on per-trial actors this callback does not have

    # ---------------------------------------------------------------------------------------------

    def _runs_actor(self) -> Any:
        if self._actor is None:
            env_vars = {WANDB_ENV_VAR: os.environ[WANDB_ENV_VAR]} if WANDB_ENV_VAR in os.environ else {}
            if WANDB_PROCESS_RUN_INFO_HOOK in os.environ:
                env_vars[WANDB_PROCESS_RUN_INFO_HOOK] = os.environ[WANDB_PROCESS_RUN_INFO_HOOK]
            # Created without waiting; its start-up overlaps the trial's first epoch.
            self._actor = ray.remote(num_cpus=0, max_restarts=0, runtime_env={"env_vars": env_vars},
                                     **_force_on_current_node())(_WandbRuns).remote()
        return self._actor

    def _is_baseline(self, trial: Any) -> bool:
        return trial.trial_id == self._baseline_id


def _split_result(result: dict, exclude: set[str], to_config: set[str]) -> tuple[dict, dict]:
    """Ray's split of a result into logged values and config updates (``_WandbLoggingActor._handle_result``)."""
    config_update = dict(result.get("config", {}))
    log = {}
    for key, value in flatten_dict(result, delimiter="/").items():
        if any(key == item or key.startswith(item + "/") for item in exclude):
            continue
        if any(key == item or key.startswith(item + "/") for item in to_config):
            config_update[key] = value
        elif _is_allowed_type(value):
            log[key] = value
    config_update.pop("callbacks", None)
    return log, config_update


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2g}" if value and (abs(value) < 1e-2 or abs(value) >= 1e3) else f"{value:.3g}"
    return str(value)
