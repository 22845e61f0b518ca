"""Ray's ``WandbLoggerCallback``, with each trial's W&B run flushed to disk before its actor ends.

Ray kills a trial's logging actor as soon as the actor's ``run()`` returns from ``wandb.finish()``.
W&B's service process may not have written the run's records to its ``.wandb`` file by then:
offline runs came out empty (seen in CI). Tearing the service down inside the actor waits for it.
"""

from __future__ import annotations

from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor


class _FlushingWandbLoggingActor(_WandbLoggingActor):
    def run(self) -> None:
        super().run()
        self._wandb.teardown()


class FlushingWandbLoggerCallback(WandbLoggerCallback):
    """``WandbLoggerCallback`` whose per-trial runs are complete on disk when the trial ends."""

    _logger_actor_cls = _FlushingWandbLoggingActor
