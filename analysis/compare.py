"""Compare experiments (one per domain, or several of one domain): ``python analysis/compare.py results/a results/b``.

One row per experiment: domain, best trial, its best val metric and its test accuracy (best weights
on the test split), the baseline's val metric and the gain over it, the best trial's val cycle loss at
its best epoch, its best epoch and epochs run, the epochs of all trials, trials finished / total, and
the compute spent: GPU-hours = sum over trials of time_total_s x GPUs per trial (0 for CPU-only
trials), CPU-hours likewise. Writes ``comparison.csv``, ``comparison.json`` and ``comparison.png``
(grouped bars) to ``--out`` (default: ``<first experiment>/analysis/compare``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: the project is installed editable, so `analysis` imports resolve; drop the
    # script's own directory so that `analysis/` does not shadow top-level modules.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import _cli, _io
from analysis.errors import AnalysisError
from analysis.experiment import (
    Experiment,
    baseline_trial_id,
    best_checkpoint,
    best_trial_id,
    trial_history,
    trials_table,
)

COMPARE_DIR = "compare"


def experiment_row(experiment: Experiment, with_test: bool = True) -> dict[str, Any]:
    """The comparison row of one experiment."""
    from analysis.best import test_metrics

    metric = experiment.metric
    table = trials_table(experiment)
    trial_id = best_trial_id(experiment)
    best_row = table.set_index("trial_id").loc[trial_id]
    history = trial_history(experiment, trial_id)
    at_best = history[history["epoch"] == int(best_row["best_epoch"])].iloc[0]
    test_acc = math.nan
    if with_test:
        test_acc = float(test_metrics(best_checkpoint(experiment, trial_id).checkpoint)["test_acc"])
    baseline_id = baseline_trial_id(experiment)
    baseline_value = math.nan
    if baseline_id is not None:
        baseline_value = float(table.set_index("trial_id").loc[baseline_id, metric])
    seconds = table["time_total_s"].astype(float)
    return {
        "experiment": experiment.name,
        "domain": experiment.domain,
        "best_trial": trial_id,
        f"best_{metric}": float(best_row[metric]),
        "test_acc": test_acc,
        f"baseline_{metric}": baseline_value,
        "gain_over_baseline": float(best_row[metric]) - baseline_value if math.isfinite(baseline_value) else math.nan,
        "val_cycle_loss": float(at_best["val_cycle_loss"]) if "val_cycle_loss" in at_best else math.nan,
        "best_epoch": int(best_row["best_epoch"]),
        "epochs": int(best_row["epochs"]),
        "total_epochs": int(table["epochs"].sum()),
        "trials_finished": int(experiment.num_finished),
        "trials": int(len(table)),
        "gpu_hours": float((seconds * table["gpus"].astype(float)).sum() / 3600),
        "cpu_hours": float((seconds * table["cpus"].astype(float)).sum() / 3600),
        "complete": experiment.is_complete,
        "path": str(experiment.path),
    }


def compare_experiments(experiments: Sequence[Experiment], with_test: bool = True) -> pd.DataFrame:
    """The comparison table, one row per experiment, in the order given."""
    if not experiments:
        raise AnalysisError("give at least one experiment directory")
    metrics = {experiment.metric for experiment in experiments}
    if len(metrics) > 1:
        raise AnalysisError(f"experiments are ranked on different metrics ({', '.join(sorted(metrics))}); pass --metric")
    return pd.DataFrame([experiment_row(experiment, with_test) for experiment in experiments])


def plot_comparison(table: pd.DataFrame, metric: str = "val_acc") -> Figure:
    """Grouped bars: per experiment, best val metric, test accuracy and the baseline's val metric."""
    series = [(f"best_{metric}", f"best {metric}"), ("test_acc", "test acc (best)"), (f"baseline_{metric}", f"baseline {metric}")]
    series = [(column, label) for column, label in series if column in table and table[column].notna().any()]
    labels = [f"{row['domain'] or '?'}\n{row['experiment']}" for _, row in table.iterrows()]
    positions = np.arange(len(table))
    width = 0.8 / max(len(series), 1)
    fig = Figure(figsize=(max(4.5, 1.8 * len(table) + 2), 3.8))
    ax = fig.subplots()
    for i, (column, label) in enumerate(series):
        values = table[column].astype(float).to_numpy()
        bars = ax.bar(positions + (i - (len(series) - 1) / 2) * width, np.nan_to_num(values), width, label=label)
        for bar, value in zip(bars, values, strict=True):
            if math.isfinite(value):
                ax.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylabel(metric if "acc" in metric else "value")
    if "acc" in metric:
        ax.set_ylim(0, 1.2)
    ax.set_title("Best trial per experiment")
    ax.legend(fontsize=8, loc="upper center", ncol=len(series))
    return fig


def write_comparison(table: pd.DataFrame, out_dir: str | Path, metric: str = "val_acc") -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "csv": _io.write_text(out_dir / "comparison.csv", table.to_csv(index=False)),
        "json": _io.write_json(out_dir / "comparison.json", table.to_dict(orient="records")),
        "png": _io.save_figure(out_dir / "comparison.png", plot_comparison(table, metric)),
    }


def format_comparison(table: pd.DataFrame, metric: str = "val_acc") -> str:
    columns = ["domain", "experiment", f"best_{metric}", "test_acc", f"baseline_{metric}", "gain_over_baseline",
               "val_cycle_loss", "best_epoch", "epochs", "trials", "gpu_hours", "cpu_hours"]
    shown = table[[c for c in columns if c in table]].copy()
    shown["trials"] = [f"{f}/{t}" for f, t in zip(table["trials_finished"], table["trials"], strict=True)]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}")


# ---------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python analysis/compare.py",
        description="Cross-domain (or cross-experiment) table of best val/test accuracy, cycle loss, epochs, trials "
        "and GPU-hours, plus a grouped bar chart.",
    )
    parser.add_argument("experiments", type=Path, nargs="+", help="experiment directories")
    parser.add_argument("--metric", default=None, help="metric to rank trials on (default: each search's, val_acc)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <first experiment>/analysis/compare)")
    parser.add_argument("--no-test", action="store_true", help="skip the test-split evaluation of each best checkpoint")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args: argparse.Namespace) -> None:
    experiments = [_cli.open_noted(path, metric=args.metric) for path in args.experiments]
    table = compare_experiments(experiments, with_test=not args.no_test)
    metric = experiments[0].metric
    out_dir = args.out or experiments[0].analysis_dir / COMPARE_DIR
    files = write_comparison(table, out_dir, metric)
    print(format_comparison(table, metric))
    print(f"wrote {', '.join(str(path) for path in files.values())}")


if __name__ == "__main__":
    sys.exit(main())
