"""Test-split evaluation of an experiment's best checkpoint: ``python analysis/evaluate.py results/<experiment>``.

Writes ``<experiment>/analysis/evaluation/``: ``evaluation.json`` (accuracy, per-class accuracy,
confusion matrix, classification report, confidence histogram), ``confusion_matrix.png`` and
``confidence_histogram.png``. ``--seeds N`` also retrains the best config and the baseline config
(the best config with the baseline's value of every searched key, nsm.config.baseline_values) with N
seeds each and reports mean +- std test accuracy of both (``seeds`` in evaluation.json, ``seeds.png``), so an exported config is not a lucky
draw. Everything is computed with numpy: analysis needs only the runtime dependencies.

On a GraIL split (link prediction) the evaluation is GraIL's protocol instead: test AUC-PR, Hits@10
and MRR of the best checkpoint on the fixed test candidates, printed beside the Personalized PageRank
shortcut on the same candidates (``nsm.ppr``) and the published GraIL / NBFNet numbers; ``--seeds``
then reports test Hits@10.
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
from matplotlib.figure import Figure

from analysis import _cli, _io
from analysis.errors import AnalysisError
from analysis.experiment import Experiment, best_checkpoint, best_trial_id
from nsm.config import BASELINE, baseline_values

EVALUATION_DIR = "evaluation"
CLASS_NAMES = ("class 0", "class 1")


# ---------------------------------------------------------------------------------------------------
# Metrics (numpy only)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """``cm[i, j]`` = number of graphs of true class i predicted as class j."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_report(matrix: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """Precision, recall, F1 and support per class, accuracy, macro and weighted averages (sklearn's layout)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    hits = np.diag(matrix)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(hits), where=denominator > 0)
    total = support.sum()
    report: dict[str, Any] = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1-score": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    report["accuracy"] = float(hits.sum() / total) if total else math.nan
    weights = support / total if total else np.zeros_like(support)
    report["macro avg"] = {
        "precision": float(precision.mean()), "recall": float(recall.mean()), "f1-score": float(f1.mean()), "support": int(total),
    }
    report["weighted avg"] = {
        "precision": float((precision * weights).sum()), "recall": float((recall * weights).sum()),
        "f1-score": float((f1 * weights).sum()), "support": int(total),
    }
    return report


def confidence_histogram(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Histogram of the predicted class's probability (0.5..1 for two classes), correct and wrong apart."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(1.0 / probs.shape[1], 1.0, bins + 1)
    return {
        "bin_edges": edges.tolist(),
        "correct": np.histogram(confidence[correct], bins=edges)[0].tolist(),
        "incorrect": np.histogram(confidence[~correct], bins=edges)[0].tolist(),
        "mean_confidence": float(confidence.mean()) if len(confidence) else math.nan,
        "mean_confidence_correct": float(confidence[correct].mean()) if correct.any() else math.nan,
        "mean_confidence_incorrect": float(confidence[~correct].mean()) if (~correct).any() else math.nan,
    }


def evaluation_metrics(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Everything evaluation.json reports about predictions ``probs`` [N, C] of graphs labelled ``labels`` [N]."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    predictions = probs.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, probs.shape[1])
    support = matrix.sum(axis=1)
    per_class = np.divide(np.diag(matrix), support, out=np.zeros(len(support)), where=support > 0)
    return {
        "num_graphs": int(len(labels)),
        "accuracy": float((predictions == labels).mean()) if len(labels) else math.nan,
        "per_class_accuracy": {name: float(per_class[i]) for i, name in enumerate(CLASS_NAMES[: len(per_class)])},
        "confusion_matrix": matrix.tolist(),
        "classification_report": classification_report(matrix, CLASS_NAMES[: len(per_class)]),
        "confidence_histogram": confidence_histogram(probs, labels, bins),
    }


def link_prediction_test(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's model on its GraIL split's test candidates, beside the PPR shortcut on the same
    ones and the published numbers: ``{"test_metrics", "shortcut_metrics", "published"}``."""
    from nsm import ppr
    from nsm.checkpoint import load_model
    from nsm.data.grail import PUBLISHED
    from nsm.errors import ConfigError
    from nsm.train import link_data_for, score_link_part

    try:
        model, config = load_model(checkpoint)
        data = link_data_for(config)
    except ConfigError as error:
        raise AnalysisError(str(error)) from None
    tested = score_link_part(model, data.test, data.test_ranking, data.num_candidates, config.cycle_weight, _model_device(model))
    return {
        "test_metrics": {f"test_{name}": tested[name] for name in ("auc_pr", "hits_at_10", "mrr", "acc", "task_loss")},
        "shortcut_metrics": ppr.evaluate(data.protocol, "test"),
        "published": dict(PUBLISHED.get(config.domain, {})),
    }


def _model_device(model: Any) -> Any:
    return next(model.parameters()).device


def predict_test(checkpoint: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and labels of the checkpoint's domain's test split (nsm.train.predict)."""
    from nsm.checkpoint import load_model
    from nsm.data import load_domain
    from nsm.errors import ConfigError
    from nsm.train import predict

    try:
        model, config = load_model(checkpoint)
        data = load_domain(config.domain, num_graphs=config.num_graphs, seed=config.seed, root=config.data_root)
    except ConfigError as error:
        raise AnalysisError(str(error)) from None
    probs, labels = predict(model, data.test)
    return probs.numpy(), labels.numpy()


# ---------------------------------------------------------------------------------------------------
# Figures


def plot_confusion_matrix(matrix: np.ndarray, title: str = "Test confusion matrix") -> Figure:
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    names = CLASS_NAMES[: matrix.shape[0]]
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if matrix[i, j] > threshold else "black")
    return fig


def plot_confidence_histogram(histogram: dict[str, Any], title: str = "Prediction confidence (test)") -> Figure:
    edges = np.asarray(histogram["bin_edges"])
    widths = np.diff(edges)
    fig = Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    ax.bar(edges[:-1], histogram["correct"], width=widths, align="edge", alpha=0.7, label="correct", color="tab:green")
    ax.bar(edges[:-1], histogram["incorrect"], width=widths, align="edge", alpha=0.7, label="incorrect", color="tab:red",
           bottom=histogram["correct"])
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("graphs")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_seed_study(seeds: dict[str, Any]) -> Figure:
    names = ["best", "baseline"]
    fig = Figure(figsize=(4.2, 3.4))
    ax = fig.subplots()
    means = [seeds[name]["mean"] for name in names]
    stds = [seeds[name]["std"] for name in names]
    ax.bar(names, means, yerr=stds, capsize=6, color=["tab:blue", "tab:gray"], alpha=0.8)
    for i, name in enumerate(names):
        metric = seeds.get("metric", "test_acc")
        ax.scatter([i] * len(seeds[name][metric]), seeds[name][metric], color="black", zorder=3, s=12)
    ax.set_ylabel(seeds.get("metric", "test_acc").replace("_", " "))
    ax.set_ylim(0, 1)
    ax.set_title(f"{len(seeds['seeds'])} seeds: mean +- std")
    return fig


# ---------------------------------------------------------------------------------------------------
# Seeds


def seed_study(config: dict[str, Any], seeds: int, searched_keys: Sequence[str] = tuple(BASELINE)) -> dict[str, Any]:
    """Retrain ``config`` and the baseline with ``seeds`` seeds each; the baseline is ``config`` with the
    baseline's value (nsm.config.baseline_values) of every searched key.

    The seeds are ``config.seed + i``; each retrains on the data of its seed, so the spread includes
    the draw of the dataset split as well as the initialisation and batch order.
    """
    from nsm.errors import ConfigError
    from nsm.train import TrainConfig, train

    if seeds < 1:
        raise AnalysisError(f"--seeds must be >= 1, got {seeds}")
    base_seed = int(config.get("seed", 0))
    seed_values = [base_seed + i for i in range(seeds)]
    configs = {"best": dict(config), "baseline": {**config, **baseline_values(searched_keys)}}
    from nsm.domains import is_link_prediction

    metric = "test_hits_at_10" if is_link_prediction(str(config.get("domain", ""))) else "test_acc"
    study: dict[str, Any] = {"seeds": seed_values, "metric": metric}
    for name, values in configs.items():
        accuracies = []
        for seed in seed_values:
            try:
                train_config = TrainConfig.from_dict({**values, "seed": seed, "device": "auto", "save_every": 0}, source=f"{name} config")
            except ConfigError as error:
                raise AnalysisError(str(error)) from None
            results = train(train_config)
            accuracies.append(float(results["test_metrics"][metric]))
        array = np.asarray(accuracies)
        study[name] = {
            "config": {key: values[key] for key in searched_keys if key in values},
            metric: accuracies,
            "mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        }
    study["gain"] = study["best"]["mean"] - study["baseline"]["mean"]
    return study


# ---------------------------------------------------------------------------------------------------
# Experiment level


def evaluate_experiment(
    experiment: Experiment,
    out_dir: str | Path | None = None,
    seeds: int = 0,
    trial_id: str | None = None,
) -> dict[str, Any]:
    """Evaluate the best checkpoint on the test split; write evaluation.json and the PNGs; return the dict."""
    from nsm.domains import is_link_prediction

    trial_id = trial_id or best_trial_id(experiment)
    best = best_checkpoint(experiment, trial_id)
    evaluation = {
        "experiment": str(experiment.path),
        "trial_id": best.trial_id,
        "epoch": best.epoch,
        "metric": experiment.metric,
        "metric_value": best.value,
        "checkpoint": best.source,
        "config": dict(best.checkpoint["config"]),
    }
    directory = Path(out_dir) if out_dir is not None else experiment.analysis_dir / EVALUATION_DIR
    figures: dict[str, Figure] = {}
    if is_link_prediction(str(evaluation["config"].get("domain", ""))):
        evaluation.update(task="link_prediction", **link_prediction_test(best.checkpoint))
    else:
        probs, labels = predict_test(best.checkpoint)
        evaluation.update(evaluation_metrics(probs, labels))
        figures = {
            "confusion_matrix": plot_confusion_matrix(np.asarray(evaluation["confusion_matrix"]), f"{experiment.name}: test confusion matrix"),
            "confidence_histogram": plot_confidence_histogram(evaluation["confidence_histogram"]),
        }
    if seeds:
        evaluation["seeds"] = seed_study(evaluation["config"], seeds, experiment.searched_keys)
        figures["seeds"] = plot_seed_study(evaluation["seeds"])
    evaluation["figures"] = {}
    for name, figure in figures.items():
        evaluation["figures"][name] = str(_io.save_figure(directory / f"{name}.png", figure))
    _io.write_json(directory / "evaluation.json", evaluation)
    evaluation["path"] = str(directory / "evaluation.json")
    return evaluation


def format_link_prediction(evaluation: dict[str, Any]) -> list[str]:
    """GraIL's test metrics of the NSM beside the PPR shortcut and the published numbers (percent)."""
    nsm_row, ppr_row, published = evaluation["test_metrics"], evaluation["shortcut_metrics"], evaluation["published"]

    def pct(value: Any) -> str:
        return f"{100 * value:8.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else f"{'-':>8}"

    lines = [f"{'test (%)':<22}{'AUC-PR':>8}{'Hits@10':>8}{'MRR':>8}"]
    lines.append(f"{'NSM (this checkpoint)':<22}{pct(nsm_row['test_auc_pr'])}{pct(nsm_row['test_hits_at_10'])}{pct(nsm_row['test_mrr'])}")
    lines.append(f"{'PPR shortcut':<22}{pct(ppr_row['test_auc_pr'])}{pct(ppr_row['test_hits_at_10'])}{pct(ppr_row['test_mrr'])}")
    lines.append(f"{'GraIL (published)':<22}{pct(published.get('grail_auc_pr'))}{pct(published.get('grail_hits_at_10'))}{pct(None)}")
    lines.append(f"{'NBFNet (published)':<22}{pct(None)}{pct(published.get('nbfnet_hits_at_10'))}{pct(None)}")
    gap = nsm_row["test_hits_at_10"] - ppr_row["test_hits_at_10"]
    lines.append(f"NSM {'beats' if gap > 0 else 'does not beat'} the PPR shortcut on Hits@10 ({100 * gap:+.2f} points, same candidates)")
    return lines


def format_evaluation(evaluation: dict[str, Any]) -> str:
    if evaluation.get("task") == "link_prediction":
        head = (f"trial {evaluation['trial_id']} epoch {evaluation['epoch']} "
                f"({evaluation['metric']} {evaluation['metric_value']:.4f}), {evaluation['config']['domain']}")
        lines = [head, *format_link_prediction(evaluation)]
        if "seeds" in evaluation:
            lines.extend(_format_seeds(evaluation["seeds"]))
        return "\n".join(lines)
    matrix = evaluation["confusion_matrix"]
    per_class = ", ".join(f"{name} {value:.4f}" for name, value in evaluation["per_class_accuracy"].items())
    report = evaluation["classification_report"]
    lines = [
        f"trial {evaluation['trial_id']} epoch {evaluation['epoch']} ({evaluation['metric']} {evaluation['metric_value']:.4f})",
        f"test accuracy {evaluation['accuracy']:.4f} on {evaluation['num_graphs']} graphs; per class: {per_class}",
        "confusion matrix (rows true, columns predicted):",
        *("  " + "  ".join(f"{count:5d}" for count in row) for row in matrix),
        f"{'':>14}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>9}",
    ]
    for name, row in report.items():
        if isinstance(row, dict):
            lines.append(f"{name:>14}{row['precision']:10.4f}{row['recall']:10.4f}{row['f1-score']:10.4f}{row['support']:9d}")
    if "seeds" in evaluation:
        lines.extend(_format_seeds(evaluation["seeds"]))
    return "\n".join(lines)


def _format_seeds(seeds: dict[str, Any]) -> list[str]:
    metric = seeds.get("metric", "test_acc")
    lines = [f"{len(seeds['seeds'])} seeds, {metric.replace('_', ' ')} mean +- std:"]
    for name in ("best", "baseline"):
        lines.append(f"  {name:<9}{seeds[name]['mean']:.4f} +- {seeds[name]['std']:.4f}  {seeds[name]['config']}")
    lines.append(f"  gain of best over baseline: {seeds['gain']:+.4f}")
    return lines


# ---------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python analysis/evaluate.py",
        description="Evaluate the best checkpoint of a search experiment on the test split: accuracy, per-class "
        "accuracy, confusion matrix, classification report and confidence histogram (JSON and PNG).",
    )
    parser.add_argument("experiment", type=Path, help="experiment directory (<storage_path>/<name>)")
    parser.add_argument("--seeds", type=int, default=0, help="also retrain the best and the baseline config (lr 1e-4, "
                        "cycle_weight 0.01, batch 64) with N seeds each and report mean +- std test accuracy")
    parser.add_argument("--metric", default=None, help="metric the best trial is chosen on (default: the search's)")
    parser.add_argument("--mode", choices=("max", "min"), default=None)
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <experiment>/analysis/evaluation)")
    parser.add_argument("--wandb", nargs="?", const="auto", default=None, choices=("auto", "online", "offline"),
                        help="also log a summary run with the evaluation figures in the experiment's W&B group")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args: argparse.Namespace) -> None:
    if args.seeds < 0:
        raise AnalysisError(f"--seeds must be >= 0, got {args.seeds}")
    experiment = _cli.open_noted(args.experiment, metric=args.metric, mode=args.mode)
    evaluation = evaluate_experiment(experiment, args.out, seeds=args.seeds)
    print(format_evaluation(evaluation))
    print(f"wrote {evaluation['path']} and {', '.join(Path(p).name for p in evaluation['figures'].values())}")
    if args.wandb:
        from analysis._wandb import log_summary

        run_dir = log_summary(experiment, mode=args.wandb, evaluation=evaluation)
        print(f"W&B summary run: {run_dir}")


if __name__ == "__main__":
    sys.exit(main())
