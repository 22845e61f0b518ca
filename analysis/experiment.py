"""Open a search experiment through Ray's own result API and find its best trial and checkpoint.

An experiment directory is Ray Tune's (``<storage_path>/<name>/``) plus ``search.json``,
``summary.json`` and ``study.journal`` written by ``search``. Trials are read with
:class:`ray.tune.ExperimentAnalysis` and :class:`ray.tune.ResultGrid`; a trial's per-epoch metrics
are its ``Result.metrics_dataframe`` and its checkpoints are ``Result.best_checkpoints``. Nothing
here writes anywhere.

Ranking is the search's own rule, :func:`search.trials.rank_trials` (the end-of-search report uses
it too): a trial's score is the best value of the metric over its epochs; only *finished* trials
(Ray status TERMINATED, which includes trials a scheduler stopped early, or ERROR) compete for best, so
an experiment that is still running, or was interrupted, is analysed on the trials that finished so
far; ties are broken by the metric's registered tie-break metric, then the earlier best epoch.

The searched keys shown in every table are those ``search.json`` records; an experiment whose
``search.json`` predates that record shows the keys whose values differ between trials.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError
from nsm import metrics as nsm_metrics
from nsm.config import baseline_values
from nsm.errors import ConfigError, first_line
from search.errors import SearchError
from search.outcome import TERMINAL_STATUSES, outcome_of
from search.report import SUMMARY_FILE
from search.settings import SETTINGS_FILE, SearchSettings
from search.trainable import CHECKPOINT_FILE
from search.trials import best_epoch, epoch_history, rank_trials, score_trial, varied_keys

DEFAULT_METRIC = "val_acc"
BEST_DIR = "best"
ANALYSIS_DIR = "analysis"

# Columns of the trials table besides the searched keys, in display order.
_TABLE_COLUMNS = ("rank", "trial_id", "status", "outcome", "metric", "best_epoch", "epochs", "time_total_s", "gpus", "cpus")


@dataclass
class Experiment:
    """One experiment directory, opened through Ray's API."""

    path: Path
    metric: str
    mode: str
    analysis: Any  # ray.tune.ExperimentAnalysis
    grid: Any  # ray.tune.ResultGrid
    settings: dict[str, Any] | None = None  # search.json (search.settings.SearchSettings), when present
    summary: dict[str, Any] | None = None  # summary.json, when present
    _trials: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def trial_ids(self) -> list[str]:
        return [trial.trial_id for trial in self.analysis.trials]

    @property
    def statuses(self) -> dict[str, str]:
        return {trial.trial_id: str(trial.status) for trial in self.analysis.trials}

    @property
    def num_finished(self) -> int:
        return sum(status in TERMINAL_STATUSES for status in self.statuses.values())

    @property
    def is_complete(self) -> bool:
        """False while the search is still running (or was interrupted with trials pending)."""
        return all(status in TERMINAL_STATUSES for status in self.statuses.values())

    @property
    def searched_keys(self) -> list[str]:
        """The config keys the search sampled (search.json), else those whose values differ between trials."""
        recorded = (self.settings or {}).get("searched_keys")
        if recorded is not None:
            return list(recorded)
        return varied_keys(self.analysis.get_all_configs().values())

    @property
    def domain(self) -> str | None:
        if self.settings and self.settings.get("domain"):
            return str(self.settings["domain"])
        domains = {config.get("domain") for config in self.analysis.get_all_configs().values()}
        domains.discard(None)
        return domains.pop() if len(domains) == 1 else None

    @property
    def best_dir(self) -> Path:
        return self.path / BEST_DIR

    @property
    def analysis_dir(self) -> Path:
        return self.path / ANALYSIS_DIR

    def status_note(self) -> str | None:
        """A one-line note when the experiment is still running or was interrupted, else None."""
        if self.is_complete:
            return None
        return (
            f"experiment {self.name} is still running or was interrupted: using the {self.num_finished} of "
            f"{len(self.statuses)} trials that finished so far"
        )

    def result(self, trial_id: str) -> Any:
        """The ``ray.tune.Result`` of one trial."""
        for trial, result in zip(self.analysis.trials, self.grid, strict=True):
            if trial.trial_id == trial_id:
                return result
        raise AnalysisError(f"{self.path}: no trial {trial_id!r} (trials: {', '.join(self.trial_ids)})")

    def trial(self, trial_id: str) -> Any:
        for trial in self.analysis.trials:
            if trial.trial_id == trial_id:
                return trial
        raise AnalysisError(f"{self.path}: no trial {trial_id!r} (trials: {', '.join(self.trial_ids)})")


