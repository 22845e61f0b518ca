"""The end-of-search report: ranked table, baseline row, best config and checkpoint, ``summary.json``.

Everything is read from Ray's ``ResultGrid`` (per-trial metric history, configs, kept checkpoints)
plus the trials' final Ray statuses; nothing is recomputed from the trial directories.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ray import tune

from search import storage
from search.outcome import ERROR, NOT_STARTED, UNFINISHED, trial_outcome
from search.settings import SearchSettings
from search.trainable import CHECKPOINT_FILE

SUMMARY_FILE = "summary.json"
TABLE_ROWS = 10
SEARCHED_COLUMNS = ("lr", "cycle_weight", "batch_size")


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
    """The summary dict written to ``summary.json`` (layout in contracts.md), rows ranked best first."""
    entries = [_row(result, settings, statuses) for result in results]  # creation order: baseline first
    baseline = next((row for row, _ in entries if _matches(row["config"], baseline_point)), None)
    ranked = sorted(entries, key=lambda entry: _rank_key(entry[0][settings.metric], settings.mode))
    best_row, best_result = ranked[0] if ranked and _finite(ranked[0][0][settings.metric]) else (None, None)
    best_checkpoint = None
    if best_result is not None:
        checkpoint = best_result.get_best_checkpoint(settings.metric, settings.mode)
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
        "num_trials": len(entries),
        "num_samples": settings.num_samples,
        "max_epochs": settings.max_epochs,
        "best": best_row,
        "baseline": baseline,
        "gain_over_baseline": gain,
        "trials": [row for row, _ in ranked],
        "best_checkpoint": best_checkpoint,
    }


def write_summary(summary: dict[str, Any], experiment_dir: str | Path) -> Path:
    path = Path(experiment_dir) / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    return path


def format_report(summary: dict[str, Any]) -> str:
    """The ranked table (top 10), the baseline row, the best config and the best checkpoint."""
    metric = summary["metric"]
    header = f"{'rank':>4}  {'trial':<14} {'lr':>9} {'cycle_weight':>12} {'batch_size':>10} {'best ' + metric:>14} {'epochs':>6}  status"
    lines = [f"{summary['experiment']}: {summary['domain']}, {summary['num_trials']} trials "
             f"({summary['searcher']}, scheduler {summary['scheduler']}), ranked by {metric} ({summary['mode']})",
             header]
    for rank, row in enumerate(summary["trials"][:TABLE_ROWS], start=1):
        lines.append(f"{rank:>4}  {_format_row(row, metric)}")
    if len(summary["trials"]) > TABLE_ROWS:
        lines.append(f"      ... {len(summary['trials']) - TABLE_ROWS} more in summary.json")
    baseline = summary["baseline"]
    lines.append(f"base  {_format_row(baseline, metric)}  <- research default" if baseline else "base  (baseline trial not run)")
    best = summary["best"]
    if best is None:
        lines.append(f"best: none (no trial reported a finite {metric})")
    else:
        gain = summary["gain_over_baseline"]
        gain_text = f" ({gain:+.4f} over the baseline)" if gain is not None else ""
        config = ", ".join(f"{key}={_format_value(best[key])}" for key in SEARCHED_COLUMNS)
        lines.append(f"best: {metric} {best[metric]:.4f}{gain_text} with {config} (trial {best['trial_id']})")
        lines.append(f"best checkpoint: {summary['best_checkpoint']}")
    lines.append(f"summary: {storage.experiment_location(summary['experiment_dir'], SUMMARY_FILE)}")
    return "\n".join(lines)


def format_cross_domain(summaries: list[dict[str, Any]]) -> str:
    """One line per domain of ``--domain all``."""
    lines = ["cross-domain summary", f"{'domain':<9} {'best':>8} {'baseline':>9} {'gain':>8}  {'lr':>9} {'cycle_weight':>12} {'batch_size':>10}  experiment"]
    for summary in summaries:
        metric = summary["metric"]
        best, baseline = summary["best"] or {}, summary["baseline"] or {}
        gain = summary["gain_over_baseline"]
        lines.append(
            f"{summary['domain']:<9} {_format_value(best.get(metric)):>8} {_format_value(baseline.get(metric)):>9} "
            f"{(f'{gain:+.4f}' if gain is not None else '-'):>8}  {_format_value(best.get('lr')):>9} "
            f"{_format_value(best.get('cycle_weight')):>12} {_format_value(best.get('batch_size')):>10}  {summary['experiment_dir']}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------


def _row(result: tune.Result, settings: SearchSettings, statuses: dict[str, str]) -> tuple[dict[str, Any], tune.Result]:
    last = result.metrics or {}
    config = dict(result.config or {})
    trial_id = last.get("trial_id") or Path(result.path).name
    history = result.metrics_dataframe
    best_value = math.nan
    epochs = 0
    if history is not None and len(history) and settings.metric in history:
        values = history[settings.metric].astype(float)
        if values.notna().any():
            best_value = float(values.max() if settings.mode == "max" else values.min())
        if "epoch" in history and history["epoch"].notna().any():
            epochs = int(history["epoch"].max())
    status = statuses.get(trial_id, "TERMINATED")
    if status == "ERROR":
        outcome = ERROR
    elif epochs == 0 and not _finite(best_value):
        outcome = NOT_STARTED
    elif status != "TERMINATED":
        outcome = UNFINISHED
    else:
        outcome = trial_outcome(last, settings.max_epochs)
    row = {
        "trial_id": trial_id,
        **{key: config.get(key) for key in SEARCHED_COLUMNS},
        settings.metric: best_value,
        "epochs": epochs,
        "status": outcome,
        "config": config,
        "trial_dir": _with_scheme(result.path, settings),
    }
    return row, result


def _with_scheme(path: str, settings: SearchSettings) -> str:
    """A path Ray reports on the storage filesystem, which lost the URI scheme (``s3://``) of a remote one."""
    return f"{settings.storage_path.split('://')[0]}://{path}" if settings.remote else path


def _matches(config: dict[str, Any], point: dict[str, Any]) -> bool:
    return all(key in config and _close(config[key], value) for key, value in point.items())


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _rank_key(value: Any, mode: str) -> tuple[int, float]:
    if not _finite(value):
        return (1, 0.0)  # trials without a finite score rank last
    return (0, -value if mode == "max" else value)


def _format_row(row: dict[str, Any], metric: str) -> str:
    return (f"{row['trial_id']:<14} {_format_value(row['lr']):>9} {_format_value(row['cycle_weight']):>12} "
            f"{_format_value(row['batch_size']):>10} {_format_value(row[metric]):>14} {row['epochs']:>6}  {row['status']}")


def _format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4f}" if 1e-2 <= abs(value) < 1e3 else f"{value:.2e}"
    return str(value)
