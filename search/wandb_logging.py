"""Ray's ``WandbLoggerCallback``, fixed for the cases the search meets, with summaries by the metric registry.

- Ray kills a trial's logging actor as soon as the actor's ``run()`` returns from ``wandb.finish()``.
  W&B's service process may not have written the run's records to its ``.wandb`` file by then:
  offline runs came out empty (seen in CI). Tearing the service down inside the actor waits for it.
- Ray ends a trial's W&B run only when the trial ends. A search stopped by Ctrl-C or SIGTERM leaves
  its running trials unfinished (to resume them), and Ray's ``on_experiment_end`` then waited for
  their runs for ``upload_timeout`` (30 minutes by default) before the driver could exit.
- A W&B run's summary holds each metric's last value by default; a trial's best epoch is what the
  search ranks on, so every ranking metric also gets its best value (``val_acc.max``,
  ``val_loss.min``), in the direction :mod:`nsm.metrics` registers.
- Each epoch is logged once, at ``step = epoch``. A trial restarted from a checkpoint (resume, retry)
  runs again the epochs after it; W&B cannot replace a logged step, so an epoch at or below the
  highest one already logged for the trial (by this driver, or in ``result.json`` by an earlier one)
  is not sent again. A resumed trial continues the same W&B run: same run id, ``resume="allow"``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ray.air.constants import TRAINING_ITERATION
from ray.air.integrations.wandb import WANDB_PROCESS_RUN_INFO_HOOK, WandbLoggerCallback, _WandbLoggingActor

from nsm import metrics as nsm_metrics
from search.result_loggers import EPOCH_KEY, highest_recorded_epoch
from search.wandb_offline import highest_logged_step


def define_summaries(run: Any) -> None:
    """Give every ranking metric of ``run`` a summary of its best value (by its direction) and its last."""
    for metric in nsm_metrics.METRICS.values():
        if metric.rankable:
            run.define_metric(metric.name, summary=f"{metric.direction},last")


class _FlushingWandbLoggingActor(_WandbLoggingActor):
    def run(self) -> None:
        # Ray's own hook, called with the run right after wandb.init; one the user set takes precedence.
        # The actor is a process of its own, so this touches no other environment.
        os.environ.setdefault(WANDB_PROCESS_RUN_INFO_HOOK, f"{__name__}.define_summaries")
        super().run()
        self._wandb.teardown()


class FlushingWandbLoggerCallback(WandbLoggerCallback):
    """``WandbLoggerCallback`` with one run per trial across restarts, each epoch logged once."""

    _logger_actor_cls = _FlushingWandbLoggingActor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("resume", "allow")
        super().__init__(*args, **kwargs)
        self._logged_epoch: dict[Any, float] = {}

    def log_trial_start(self, trial: Any) -> None:
        # What earlier drivers (or this one, before a retry) logged for this trial: its results, and
        # for offline runs the run files themselves, which a SIGKILLed driver may have written further
        # than the results it had synced. (Online, W&B itself drops steps below the resumed run's.)
        wandb_dir = Path(self.kwargs.get("dir") or ".") / "wandb"
        self._logged_epoch[trial] = max(self._logged_epoch.get(trial, -math.inf), highest_recorded_epoch(trial),
                                        highest_logged_step(wandb_dir, trial.trial_id))
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._logged_epoch:
            self.log_trial_start(trial)
        epoch = result.get(EPOCH_KEY)
        if isinstance(epoch, (int, float)) and math.isfinite(epoch):
            if epoch <= self._logged_epoch[trial]:
                return  # a re-run epoch: W&B already holds it
            self._logged_epoch[trial] = epoch
            result = {**result, TRAINING_ITERATION: int(epoch)}  # the actor logs at step=training_iteration
        super().log_trial_result(iteration, trial, result)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        super().log_trial_end(trial, failed)
        self._logged_epoch.pop(trial, None)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in list(self._trial_logging_futures):  # runs of trials that have not ended
            self._signal_logging_actor_stop(trial)
        super().on_experiment_end(trials, **info)