@dataclass
class BestCheckpoint:
    """The checkpoint of a trial's best epoch, loaded (nsm checkpoint format)."""

    trial_id: str
    epoch: int
    value: float  # the metric at that epoch
    checkpoint: dict[str, Any]
    source: str  # where it was read from
    rebuilt: bool = False  # True: rebuilt from a later checkpoint's "best_model" weights


# ---------------------------------------------------------------------------------------------------
# Opening


def open_experiment(path: str | Path, metric: str | None = None, mode: str | None = None) -> Experiment:
    """Open ``path`` with ``ray.tune.ExperimentAnalysis``; AnalysisError when it is not an experiment."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise AnalysisError(f"{path}: no such experiment directory")
    path = path.resolve()
    settings = _read_settings(path)
    summary = _read_json(path / SUMMARY_FILE)
    source = "--metric" if metric else f"{path / SETTINGS_FILE}: metric"
    metric = metric or (settings or {}).get("metric") or DEFAULT_METRIC
    try:
        nsm_metrics.ranking_metric(metric)
    except ConfigError as error:
        raise AnalysisError(f"{source} {error}") from None
    if mode is None:
        if settings and settings.get("metric") == metric and settings.get("mode") in ("min", "max"):
            mode = settings["mode"]
        else:
            mode = nsm_metrics.mode(metric)
    if mode not in ("min", "max"):
        raise AnalysisError(f"mode must be min or max, got {mode!r}")

    from ray.tune import ExperimentAnalysis, ResultGrid

    try:
        with _quiet_ray():
            analysis = ExperimentAnalysis(str(path), default_metric=metric, default_mode=mode)
            grid = ResultGrid(analysis)
    except ValueError as error:
        if "No experiment snapshot file" in str(error):
            raise AnalysisError(f"{path}: not a Ray Tune experiment directory (no experiment_state-*.json)") from None
        raise AnalysisError(f"{path}: unreadable experiment state: {first_line(error)}") from None
    except Exception as error:  # a truncated or foreign experiment_state file
        raise AnalysisError(f"{path}: unreadable experiment state: {first_line(error)}") from None
    if not analysis.trials:
        raise AnalysisError(f"{path}: the experiment has no trials yet")
    experiment = Experiment(path=path, metric=metric, mode=mode, analysis=analysis, grid=grid, settings=settings, summary=summary)
    frame = trials_table(experiment)
    if metric not in _reported_metrics(experiment) and (frame["epochs"] > 0).any():
        reported = [name for name in nsm_metrics.METRICS if name in _reported_metrics(experiment)]
        raise AnalysisError(f"{path}: metric {metric!r} was never reported (reported: {', '.join(reported)})")
    return experiment


def _read_settings(path: Path) -> dict[str, Any] | None:
    if not (path / SETTINGS_FILE).is_file():
        return None
    try:
        return SearchSettings.load(path).to_dict()
    except SearchError:  # an unreadable search.json: the settings are optional here
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class _quiet_ray:
    """Silence Ray's loggers and warnings while reading (a missing trial file is reported by us)."""

    def __enter__(self) -> None:
        self._loggers = [logging.getLogger(name) for name in ("ray", "ray.tune", "ray.train")]
        self._levels = [logger.level for logger in self._loggers]
        for logger in self._loggers:
            logger.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(*exc)
        for logger, level in zip(self._loggers, self._levels, strict=True):
            logger.setLevel(level)


# ---------------------------------------------------------------------------------------------------
# Trials


