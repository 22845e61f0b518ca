"""Ray's ``WandbLoggerCallback``, fixed for two cases the search meets.

- Ray kills a trial's logging actor as soon as the actor's ``run()`` returns from ``wandb.finish()``.
  W&B's service process may not have written the run's records to its ``.wandb`` file by then:
  offline runs came out empty (seen in CI). Tearing the service down inside the actor waits for it.
- Ray ends a trial's W&B run only when the trial ends. A search stopped by Ctrl-C or SIGTERM leaves
  its running trials unfinished (to resume them), and Ray's ``on_experiment_end`` then waited for
  their runs for ``upload_timeout`` (30 minutes by default) before the driver could exit.
"""

from __future__ import annotations

from typing import Any

from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor


class _FlushingWandbLoggingActor(_WandbLoggingActor):
    def run(self) -> None:
        super().run()
        self._wandb.teardown()


class FlushingWandbLoggerCallback(WandbLoggerCallback):
    """``WandbLoggerCallback`` whose per-trial runs are complete on disk when the trial or the search ends."""

    _logger_actor_cls = _FlushingWandbLoggingActor

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in list(self._trial_logging_futures):  # runs of trials that have not ended
            self._signal_logging_actor_stop(trial)
        super().on_experiment_end(trials, **info)
