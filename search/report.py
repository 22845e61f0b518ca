"""The end-of-search report: ranked table, baseline row, best config and checkpoint, ``summary.json``.

Everything is read from Ray's ``ResultGrid`` (per-trial metric history, configs, kept checkpoints)
plus the trials' final Ray statuses; nothing is recomputed from the trial directories.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray import tune

from nsm import metrics as nsm_metrics
from nsm.config import holds_values
from nsm.files import write_json
from search import storage
from search.outcome import UNFINISHED, outcome_of
from search.settings import SearchSettings
from search.trainable import CHECKPOINT_FILE
from search.trials import epoch_history, rank_trials, score_trial, varied_keys

SUMMARY_FILE = "summary.json"
TABLE_ROWS = 10


def trial_statuses(experiment_path: str | Path) -> dict[str, str]:
    """Ray's final status (TERMINATED, ERROR, PENDING, ...) of every trial of an experiment (a path or URI)."""
    analysis = tune.ExperimentAnalysis(str(experiment_path))
    return {trial.trial_id: trial.status for trial in analysis.trials}


def summarize(
    results: tune.ResultGrid,
    settings: SearchSettings,
    baseline_point: dict[str, Any],
    statuses: dict[str, str],
) -> dict[str, Any]:
    """The summary dict written to ``summary.json``: rows ranked by :func:`search.trials.rank_trials`
    (best first, then the unranked trials), each with the searched keys."""
    results = list(results)  # creation order: baseline first
    keys = settings.searched_keys if settings.searched_keys is not None else varied_keys(r.config or {} for r in results)
    entries = [_row(result, settings, statuses, keys) for result in results]
    ranked, unranked = rank_trials([score for _, _, score in entries], settings.metric, settings.mode)
    by_id = {score.trial_id: (row, result) for row, result, score in entries}
    rows = [by_id[score.trial_id][0] for score in (*ranked, *unranked)]
    baseline = next((row for row, _, _ in entries if holds_values(row["config"], baseline_point)), None)
    best_row, best_result = by_id[ranked[0].trial_id] if ranked else (None, None)
    best_checkpoint = None
    if best_result is not None:
        checkpoint = _best_checkpoint(best_result, settings.metric, settings.mode)
        if checkpoint is not None:
            best_checkpoint = _with_scheme(f"{checkpoint.path}/{CHECKPOINT_FILE}", settings)
    gain = None
    if best_row is not None and baseline is not None and _finite(baseline[settings.metric]):
        gain = best_row[settings.metric] - baseline[settings.metric]
    return {
        "experiment": settings.name,
        "experiment_dir": settings.experiment_path,
        "domain": settings.domain,
        "metric": settings.metric,
        "mode": settings.mode,
        "searcher": settings.searcher,
        "scheduler": settings.scheduler,
        "searched_keys": keys,
        "num_trials": len(entries),
        "num_samples": settings.num_samples,
        "max_epochs": settings.max_epochs,
        "best": best_row,
        "baseline": baseline,
        "gain_over_baseline": gain,
        "trials": rows,
        "best_checkpoint": best_checkpoint,
    }


def _best_checkpoint(result: Any, metric: str, mode: str) -> Any:
    """The trial's best kept checkpoint by ``metric``, or None.

    After a Ctrl-C or SIGTERM, Ray's in-memory record of a finished trial can lack its checkpoints
    (seen on S3 under load: ``get_best_checkpoint`` raised "No checkpoint exists"), although the
    trial directory holds them; Ray's own ``Result.from_path`` reads them from there.
    """
    if not result.best_checkpoints:
        try:
            result = tune.Result.from_path(result.path, storage_filesystem=result.filesystem)
        except (OSError, RuntimeError, ValueError):  # no trial directory (yet): nothing to point at
            return None
        if not result.best_checkpoints:
            return None
    return result.get_best_checkpoint(metric, mode)


def write_summary(summary: dict[str, Any], experiment_dir: str | Path) -> Path:
    return write_json(Path(experiment_dir) / SUMMARY_FILE, summary)