def trial_history(experiment: Experiment, trial_id: str) -> pd.DataFrame:
    """Per-epoch metrics of a trial (``Result.metrics_dataframe``), one row per epoch, ``epoch`` ascending.

    A trial restored from a checkpoint reports its resumed epoch again; the later report wins.
    """
    return epoch_history(experiment.result(trial_id).metrics_dataframe)


def _reported_metrics(experiment: Experiment) -> set[str]:
    names: set[str] = set()
    for result in experiment.grid:
        if result.metrics_dataframe is not None:
            names.update(result.metrics_dataframe.columns)
    return names


def trials_table(experiment: Experiment) -> pd.DataFrame:
    """One row per trial, ranked by :func:`search.trials.rank_trials`: ranked trials first, then the others.

    Columns: rank (1 = best; empty for unranked trials), trial_id, status (Ray), outcome (how the trial
    ended, search.outcome), metric (best value over epochs, named after the metric), best_epoch, epochs
    (run), time_total_s, gpus and cpus per trial, then the config keys (searched ones first).
    """
    if experiment._trials is not None:
        return experiment._trials.copy()
    rows, scores = {}, []
    configs = experiment.analysis.get_all_configs()
    max_epochs = (experiment.settings or {}).get("max_epochs")
    for trial, result in zip(experiment.analysis.trials, experiment.grid, strict=True):
        status = str(trial.status)
        score = score_trial(trial.trial_id, trial_history(experiment, trial.trial_id), experiment.metric, experiment.mode, status)
        scores.append(score)
        last = result.metrics or {}
        resources = _trial_resources(trial)
        rows[trial.trial_id] = {
            "trial_id": trial.trial_id,
            "status": status,
            "outcome": outcome_of(status, last, int(max_epochs) if max_epochs else None),
            "metric": score.value,
            "best_epoch": score.best_epoch if score.best_epoch is not None else pd.NA,
            "epochs": score.epochs,
            "time_total_s": float(last.get("time_total_s", 0.0) or 0.0),
            "gpus": resources.get("GPU", 0.0),
            "cpus": resources.get("CPU", 0.0),
            **dict(configs.get(trial.trial_id, {})),
        }
    ranked, unranked = rank_trials(scores, experiment.metric, experiment.mode)
    frame = pd.DataFrame([rows[score.trial_id] for score in (*ranked, *unranked)])
    frame.insert(0, "rank", pd.array(list(range(1, len(ranked) + 1)) + [pd.NA] * len(unranked), dtype="Int64"))
    frame["best_epoch"] = frame["best_epoch"].astype("Int64")
    keys = [key for key in experiment.searched_keys if key in frame]
    fixed = [c for c in frame.columns if c not in _TABLE_COLUMNS and c not in keys]
    frame = frame[[*_TABLE_COLUMNS, *keys, *fixed]].rename(columns={"metric": experiment.metric})
    experiment._trials = frame
    return frame.copy()


def _trial_resources(trial: Any) -> dict[str, float]:
    factory = getattr(trial, "placement_group_factory", None)
    try:
        return {key: float(value) for key, value in factory.required_resources.items()}
    except Exception:  # a stub without resources
        return {}


def ranked_trials(experiment: Experiment, top: int | None = None) -> pd.DataFrame:
    """The ranked finished trials (rank 1 first), at most ``top`` rows."""
    frame = trials_table(experiment)
    frame = frame[frame["rank"].notna()]
    return frame.head(top) if top else frame


def best_trial_id(experiment: Experiment) -> str:
    """The best finished trial; AnalysisError when no trial has finished with a finite metric."""
    ranked = ranked_trials(experiment)
    if ranked.empty:
        statuses = experiment.statuses
        counts = ", ".join(f"{n} {s.lower()}" for s, n in pd.Series(list(statuses.values())).value_counts().items())
        raise AnalysisError(f"{experiment.path}: no finished trial with a finite {experiment.metric} yet ({counts})")
    return str(ranked.iloc[0]["trial_id"])


