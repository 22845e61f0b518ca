"""The one preemption of the Modal smoke test (``modal run search/modal_app.py::smoke``), as a Ray callback.

It lives here, not in ``search/modal_app.py``: the callback is pickled into the experiment's
``tuner.pkl``, and Modal imports ``modal_app`` as a top-level module that nothing else can import.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray import tune

PREEMPTED_MARKER = "smoke-preempted"  # in the experiment directory: the preemption happened (never twice)


class PreemptOnce(tune.Callback):
    """Simulate a Modal preemption in the middle of a trial, once Ray has saved a checkpoint of it.

    After a trial reports an epoch (with its checkpoint), the callback waits for Ray's next experiment
    snapshot, which records that checkpoint: the retry resumes from it. It then calls
    ``modal.exception.simulate_preemption(wait_s)``, which interrupts the driver ``wait_s`` seconds later
    as Modal's SIGINT would, provided the trial's remaining epochs, at the pace of the last one, take at
    least twice that long, so that it lands mid-trial. A marker file in the experiment makes the callback,
    restored with the experiment on the retry, do nothing the second time.
    """

    def __init__(self, wait_s: int = 1) -> None:
        self.wait_s = wait_s
        self._checkpointed_at: float | None = None
        self._experiment_dir: Path | None = None

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        epoch = result.get("epoch", 0)
        remaining_s = (trial.config.get("epochs", epoch) - epoch) * result.get("time_this_iter_s", 0.0)
        experiment_dir = Path(trial.storage.experiment_fs_path)
        if self._checkpointed_at is None and remaining_s >= 2 * self.wait_s and not was_preempted(experiment_dir):
            self._checkpointed_at = time.time()
            self._experiment_dir = experiment_dir

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._checkpointed_at is None or _newest_snapshot_time(self._experiment_dir) <= self._checkpointed_at:
            return
        self._checkpointed_at = None
        (self._experiment_dir / PREEMPTED_MARKER).write_text(f"preempted at iteration {iteration}\n")
        from modal.exception import simulate_preemption

        print(f"smoke: Ray has saved the trial's checkpoint; simulating a preemption in {self.wait_s} s", flush=True)
        simulate_preemption(self.wait_s)


def was_preempted(experiment_dir: str | Path) -> bool:
    """Whether :class:`PreemptOnce` preempted the search in ``experiment_dir``."""
    return (Path(experiment_dir) / PREEMPTED_MARKER).is_file()


def _newest_snapshot_time(experiment_dir: Path | None) -> float:
    """mtime of the newest complete ``experiment_state-*.json`` (0 if none); one being copied is not complete."""
    if experiment_dir is None:
        return 0.0
    try:
        newest = max(experiment_dir.glob("experiment_state-*.json"), key=lambda path: path.stat().st_mtime, default=None)
        if newest is None:
            return 0.0
        mtime = newest.stat().st_mtime
        json.loads(newest.read_text())
    except (OSError, ValueError):  # Ray replaced or is still writing it: the next step looks again
        return 0.0
    return mtime
