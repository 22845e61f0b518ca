"""How a search stops before its trials are done: Ctrl-C, SIGTERM, or the time budget.

All three end the search the way Ray Tune ends it on Ctrl-C (a last experiment snapshot, trials left
resumable), with one difference that matters for exactly-once records: the stop waits, up to
:data:`SETTLE_TIMEOUT_S`, for a moment when no trial has a checkpoint in flight.

Why: Ray logs a trial's result first and registers the checkpoint that came with it a moment later,
through a separate ``save`` call to the trial's actor. Stopped in between, the snapshot holds the
epoch's result but not its checkpoint, so the resumed trial ran that epoch again. Stopped when no
save is in flight, every logged epoch is resumable and nothing runs twice. (After a SIGKILL that
window still exists; the result loggers in :mod:`search.result_loggers` then replace the re-run
epoch's record instead of appending a second one.)

The time budget (``--time-budget-s``) counts the seconds the search has run, summed over resumes.
When it is spent, running trials are left unfinished and pending ones not started, all resumable:
``--resume NAME --time-budget-s S`` continues them with a new budget of ``S`` seconds.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from ray import tune

SETTLE_TIMEOUT_S = 10.0
"""The longest a stop waits for in-flight checkpoints (Modal sends SIGKILL 30 s after SIGINT)."""

INTERRUPTED = "interrupted"
BUDGET_SPENT = "budget_spent"
EPOCH_BUDGET_SPENT = "epoch_budget_spent"

# experiment name -> what a restored callback must use / what the last run of it did; the driver
# and the callbacks Ray unpickles from the experiment meet here (callbacks cannot be passed to
# Tuner.restore).
_budget_overrides: dict[str, float | None] = {}
_stop_reasons: dict[str, str] = {}


def set_time_budget(experiment: str, seconds: float | None) -> None:
    """A new time budget for the next run of ``experiment`` (``--resume NAME --time-budget-s S``)."""
    _budget_overrides[experiment] = seconds


def stop_reason(experiment: str) -> str | None:
    """Why the last run of ``experiment`` in this process stopped early: INTERRUPTED, BUDGET_SPENT or None."""
    return _stop_reasons.get(experiment)


class EpochBudget(tune.Stopper):
    """Ray Tune stopper that ends the search once its trials have reported ``budget`` epochs in all.

    An epoch counts once per trial (a trial restarted from a checkpoint re-reports the epochs after
    it). The result that reaches the budget is the last one Ray processes: ``stop_all`` then stops
    every trial, so a trial running alongside does not get its next epoch counted. What it trained
    of that epoch is lost compute the count does not see (at most one partial epoch per other trial).
    """

    def __init__(self, experiment: str, budget: int) -> None:
        self.experiment = experiment
        self.budget = budget
        self._seen: set[tuple[str, int]] = set()

    @property
    def epochs(self) -> int:
        """Epochs counted so far."""
        return len(self._seen)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        epoch = result.get("epoch")
        if isinstance(epoch, (int, float)) and epoch == epoch and not self.spent():
            self._seen.add((trial_id, int(epoch)))
        if self.spent():
            _stop_reasons[self.experiment] = EPOCH_BUDGET_SPENT
            return True
        return False

    def spent(self) -> bool:
        return self.epochs >= self.budget

    def stop_all(self) -> bool:
        return self.spent()


class GracefulStop(tune.Callback):
    """Stops the search on Ctrl-C, SIGTERM (turned into SIGINT by the driver) or a spent time budget,
    at a moment when no trial has a checkpoint in flight. A second Ctrl-C stops at once."""

    def __init__(self, experiment: str, time_budget_s: float | None = None) -> None:
        self.experiment = experiment
        self.time_budget_s = time_budget_s
        self.spent_s = 0.0  # over earlier runs of this experiment
        self._tune_handler: Any = None
        self._requested: str | None = None
        self._requested_at = 0.0
        self._started_at: float | None = None

    # -- Ray Tune hooks ---------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        _stop_reasons.pop(self.experiment, None)
        if self.experiment in _budget_overrides:
            # A budget given on resume is a fresh allowance, not a continuation of the spent one.
            self.time_budget_s = _budget_overrides.pop(self.experiment)
            self.spent_s = 0.0
        self._started_at = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            # Tune installed its own handler just before calling setup; it ends the run loop.
            handler = signal.getsignal(signal.SIGINT)
            if callable(handler):
                self._tune_handler = handler
                signal.signal(signal.SIGINT, self._on_sigint)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._requested is None and self.time_budget_s is not None and self.seconds_run() >= self.time_budget_s:
            self._request(BUDGET_SPENT)
        if self._requested is None:
            return
        in_flight = any(trial.is_saving for trial in trials)
        if in_flight and time.monotonic() - self._requested_at < SETTLE_TIMEOUT_S:
            return
        self._stop_now()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._restore_handler()

    def get_state(self) -> dict[str, Any]:
        return {"spent_s": self.seconds_run(), "time_budget_s": self.time_budget_s}

    def set_state(self, state: dict[str, Any]) -> None:
        self.spent_s = float(state.get("spent_s", 0.0))
        self.time_budget_s = state.get("time_budget_s", self.time_budget_s)

    # -- internals --------------------------------------------------------------------------------

    def seconds_run(self) -> float:
        """Seconds this experiment has run, over all its runs so far."""
        now = time.monotonic()
        return self.spent_s + (now - self._started_at if self._started_at is not None else 0.0)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._requested == INTERRUPTED:
            self._stop_now()  # a second Ctrl-C: do not wait any longer
            return
        self._request(INTERRUPTED)

    def _request(self, reason: str) -> None:
        self._requested, self._requested_at = reason, time.monotonic()
        _stop_reasons[self.experiment] = reason

    def _stop_now(self) -> None:
        handler = self._tune_handler
        self._restore_handler()
        if handler is not None:
            handler(signal.SIGINT, None)  # sets Tune's "interrupted" event; the run loop ends after this step

    def _restore_handler(self) -> None:
        if self._tune_handler is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) == self._on_sigint:
                signal.signal(signal.SIGINT, self._tune_handler)
        self._tune_handler = None

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into the experiment (tuner.pkl): signal handlers and clocks belong to this process.
        state = self.__dict__.copy()
        state.update(_tune_handler=None, _requested=None, _requested_at=0.0, _started_at=None)
        return state
