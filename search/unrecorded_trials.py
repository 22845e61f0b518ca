"""Set aside the files of trials that started after the experiment's last snapshot, when it resumes.

A driver killed at the wrong moment (SIGKILL, a lost machine) may have started a trial that no
snapshot of Ray's records: Ray's restore does not know it, the resumed search runs a new trial in its
place, and the study tells its Optuna trial FAIL (:meth:`search.study.PruneAwareOptunaSearch.restore`).
Its directory would stay beside the experiment's real trials, a trial that belongs to no result,
counted by anything that reads the trial directories. Before the first restored trial starts, it is
moved to ``<experiment>/unrecorded/`` (kept, not deleted: it may hold a finished epoch or two).
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune

from search import storage

logger = logging.getLogger(__name__)

TRIAL_DIR_PREFIX = "trial_"  # a trial's directory: the prefix and its Ray trial id (search.tuner.trial_dirname)
UNRECORDED_DIR = "unrecorded"


class SetAsideUnrecordedTrials(tune.Callback):
    """Moves trial directories no restored trial owns into ``unrecorded/`` (see the module docstring)."""

    def __init__(self, experiment_location: str) -> None:
        self._location = experiment_location
        self._checked = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._checked:
            return
        self._checked = True  # on the first step the trial list is what Ray restored, nothing new yet
        set_aside_unrecorded_trials(self._location, {trial.trial_id for trial in trials})


def set_aside_unrecorded_trials(experiment_location: str, known_trial_ids: set[str]) -> list[str]:
    """Move ``trial_<id>`` directories whose id is not in ``known_trial_ids`` to ``unrecorded/``; their names."""
    moved = []
    for name in storage.directories(experiment_location, TRIAL_DIR_PREFIX):
        if name.removeprefix(TRIAL_DIR_PREFIX) in known_trial_ids:
            continue
        storage.move(experiment_location, name, f"{UNRECORDED_DIR}/{name}")
        moved.append(name)
    if moved:
        logger.warning("%s started after the last snapshot before the search stopped and cannot resume; "
                       "%s files are in %s/%s (the study counts %s failed)",
                       ", ".join(moved), "their" if len(moved) > 1 else "its", experiment_location, UNRECORDED_DIR,
                       "them" if len(moved) > 1 else "it")
    return moved
