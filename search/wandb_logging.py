"""Ray's ``WandbLoggerCallback``, fixed for two cases the search meets, with summaries by the metric registry.

- Ray kills a trial's logging actor as soon as the actor's ``run()`` returns from ``wandb.finish()``.
  W&B's service process may not have written the run's records to its ``.wandb`` file by then:
  offline runs came out empty (seen in CI). Tearing the service down inside the actor waits for it.
- Ray ends a trial's W&B run only when the trial ends. A search stopped by Ctrl-C or SIGTERM leaves
  its running trials unfinished (to resume them), and Ray's ``on_experiment_end`` then waited for
  their runs for ``upload_timeout`` (30 minutes by default) before the driver could exit.
- A W&B run's summary holds each metric's last value by default; a trial's best epoch is what the
  search ranks on, so every ranking metric also gets its best value (``val_acc.max``,
  ``val_loss.min``), in the direction :mod:`nsm.metrics` registers.
"""

from __future__ import annotations

import os
from typing import Any

from ray.air.integrations.wandb import WANDB_PROCESS_RUN_INFO_HOOK, WandbLoggerCallback, _WandbLoggingActor

from nsm import metrics as nsm_metrics


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
    """``WandbLoggerCallback`` whose per-trial runs are complete on disk when the trial or the search ends."""

    _logger_actor_cls = _FlushingWandbLoggingActor

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in list(self._trial_logging_futures):  # runs of trials that have not ended
            self._signal_logging_actor_stop(trial)
        super().on_experiment_end(trials, **info)
