"""The W&B summary run of an analysis (``--wandb`` on best.py and evaluate.py).

One run in the experiment's W&B group (project from ``search.json``, group = experiment name,
job_type ``analysis``, named ``<experiment>-best`` or ``<experiment>-evaluation`` after the script) holding a ``wandb.Table`` of all trials, the best config as an artifact
(``<experiment>-best-config``, type ``config``), the best trial's summary numbers and, when given,
the evaluation figures. Its files go to ``<experiment>/analysis/wandb/``. Offline mode needs no
account (``wandb sync`` uploads it later); no credential is read or written here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from analysis.errors import AnalysisError
from analysis.experiment import Experiment, best_trial_id, trials_table
from nsm.config import PROJECT_NAME
from nsm.errors import first_line
from search.tuner import resolve_wandb_mode


def resolve_mode(requested: str) -> str:
    """``auto``: the search's own rule (search.tuner.resolve_wandb_mode); a summary run is never disabled."""
    if requested != "auto":
        return requested
    mode = resolve_wandb_mode("auto")
    return "offline" if mode == "disabled" else mode


def trials_wandb_table(experiment: Experiment) -> Any:
    """All trials (ranked ones first) as a ``wandb.Table``."""
    import wandb

    frame = trials_table(experiment)
    rows = [[_cell(value) for value in row] for row in frame.itertuples(index=False)]
    return wandb.Table(columns=[str(c) for c in frame.columns], data=rows, allow_mixed_types=True)


def _cell(value: Any) -> Any:
    if value is None:
        return None
    try:
        if value != value:  # NaN, pd.NA
            return None
    except (TypeError, ValueError):
        return str(value)
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (dict, list, tuple)):
        return str(value)
    return value


def log_summary(
    experiment: Experiment,
    mode: str = "auto",
    best: Any | None = None,  # analysis.best.BestExport
    evaluation: dict[str, Any] | None = None,  # analysis.evaluate.evaluate_experiment's result
) -> Path:
    """Log the summary run; return its local run directory. It is named after what it holds: the
    export of best.py (``best``) or the evaluation of evaluate.py, so the two are told apart in the group."""
    import wandb

    mode = resolve_mode(mode)
    settings = experiment.settings or {}
    project = settings.get("wandb_project") or PROJECT_NAME
    trial_id = best.trial_id if best is not None else (evaluation or {}).get("trial_id") or best_trial_id(experiment)
    config = best.config if best is not None else _best_config(experiment, trial_id, evaluation)
    directory = experiment.analysis_dir
    directory.mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            project=project,
            group=experiment.name,
            job_type="analysis",
            name=f"{experiment.name}-{'evaluation' if evaluation is not None else 'best'}",
            dir=str(directory),
            mode=mode,
            config={"experiment": experiment.name, "domain": experiment.domain, "metric": experiment.metric,
                    "mode": experiment.mode, "searched_keys": experiment.searched_keys, "best_trial": trial_id,
                    "best_params": {key: config.get(key) for key in experiment.searched_keys}, "best_config": config},
            tags=[tag for tag in ("analysis", experiment.domain) if tag],
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True),
            reinit="create_new",
        )
    except Exception as error:  # no account in online mode, an unreachable server
        raise AnalysisError(f"W&B {mode} run could not start: {first_line(error)} (try --wandb offline)") from None
    try:
        _log_results(run, experiment, trial_id, config, best, evaluation)
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
        # finish() returns before wandb-core has flushed the run's transaction log; shutting the
        # service down waits for it, so the run directory is complete (and syncable) on return.
        wandb.teardown()
    return run_dir


def _log_results(run: Any, experiment: Experiment, trial_id: str, config: dict[str, Any], best: Any | None,
                 evaluation: dict[str, Any] | None) -> None:
    """The trials table, the best trial's numbers (and the evaluation's), the best config as an artifact."""
    import wandb

    table = trials_table(experiment).set_index("trial_id")
    run.log({"trials": trials_wandb_table(experiment)})
    run.summary["best_trial"] = trial_id
    run.summary[f"best_{experiment.metric}"] = float(table.loc[trial_id, experiment.metric])
    run.summary["num_trials"] = len(table)
    run.summary["experiment_complete"] = experiment.is_complete
    if best is not None:
        run.summary["best_epoch"] = best.epoch
        # Every test metric of the run (test_acc; on GraIL's splits also test_auc_pr, test_hits_at_10, test_mrr),
        # and the PPR shortcut's beside them.
        for name, value in best.final_results["test_metrics"].items():
            run.summary[name] = float(value)
        for name, value in (best.final_results.get("shortcut_metrics") or {}).items():
            run.summary[f"ppr_{name}"] = float(value)
    if evaluation is not None:
        if evaluation.get("task") == "link_prediction":
            for name, value in {**evaluation["test_metrics"], **{f"ppr_{k}": v for k, v in evaluation["shortcut_metrics"].items()}}.items():
                run.summary[name] = float(value)
        else:
            run.summary["test_acc"] = evaluation["accuracy"]
            for name, value in evaluation["per_class_accuracy"].items():
                run.summary[f"test_acc_{name.replace(' ', '')}"] = value
        if "seeds" in evaluation:
            metric = evaluation["seeds"].get("metric", "test_acc")
            for name in ("best", "baseline"):
                run.summary[f"seeds_{name}_{metric}_mean"] = evaluation["seeds"][name]["mean"]
                run.summary[f"seeds_{name}_{metric}_std"] = evaluation["seeds"][name]["std"]
        run.log({f"evaluation/{name}": wandb.Image(path) for name, path in evaluation.get("figures", {}).items()})
    artifact = wandb.Artifact(f"{experiment.name}-best-config", type="config",
                              metadata={"trial_id": trial_id, "metric": experiment.metric, "experiment": str(experiment.path)})
    with artifact.new_file("best_config.yaml") as handle:
        handle.write(yaml.safe_dump(config, sort_keys=False))
    run.log_artifact(artifact)


def _best_config(experiment: Experiment, trial_id: str, evaluation: dict[str, Any] | None) -> dict[str, Any]:
    if evaluation is not None and evaluation.get("config"):
        return dict(evaluation["config"])
    config = experiment.analysis.get_all_configs().get(trial_id, {})
    return {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in config.items()}
