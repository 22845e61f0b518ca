"""Resume a trial from a checkpoint that still exists, when the one Ray's snapshot names was deleted.

Ray keeps a trial's best checkpoints by the metric plus its latest, and deletes the rest as soon as a
newer one is registered. Its experiment snapshot is taken every few seconds; after a SIGKILL, the
snapshot may name as "latest" a checkpoint that a later registration had already deleted (it was not
among the best), and Ray then fails the trial: "Could not recover from checkpoint as it does not
exist on storage anymore" (seen in ``bench/stress_resume.py``).

Before the first restored trial starts, each trial whose latest checkpoint is gone is pointed at the
newest of its kept checkpoints that exists (older: the epochs after it run again, and their records
replace the earlier ones, see :mod:`search.result_loggers`), or at none (it starts over).
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune

logger = logging.getLogger(__name__)


class ResumeFromSurvivingCheckpoint(tune.Callback):
    """Repairs restored trials whose latest checkpoint no longer exists (see the module docstring)."""

    def __init__(self) -> None:
        self._checked = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._checked:
            return
        self._checked = True
        for trial in trials:
            if not trial.is_finished() and trial.checkpoint is not None and not _exists(trial.checkpoint):
                _point_at_surviving_checkpoint(trial)

    def __getstate__(self) -> dict[str, Any]:
        return {"_checked": False}  # pickled into tuner.pkl: a restore checks again


def _point_at_surviving_checkpoint(trial: Any) -> None:
    manager = trial.run_metadata.checkpoint_manager
    kept = [result for result in manager._checkpoint_results if _exists(result.checkpoint)]
    latest = max(kept, key=lambda result: result.metrics.get("epoch", -1), default=None)
    lost = manager._latest_checkpoint_result
    manager._checkpoint_results = kept
    manager._latest_checkpoint_result = latest
    logger.warning("trial %s: its last checkpoint (%s) was deleted before the driver stopped; it resumes from %s",
                   trial.trial_id, lost.checkpoint.path if lost else None,
                   f"epoch {latest.metrics.get('epoch')}" if latest else "the start")


def _exists(checkpoint: Any) -> bool:
    import pyarrow.fs

    try:
        return checkpoint.filesystem.get_file_info(checkpoint.path).type != pyarrow.fs.FileType.NotFound
    except OSError:
        return True  # storage unreachable right now: let Ray report what it finds