def format_report(summary: dict[str, Any]) -> str:
    """The ranked table (top 10), the baseline row, the best config and the best checkpoint."""
    metric, keys = summary["metric"], summary["searched_keys"]
    header = (f"{'rank':>4}  {'trial':<14} {_key_columns(keys, {key: key for key in keys})} "
              f"{'best ' + metric:>14} {'epochs':>6}  status")
    lines = [f"{summary['experiment']}: {summary['domain']}, {summary['num_trials']} trials "
             f"({summary['searcher']}, scheduler {summary['scheduler']}), ranked by {metric} ({summary['mode']})",
             header]
    for rank, row in enumerate(summary["trials"][:TABLE_ROWS], start=1):
        ranked = row["status"] != UNFINISHED and _finite(row[metric])  # rank_trials' rule; unranked rows come last
        lines.append(f"{rank if ranked else '-':>4}  {_format_row(row, metric, keys)}")
    if len(summary["trials"]) > TABLE_ROWS:
        lines.append(f"      ... {len(summary['trials']) - TABLE_ROWS} more in summary.json")
    baseline = summary["baseline"]
    lines.append(f"base  {_format_row(baseline, metric, keys)}  <- research default" if baseline else "base  (baseline trial not run)")
    best = summary["best"]
    if best is None:
        lines.append(f"best: none (no finished trial reported a finite {metric})")
    else:
        gain = summary["gain_over_baseline"]
        gain_text = f" ({gain:+.4f} over the baseline)" if gain is not None else ""
        config = ", ".join(f"{key}={_format_value(best[key])}" for key in keys)
        lines.append(f"best: {metric} {nsm_metrics.format_value(metric, best[metric])}{gain_text} with {config} "
                     f"(trial {best['trial_id']})")
        lines.append(f"best checkpoint: {summary['best_checkpoint']}")
    lines.append(f"summary: {storage.experiment_location(summary['experiment_dir'], SUMMARY_FILE)}")
    return "\n".join(lines)


def format_cross_domain(summaries: list[dict[str, Any]]) -> str:
    """One line per domain of ``--domain all``, with the searched keys of any of them."""
    keys = list(dict.fromkeys(key for summary in summaries for key in summary["searched_keys"]))
    lines = ["cross-domain summary",
             f"{'domain':<9} {'best':>8} {'baseline':>9} {'gain':>8}  {_key_columns(keys, {key: key for key in keys})}  experiment"]
    for summary in summaries:
        metric = summary["metric"]
        best, baseline = summary["best"] or {}, summary["baseline"] or {}
        gain = summary["gain_over_baseline"]
        values = {key: _format_value(best.get(key)) for key in keys}
        lines.append(
            f"{summary['domain']:<9} {nsm_metrics.format_value(metric, best.get(metric)):>8} "
            f"{nsm_metrics.format_value(metric, baseline.get(metric)):>9} {(f'{gain:+.4f}' if gain is not None else '-'):>8}  "
            f"{_key_columns(keys, values)}  {summary['experiment_dir']}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------


def _row(result: tune.Result, settings: SearchSettings, statuses: dict[str, str], keys: list[str]) -> tuple[dict[str, Any], tune.Result, Any]:
    last = result.metrics or {}
    config = dict(result.config or {})
    trial_id = last.get("trial_id") or Path(result.path).name
    status = statuses.get(trial_id, "TERMINATED")
    score = score_trial(trial_id, epoch_history(result.metrics_dataframe), settings.metric, settings.mode, status)
    row = {
        "trial_id": trial_id,
        **{key: config.get(key) for key in keys},
        settings.metric: score.value,
        "epochs": score.epochs,
        "status": outcome_of(status, last, settings.max_epochs),
        "config": config,
        "trial_dir": _with_scheme(result.path, settings),
    }
    return row, result, score


def _key_columns(keys: list[str], cells: dict[str, str]) -> str:
    """One right-aligned column per searched key, as wide as its name (at least 9)."""
    return " ".join(f"{cells[key]:>{max(9, len(key))}}" for key in keys)


def _with_scheme(path: str, settings: SearchSettings) -> str:
    """A path Ray reports on the storage filesystem, which lost the URI scheme (``s3://``) of a remote one."""
    return f"{settings.storage_path.split('://')[0]}://{path}" if settings.remote else path


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _format_row(row: dict[str, Any], metric: str, keys: list[str]) -> str:
    values = {key: _format_value(row.get(key)) for key in keys}
    return (f"{row['trial_id']:<14} {_key_columns(keys, values)} {nsm_metrics.format_value(metric, row[metric]):>14} "
            f"{row['epochs']:>6}  {row['status']}")


def _format_value(value: Any) -> str:
    """A config value: floats in 4 decimals or scientific notation."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0:
            return "0"
        return f"{value:.4f}" if 1e-2 <= abs(value) < 1e3 else f"{value:.2e}"
    return str(value)
