"""A search's trials as the report and the analysis tools read them: history, score, rank, shown keys.

The end-of-search report (``summary.json``) and ``analysis`` (the trials table, the best trial) both
rank with :func:`rank_trials`, so they always agree on the best trial.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from nsm import metrics as nsm_metrics
from nsm.metrics import METRIC_NAMES
from search.outcome import TERMINAL_STATUSES


def epoch_history(frame: pd.DataFrame | None) -> pd.DataFrame:
    """A trial's per-epoch metrics (Ray's ``Result.metrics_dataframe``), one row per epoch, ascending.

    A trial restored from a checkpoint reports its resumed epoch again; the later report wins.
    """
    if frame is None or frame.empty:
        return pd.DataFrame(columns=list(METRIC_NAMES))
    frame = frame.copy()
    if "epoch" not in frame:
        frame["epoch"] = frame.get("training_iteration", pd.Series(range(1, len(frame) + 1)))
    frame = frame.dropna(subset=["epoch"])
    frame["epoch"] = frame["epoch"].astype(int)
    return frame.drop_duplicates(subset="epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def best_epoch(history: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The row of the first epoch with the best finite value of ``metric`` (nsm keeps the first of ties)."""
    values = _finite_values(history, metric)
    if values.empty:
        return None
    best = values.max() if mode == "max" else values.min()
    return history.loc[values[values == best].index[0]]


@dataclass(frozen=True)
class TrialScore:
    """What ranking needs to know about one trial."""

    trial_id: str
    finished: bool  # Ray status TERMINATED or ERROR: the trial will not report again
    value: float  # best value of the metric over the trial's epochs; nan when it never reported one
    best_epoch: int | None  # first epoch that reached ``value``
    tie_break: float  # best value of the metric's tie-break metric over the epochs; nan when none
    epochs: int  # epochs run


def score_trial(trial_id: str, history: pd.DataFrame, metric: str, mode: str, ray_status: str) -> TrialScore:
    """The score of one trial from its per-epoch ``history`` (see :func:`epoch_history`)."""
    best = best_epoch(history, metric, mode)
    tie_break = _tie_break(metric)
    tie_value = math.nan
    if tie_break is not None:
        values = _finite_values(history, tie_break[0])
        if not values.empty:
            tie_value = float(values.max() if tie_break[1] == "max" else values.min())
    return TrialScore(
        trial_id=trial_id,
        finished=ray_status in TERMINAL_STATUSES,
        value=float(best[metric]) if best is not None else math.nan,
        best_epoch=int(best["epoch"]) if best is not None else None,
        tie_break=tie_value,
        epochs=int(history["epoch"].max()) if not history.empty else 0,
    )


def rank_trials(scores: Sequence[TrialScore], metric: str, mode: str) -> tuple[list[TrialScore], list[TrialScore]]:
    """The ranked trials (best first) and the unranked ones, from ``scores`` in creation order.

    The rule, the same for the search report and for analysis:

    1. A trial's score is the best value of ``metric`` over its epochs (Ray's ``scope="all"``): a
       trial's last epoch is not its best one.
    2. Only trials that will not report again (Ray status TERMINATED, which includes trials a
       scheduler stopped early, or ERROR) and have a finite score are ranked. Trials that are still
       pending, running or paused (a search still running, or interrupted) and trials without a finite
       score follow, unranked, in creation order; they never count as the best trial.
    3. Ties on the score are broken by the tie-break metric that :mod:`nsm.metrics` registers for
       ``metric`` (its best value over the epochs): the lower ``val_task_loss`` for an accuracy or
       ranking metric (the task loss, not the total loss, whose cycle term grows with cycle_weight),
       the higher ``val_acc`` for a loss, a time or memory. A trial without that metric loses the tie.
    4. Then the trial that reached its score at an earlier epoch, then creation order.
    """
    tie_break = _tie_break(metric)
    tie_mode = tie_break[1] if tie_break is not None else "min"

    def key(score: TrialScore) -> tuple[float, float, int]:
        return (_oriented(score.value, mode), _oriented(score.tie_break, tie_mode), score.best_epoch or 0)

    eligible = [score.finished and _is_finite(score.value) for score in scores]
    ranked = sorted((score for score, ok in zip(scores, eligible) if ok), key=key)  # stable: creation order last
    unranked = [score for score, ok in zip(scores, eligible) if not ok]
    return ranked, unranked


def varied_keys(configs: Iterable[dict[str, Any]]) -> list[str]:
    """Config keys (besides ``domain``) whose values differ between trials, in first-seen order.

    The searched keys of an experiment whose ``search.json`` predates recording them.
    """
    configs = list(configs)
    keys: list[str] = []
    for config in configs:
        keys.extend(key for key in config if key not in keys and key != "domain")
    return [key for key in keys if len({json.dumps(config.get(key), sort_keys=True, default=str) for config in configs}) > 1]


def _tie_break(metric: str) -> tuple[str, str] | None:
    return nsm_metrics.tie_break(metric) if metric in nsm_metrics.METRICS else None


def _finite_values(history: pd.DataFrame, metric: str) -> pd.Series:
    if metric not in history:
        return pd.Series(dtype=float)
    values = pd.to_numeric(history[metric], errors="coerce")
    return values[values.map(math.isfinite)]


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _oriented(value: float, mode: str) -> float:
    """A sort key where smaller is better; a missing (non-finite) value sorts last."""
    if not _is_finite(value):
        return math.inf
    return -value if mode == "max" else value
