"""How a trial ended, decided in one place for the searcher (what Optuna is told) and the report.

The trainable reports ``nsm_status`` with every result: nsm's epoch status ("running" or "diverged"),
or "infeasible" after a CUDA out-of-memory error. Everything else follows from the epochs run.
"""

from __future__ import annotations

import math
from typing import Any

STATUS_KEY = "nsm_status"
"""Result key the trainable adds to nsm's metrics."""

COMPLETED = "completed"  # ran the full epoch budget
PRUNED = "pruned"  # stopped before the budget by the scheduler (ASHA) or the time budget
DIVERGED = "diverged"  # loss became NaN/inf; nsm stopped the run
INFEASIBLE = "infeasible"  # CUDA out of memory: this config does not fit the trial's GPU share
ERROR = "error"  # the trial raised (after FailureConfig's retries)
UNFINISHED = "unfinished"  # stopped mid-run by an interruption or the time budget; resumable
NOT_STARTED = "not_started"  # never ran an epoch (the search stopped first)

FAILED_OUTCOMES = (DIVERGED, INFEASIBLE, ERROR)


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
