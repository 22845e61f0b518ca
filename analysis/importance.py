"""Hyperparameter importance from the persisted Optuna study: ``python analysis/importance.py results/<experiment>``.

Opens ``<experiment>/study.journal`` with ``search.study.load_study`` and computes the importance of
every searched key (those ``search.json`` records, else every parameter of the study) with
``optuna.importance.get_param_importances`` (fANOVA by default,
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
from nsm.errors import first_line
from search.errors import SearchError
from search.settings import SearchSettings
from search.study import load_study

IMPORTANCE_DIR = "importance"
EVALUATORS = ("fanova", "ped-anova", "mdi")
PLOTS = ("optimization_history", "parallel_coordinate", "slice", "param_importances")
MIN_COMPLETE_TRIALS = 2


def open_study(experiment_dir: str | Path) -> Any:
    """The experiment's Optuna study (``search.study.load_study``); AnalysisError when there is none."""
    experiment_dir = Path(experiment_dir)
    if not experiment_dir.is_dir():
        raise AnalysisError(f"{experiment_dir}: no such experiment directory")
    try:
        return load_study(experiment_dir)
    except SearchError as error:
        raise AnalysisError(str(error)) from None
    except Exception as error:  # a corrupt journal, or a study of another name
        raise AnalysisError(f"{experiment_dir}: cannot open the Optuna study: {first_line(error)}") from None


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


def study_params(study: Any, searched_keys: list[str] | None = None) -> list[str]:
    """The parameters to analyse: the searched keys (in the space's order) that the study's complete
    trials hold, or, without a record of the searched keys, every parameter of those trials (fixed keys
    never reach Optuna)."""
    from optuna.trial import TrialState

    names: list[str] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        names.extend(name for name in trial.distributions if name not in names)
    return names if searched_keys is None else [key for key in searched_keys if key in names]


def param_importances(study: Any, evaluator: str = "fanova", seed: int = 0, searched_keys: list[str] | None = None) -> dict[str, Any]:
    """Normalised importances (sum 1) of the searched keys, with the evaluator used and the trial counts."""
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
    params = study_params(study, searched_keys)
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


def importance_plots(study: Any, evaluator: str = "fanova", seed: int = 0, target_name: str = "val_acc",
                     searched_keys: list[str] | None = None) -> dict[str, Any]:
    """Optuna's matplotlib plots as figures: optimisation history, parallel coordinates, slice, importance."""
    import numpy as np
    from optuna.visualization import matplotlib as optuna_plots

    instance, _ = make_evaluator(evaluator, seed)
    params = study_params(study, searched_keys)
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
    study = open_study(experiment_dir)
    settings = _search_settings(experiment_dir)
    result = param_importances(study, evaluator, seed, settings.searched_keys)
    target_name = target_name or settings.metric
    directory = Path(out_dir) if out_dir is not None else experiment_dir / "analysis" / IMPORTANCE_DIR
    result["figures"] = {}
    for name, figure in importance_plots(study, evaluator, seed, target_name, settings.searched_keys).items():
        result["figures"][name] = str(_io.save_figure(directory / f"{name}.png", figure))
        plt.close(figure)
    _io.write_json(directory / "importance.json", result)
    result["path"] = str(directory / "importance.json")
    return result


def _search_settings(experiment_dir: Path) -> SearchSettings:
    """The search's settings (its metric, its searched keys); the defaults when search.json is missing or unreadable."""
    try:
        return SearchSettings.load(experiment_dir)
    except SearchError:
        return SearchSettings()


def format_importance(result: dict[str, Any]) -> str:
    lines = [
        f"study {result['study']}: {result['complete_trials']} complete of {result['trials']} trials, "
        f"importance by {result['evaluator']}"
        + (f" (scikit-learn missing; asked for {result['requested_evaluator']})" if result["evaluator"] != result["requested_evaluator"] else "")
    ]
    width = max([16, *(len(name) + 1 for name in result["importances"])])
    for name, value in result["importances"].items():
        lines.append(f"  {name:<{width}}{value:7.3f}  {'#' * round(value * 40)}")
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