def baseline_trial_id(experiment: Experiment) -> str | None:
    """The trial that ran the baseline config (nsm.config.baseline_values on the searched keys), if the
    search evaluated it."""
    baseline = baseline_values(experiment.searched_keys)
    frame = trials_table(experiment)
    for _, row in frame.iterrows():
        if all(key in row and _close(row[key], value) for key, value in baseline.items()):
            return str(row["trial_id"])
    return None


def _close(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------------
# Checkpoints


def best_checkpoint(experiment: Experiment, trial_id: str | None = None) -> BestCheckpoint:
    """Load the checkpoint of the best epoch of ``trial_id`` (default: the best trial).

    The epoch is the trial's best by the experiment metric, not its last. Its Ray checkpoint is
    taken from ``Result.best_checkpoints``; if Ray no longer keeps it (``num_to_keep``) and the
    metric is the one nsm keeps the best weights of (val_acc; val_mrr on GraIL's splits), the weights
    are rebuilt from the latest checkpoint's ``best_model`` (nsm keeps them in every checkpoint).
    """
    trial_id = trial_id or best_trial_id(experiment)
    history = trial_history(experiment, trial_id)
    best = best_epoch(history, experiment.metric, experiment.mode)
    if best is None:
        raise AnalysisError(f"trial {trial_id}: no epoch with a finite {experiment.metric}")
    epoch, value = int(best["epoch"]), float(best[experiment.metric])
    result = experiment.result(trial_id)
    by_epoch: dict[int, Any] = {}
    for checkpoint, metrics in result.best_checkpoints or []:
        if metrics and metrics.get("epoch") is not None:
            by_epoch[int(metrics["epoch"])] = checkpoint
    if epoch in by_epoch:
        loaded, source = _load(by_epoch[epoch], trial_id)
        return BestCheckpoint(trial_id, epoch, value, loaded, source)

    latest = result.checkpoint
    if latest is None and not by_epoch:
        raise AnalysisError(f"trial {trial_id}: no checkpoint was saved")
    if experiment.metric in ("val_acc", "val_mrr") and latest is not None:
        loaded, source = _load(latest, trial_id)
        # nsm keeps the best weights of its task's metric (best_metric; val_acc in older checkpoints).
        kept_metric = loaded.get("best_metric", "val_acc")
        if kept_metric == experiment.metric and int(loaded.get("best_epoch", -1)) == epoch and loaded.get("best_model") is not None:
            rebuilt = dict(loaded)
            kept = [row for row in loaded.get("history", []) if int(row.get("epoch", 0)) <= epoch]
            rebuilt.update(model=loaded["best_model"], epoch=epoch, history=kept, metrics=kept[-1] if kept else best.to_dict())
            rebuilt.pop("optimizer", None)
            rebuilt.pop("scheduler", None)
            return BestCheckpoint(trial_id, epoch, value, rebuilt, f"{source} (best_model of epoch {epoch})", rebuilt=True)
    raise AnalysisError(
        f"trial {trial_id}: the checkpoint of its best epoch {epoch} is missing "
        f"(kept epochs: {', '.join(map(str, sorted(by_epoch))) or 'none'})"
    )


def _load(checkpoint: Any, trial_id: str) -> tuple[dict[str, Any], str]:
    from nsm.checkpoint import load_checkpoint

    try:
        with checkpoint.as_directory() as directory:
            path = Path(directory) / CHECKPOINT_FILE
            return load_checkpoint(path), str(Path(checkpoint.path) / CHECKPOINT_FILE)
    except ConfigError as error:
        raise AnalysisError(f"trial {trial_id}: {error}") from None
    except (OSError, FileNotFoundError) as error:
        raise AnalysisError(f"trial {trial_id}: checkpoint {checkpoint.path} unreadable: {first_line(error)}") from None


def trial_run_file(experiment: Experiment, trial_id: str, name: str) -> dict[str, Any] | list[Any] | None:
    """A JSON file of the trial's nsm run directory (``final_results.json``...), or None."""
    path = Path(experiment.result(trial_id).path) / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
