"""The one preemption of the Modal smoke test (``modal run search/modal_app.py::smoke``), as a Ray callback.

It lives here, not in ``search/modal_app.py``: the callback is pickled into the experiment's
``tuner.pkl``, and Modal imports ``modal_app`` as a top-level module that nothing else can import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

PREEMPTED_MARKER = "smoke-preempted"  # in the experiment directory: the preemption happened (never twice)


class PreemptOnce(tune.Callback):
    """Once a trial has checkpointed an epoch, simulate a Modal preemption in the middle of the trial.

    ``modal.exception.simulate_preemption(wait_s)`` interrupts the driver ``wait_s`` seconds later, as
    Modal's SIGINT would. The wait is longer than Ray's experiment snapshot period (2 s here), so the
    snapshot that the retry resumes from records the checkpoint; and it is armed only while the trial's
    remaining epochs, at the pace of the last one, take at least twice that long, so that it lands mid-trial.
    A marker file in the experiment makes the callback, restored with the experiment on the retry, do
    nothing the second time.
    """

    def __init__(self, after_epoch: int = 1, wait_s: int = 3) -> None:
        self.after_epoch = after_epoch
        self.wait_s = wait_s

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        epoch = result.get("epoch", 0)
        remaining_s = (trial.config.get("epochs", epoch) - epoch) * result.get("time_this_iter_s", 0.0)
        if epoch < self.after_epoch or remaining_s < 2 * self.wait_s:
            return
        marker = Path(trial.storage.experiment_fs_path) / PREEMPTED_MARKER
        if marker.exists():
            return
        marker.write_text(f"preempted after epoch {epoch} of trial {trial.trial_id}\n")
        from modal.exception import simulate_preemption

        print(f"smoke: simulating a preemption in {self.wait_s} s (trial {trial.trial_id} at epoch {epoch})", flush=True)
        simulate_preemption(self.wait_s)


def was_preempted(experiment_dir: str | Path) -> bool:
    """Whether :class:`PreemptOnce` preempted the search in ``experiment_dir``."""
    return (Path(experiment_dir) / PREEMPTED_MARKER).is_file()
