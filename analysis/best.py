"""Rank the trials of an experiment and export the best one: ``python analysis/best.py results/<experiment>``.

Writes ``<experiment>/best/``:

- ``best_model.pt``: the nsm checkpoint of the best trial's best epoch (by the metric, not its last),
- ``best_config.yaml`` and ``best_config.json``: its full nsm config, which trains directly with
  ``python -m nsm.train --config best_config.yaml`` and seeds a new search with
  ``python search/run.py --warm-start best_config.yaml``,
- ``training_history.json``: the trial's per-epoch metrics (nsm format, a list of METRIC_NAMES dicts),
- ``final_results.json``: nsm's final results format, with the test split evaluated on the best weights
  and a ``source`` entry naming the experiment, trial, epoch and checkpoint.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: the project is installed editable, so `analysis` imports resolve; drop the
    # script's own directory so that `analysis/` does not shadow top-level modules.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import pandas as pd

from analysis import _cli, _io
from analysis.errors import AnalysisError
from analysis.experiment import (
    BestCheckpoint,
    Experiment,
    best_checkpoint,
    best_trial_id,
    ranked_trials,
    trial_history,
    trial_run_file,
    trials_table,
)
from nsm import metrics as nsm_metrics
from nsm.checkpoint import BEST_MODEL_FILE, HISTORY_FILE, RESULTS_FILE, save_checkpoint
from nsm.config import save_config_file

BEST_FILES = (BEST_MODEL_FILE, "best_config.yaml", "best_config.json", HISTORY_FILE, RESULTS_FILE)


@dataclass
class BestExport:
    """What :func:`export_best` wrote."""

    directory: Path
    trial_id: str
    epoch: int
    value: float
    config: dict[str, Any]
    final_results: dict[str, Any]
    files: dict[str, Path]


def format_table(experiment: Experiment, top: int | None = 10) -> str:
    """The ranked trials as text: rank, trial, status, metric, best epoch, epochs, searched keys."""
    frame = ranked_trials(experiment, top)
    if frame.empty:
        return "(no finished trial)"
    columns = ["rank", "trial_id", "outcome", experiment.metric, "best_epoch", "epochs", *experiment.searched_keys, "time_total_s"]
    shown = frame[[c for c in columns if c in frame]].copy()
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def history_records(history: pd.DataFrame) -> list[dict[str, float]]:
    """A trial's history in nsm's ``training_history.json`` format."""
    names = [name for name in nsm_metrics.epoch_metrics() if name in history]
    records = []
    for _, row in history[names].iterrows():
        record = {}
        for name in names:
            value = row[name]
            record[name] = int(value) if name == "epoch" else (float(value) if pd.notna(value) else math.nan)
        records.append(record)
    return records


def test_metrics(checkpoint: dict[str, Any]) -> dict[str, float]:
    """nsm's ``test_metrics`` of a checkpoint's weights on its domain's test split."""
    from torch_geometric.loader import DataLoader

    from nsm.checkpoint import load_model
    from nsm.data import load_domain
    from nsm.errors import ConfigError
    from nsm.train import evaluate

    from nsm.domains import is_link_prediction, task_of
    from nsm.train import link_data_for, score_link_part

    try:
        model, config = load_model(checkpoint)
        if is_link_prediction(config.domain):  # GraIL's protocol on the split's fixed test candidates
            data = link_data_for(config)
            tested = score_link_part(model, data.test, data.test_ranking, data.num_candidates, config.cycle_weight, "cpu")
            names = task_of(config.domain).test_metrics
            return {f"test_{name}": value for name, value in tested.items() if f"test_{name}" in names}
        data = load_domain(config.domain, num_graphs=config.num_graphs, seed=config.seed, root=config.data_root)
    except ConfigError as error:
        raise AnalysisError(str(error)) from None
    tested = evaluate(model, DataLoader(list(data.test), batch_size=256), config.cycle_weight, "cpu")
    return {f"test_{name}": value for name, value in tested.items()}


