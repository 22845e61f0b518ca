"""Hyperparameter importance from the persisted Optuna study: ``python analysis/importance.py results/<experiment>``.

Opens ``<experiment>/study.journal`` with ``search.study.load_study`` and computes the importance of
every searched parameter with ``optuna.importance.get_param_importances`` (fANOVA by default,
normalised to sum to 1) over the study's COMPLETE trials (trials ASHA stopped early are PRUNED in
the study and not counted). Writes ``<experiment>/analysis/importance/``: ``importance.json`` and
Optuna's matplotlib plots ``optimization_history.png``, ``parallel_coordinate.png``, ``slice.png``
and ``param_importances.png``.

fANOVA fits a random forest with scikit-learn; where scikit-learn is not installed the evaluator
falls back to PED-ANOVA (Optuna's default, numpy only) and says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: the project is installed editable, so `analysis` imports resolve; drop the
    # script's own directory so that `analysis/` does not shadow top-level modules.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from analysis import _cli, _io
from analysis.errors import AnalysisError

IMPORTANCE_DIR = "importance"
EVALUATORS = ("fanova", "ped-anova", "mdi")
PLOTS = ("optimization_history", "parallel_coordinate", "slice", "param_importances")
MIN_COMPLETE_TRIALS = 2


def load_study(experiment_dir: str | Path) -> Any:
    """The experiment's Optuna study (``search.study.load_study``); AnalysisError when there is none."""
    from search.errors import SearchError
    from search.study import load_study as search_load_study

    experiment_dir = Path(experiment_dir)
    if not experiment_dir.is_dir():
        raise AnalysisError(f"{experiment_dir}: no such experiment directory")
    try:
        return search_load_study(experiment_dir)
    except SearchError as error:
        raise AnalysisError(str(error)) from None
    except Exception as error:  # a corrupt journal, or a study of another name
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AnalysisError(f"{experiment_dir}: cannot open the Optuna study: {text}") from None


def make_evaluator(name: str = "fanova", seed: int = 0) -> tuple[Any, str]:
    """The importance evaluator and the name of the one actually used (fANOVA needs scikit-learn)."""
    from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator, PedAnovaImportanceEvaluator

    if name not in EVALUATORS:
        raise AnalysisError(f"unknown evaluator {name!r} (choose from {', '.join(EVALUATORS)})")
    if name in ("fanova", "mdi") and importlib.util.find_spec("sklearn") is None:
        name = "ped-anova"
    if name == "fanova":
        return FanovaImportanceEvaluator(seed=seed), name
    if name == "mdi":
        return MeanDecreaseImpurityImportanceEvaluator(seed=seed), name
    return PedAnovaImportanceEvaluator(), name


def searched_params(study: Any) -> list[str]:
    """Parameters of the study's complete trials (the searched ones; fixed keys never reach Optuna)."""
    from optuna.trial import TrialState

    names: list[str] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        names.extend(name for name in trial.distributions if name not in names)
    return names


def param_importances(study: Any, evaluator: str = "fanova", seed: int = 0) -> dict[str, Any]:
    """Normalised importances (sum 1) of the searched parameters, with the evaluator used and the trial counts."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_COMPLETE_TRIALS:
        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        raise AnalysisError(
            f"study {study.study_name}: importance needs at least {MIN_COMPLETE_TRIALS} complete trials "
            f"(has {summary or 'no trials'})"
        )
    instance, used = make_evaluator(evaluator, seed)
    params = searched_params(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = optuna.importance.get_param_importances(study, evaluator=instance, params=params)
    return {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "evaluator": used,
        "requested_evaluator": evaluator,
        "params": params,
        "importances": {name: float(value) for name, value in values.items()},
        "complete_trials": len(complete),
        "trials": len(study.get_trials(deepcopy=False)),
        "best_value": float(study.best_value),
        "best_params": dict(study.best_params),
    }


def importance_plots(study: Any, evaluator: str = "fanova", seed: int = 0, target_name: str = "val_acc") -> dict[str, Any]:
    """Optuna's matplotlib plots as figures: optimisation history, parallel coordinates, slice, importance."""
    import numpy as np
    from optuna.visualization import matplotlib as optuna_plots

    instance, _ = make_evaluator(evaluator, seed)
    params = searched_params(study)
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the plots are marked experimental
        axes = {
            "optimization_history": optuna_plots.plot_optimization_history(study, target_name=target_name),
            "parallel_coordinate": optuna_plots.plot_parallel_coordinate(study, params=params, target_name=target_name),
            "slice": optuna_plots.plot_slice(study, params=params, target_name=target_name),
            "param_importances": optuna_plots.plot_param_importances(study, evaluator=instance, params=params, target_name=target_name),
        }
    for name, ax in axes.items():
        figures[name] = np.asarray(ax, dtype=object).flat[0].figure
    return figures


def analyse_importance(
    experiment_dir: str | Path,
    out_dir: str | Path | None = None,
    evaluator: str = "fanova",
    seed: int = 0,
    target_name: str | None = None,
) -> dict[str, Any]:
    """Compute the importances, write importance.json and the four PNGs; return the importance dict."""
    import matplotlib.pyplot as plt

    experiment_dir = Path(experiment_dir).expanduser().resolve()
    study = load_study(experiment_dir)
    result = param_importances(study, evaluator, seed)
    target_name = target_name or _search_metric(experiment_dir)
    directory = Path(out_dir) if out_dir is not None else experiment_dir / "analysis" / IMPORTANCE_DIR
    result["figures"] = {}
    for name, figure in importance_plots(study, evaluator, seed, target_name).items():
        result["figures"][name] = str(_io.save_figure(directory / f"{name}.png", figure))
        plt.close(figure)
    _io.write_json(directory / "importance.json", result)
    result["path"] = str(directory / "importance.json")
    return result


def _search_metric(experiment_dir: Path) -> str:
    import json

    try:
        return str(json.loads((experiment_dir / "search.json").read_text()).get("metric") or "val_acc")
    except (OSError, ValueError, AttributeError):
        return "val_acc"


def format_importance(result: dict[str, Any]) -> str:
    lines = [
        f"study {result['study']}: {result['complete_trials']} complete of {result['trials']} trials, "
        f"importance by {result['evaluator']}"
        + (f" (scikit-learn missing; asked for {result['requested_evaluator']})" if result["evaluator"] != result["requested_evaluator"] else "")
    ]
    for name, value in result["importances"].items():
        lines.append(f"  {name:<16}{value:7.3f}  {'#' * round(value * 40)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python analysis/importance.py",
        description="Hyperparameter importance (optuna.importance, fANOVA) from the persisted Optuna study of a search, "
        "and Optuna's plots (optimisation history, parallel coordinates, slice, importance) as PNGs.",
    )
    parser.add_argument("experiment", type=Path, help="experiment directory (<storage_path>/<name>) holding study.journal")
    parser.add_argument("--evaluator", choices=EVALUATORS, default="fanova", help="importance evaluator (default: fanova)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fANOVA forest")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <experiment>/analysis/importance)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    args = _parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args: argparse.Namespace) -> None:
    result = analyse_importance(args.experiment, args.out, args.evaluator, args.seed)
    print(format_importance(result))
    print(f"wrote {result['path']} and {', '.join(Path(p).name for p in result['figures'].values())}")


if __name__ == "__main__":
    sys.exit(main())
