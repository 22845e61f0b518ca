"""How a trial ended, decided in one place for the searcher (what Optuna is told), the report and analysis.

The trainable reports ``nsm_status`` with every result: nsm's epoch status ("running" or "diverged"),
or "infeasible" after a CUDA out-of-memory error. Everything else follows from the epochs run.
"""

from __future__ import annotations

import math
from typing import Any

STATUS_KEY = "nsm_status"
"""Result key the trainable adds to nsm's metrics."""

COMPLETED = "completed"  # ran the full epoch budget
PRUNED = "pruned"  # stopped before the budget by the scheduler (ASHA)
DIVERGED = "diverged"  # loss became NaN/inf; nsm stopped the run
INFEASIBLE = "infeasible"  # CUDA out of memory: this config does not fit the trial's GPU share
ERROR = "error"  # the trial raised (after FailureConfig's retries)
UNFINISHED = "unfinished"  # stopped mid-run by an interruption or the time budget; resumable
NOT_STARTED = "not_started"  # never ran an epoch (the search stopped first)

FAILED_OUTCOMES = (DIVERGED, INFEASIBLE, ERROR)

TERMINAL_STATUSES = ("TERMINATED", "ERROR")
"""Ray statuses of trials that will not report again (TERMINATED includes trials a scheduler stopped;
ERROR: crashed after FailureConfig's retries). Any other status (PENDING, RUNNING, PAUSED) is a trial
of a search that is still running or was interrupted."""


def trial_outcome(last_result: dict[str, Any] | None, max_epochs: int, errored: bool = False) -> str:
    """The outcome of a finished trial from its last result."""
    if errored:
        return ERROR
    if not last_result:
        return NOT_STARTED
    status = last_result.get(STATUS_KEY)
    if status in (DIVERGED, INFEASIBLE):
        return status
    epoch = last_result.get("epoch")
    if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)) or epoch < max_epochs:
        return PRUNED
    return COMPLETED


def outcome_of(ray_status: str, last_result: dict[str, Any] | None, max_epochs: int | None) -> str:
    """The outcome of any trial from its Ray status and last result.

    ``max_epochs`` unknown (an experiment without its search settings): a trial that ended without
    diverging or running out of memory counts as completed.
    """
    if ray_status == "ERROR":
        return ERROR
    if ray_status not in TERMINAL_STATUSES:
        return UNFINISHED if (last_result or {}).get("epoch") is not None else NOT_STARTED
    if max_epochs is None:
        status = (last_result or {}).get(STATUS_KEY)
        return status if status in (DIVERGED, INFEASIBLE) else COMPLETED
    return trial_outcome(last_result, max_epochs)