def final_results(experiment: Experiment, best: BestCheckpoint, history: list[dict[str, float]]) -> dict[str, Any]:
    """nsm's final_results.json for the best trial (its run file when present, the test split re-evaluated)."""
    from nsm.checkpoint import load_model
    from nsm.model import count_parameters

    run = trial_run_file(experiment, best.trial_id, RESULTS_FILE) or {}
    row = trials_table(experiment).set_index("trial_id").loc[best.trial_id]
    model, _ = load_model(best.checkpoint)
    best_metrics = next((r for r in history if r["epoch"] == best.epoch), best.checkpoint.get("metrics"))
    status = run.get("status") or str(row["outcome"])
    return {
        "status": status,
        "config": dict(best.checkpoint["config"]),
        "best_epoch": best.epoch,
        "best_metrics": best_metrics,
        "final_metrics": history[-1] if history else None,
        "test_metrics": test_metrics(best.checkpoint),
        "epochs_run": len(history),
        "wall_time_s": float(run.get("wall_time_s", row["time_total_s"])),
        "num_parameters": count_parameters(model),
        "device": run.get("device", "cpu"),
        "source": {
            "experiment": str(experiment.path),
            "trial_id": best.trial_id,
            "metric": experiment.metric,
            "mode": experiment.mode,
            "value": best.value,
            "epoch": best.epoch,
            "checkpoint": best.source,
            "experiment_complete": experiment.is_complete,
        },
    }


def export_best(experiment: Experiment, out_dir: str | Path | None = None, trial_id: str | None = None) -> BestExport:
    """Write best_model.pt, best_config.yaml/.json, training_history.json and final_results.json."""
    trial_id = trial_id or best_trial_id(experiment)
    best = best_checkpoint(experiment, trial_id)
    history = history_records(trial_history(experiment, trial_id))
    config = _exported_config(best.checkpoint["config"])
    results = final_results(experiment, best, history)
    directory = Path(out_dir) if out_dir is not None else experiment.best_dir
    files = {
        BEST_MODEL_FILE: save_checkpoint(best.checkpoint, directory / BEST_MODEL_FILE),
        "best_config.yaml": save_config_file(config, directory / "best_config.yaml"),
        "best_config.json": save_config_file(config, directory / "best_config.json"),
        HISTORY_FILE: _io.write_json(directory / HISTORY_FILE, history),
        RESULTS_FILE: _io.write_json(directory / RESULTS_FILE, results),
    }
    return BestExport(directory, trial_id, best.epoch, best.value, config, results, files)


def _exported_config(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's full TrainConfig, validated, with the device left to the machine that runs it."""
    from nsm.config import TrainConfig
    from nsm.errors import ConfigError

    try:
        values = TrainConfig.from_dict(dict(config), source="best checkpoint config").to_dict()
    except ConfigError as error:
        raise AnalysisError(str(error)) from None
    values["device"] = "auto"
    return values


# ---------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python analysis/best.py",
        description="Rank the trials of a search experiment (Ray's result API) and export the best trial's "
        "best-epoch checkpoint and config to <experiment>/best/.",
    )
    parser.add_argument("experiment", type=Path, help="experiment directory (<storage_path>/<name>)")
    parser.add_argument("--top", type=int, default=10, help="trials to print (default: 10)")
    parser.add_argument("--metric", default=None, help="metric to rank on (default: the search's, val_acc)")
    parser.add_argument("--mode", choices=("max", "min"), default=None, help="max or min (default: the search's)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <experiment>/best)")
    parser.add_argument(
        "--wandb", nargs="?", const="auto", default=None, choices=("auto", "online", "offline"),
        help="also log a summary run (trials table, best config artifact) in the experiment's W&B group; "
        "auto: offline unless WANDB_MODE or a configured account says online",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args: argparse.Namespace) -> None:
    experiment = _cli.open_noted(args.experiment, metric=args.metric, mode=args.mode)
    exported = export_best(experiment, args.out)
    print(f"{experiment.name}: {len(ranked_trials(experiment))} finished trials ranked by {experiment.metric} ({experiment.mode})")
    print(format_table(experiment, args.top))
    tested = exported.final_results["test_metrics"]
    test_text = ", ".join(f"{name} {tested[name]:.4f}" for name in ("test_acc", "test_hits_at_10", "test_mrr") if name in tested)
    print(
        f"best: trial {exported.trial_id}, epoch {exported.epoch}: {experiment.metric} {exported.value:.4f}, "
        f"{test_text}\nwrote {exported.directory}/ ({', '.join(BEST_FILES)})\n"
        f"train it:  python -m nsm.train --config {exported.files['best_config.yaml']}\n"
        f"warm-start a search:  python search/run.py --domain {exported.config['domain']} "
        f"--warm-start {exported.files['best_config.yaml']}"
    )
    if args.wandb:
        from analysis._wandb import log_summary

        run_dir = log_summary(experiment, mode=args.wandb, best=exported)
        print(f"W&B summary run: {run_dir}")


if __name__ == "__main__":
    sys.exit(main())
