"""Check that an experiment recorded every epoch of every trial exactly once: ``python analysis/audit.py results/<exp>``.

Reads, for each trial directory, every place an epoch is recorded and reports what is off:

- ``result.json`` and ``progress.csv`` (Ray's result files, which ``ExperimentAnalysis`` reads),
- ``training_history.json`` (nsm's own history of the run),
- the Optuna study: each Ray trial is one Optuna trial, told at most once,
- W&B offline runs (``<exp>/wandb/offline-run-*-<trial id>``): one run id per trial, and over all of a
  trial's run files, in the order they were written, steps that strictly increase.

Exit status 0 when everything is recorded once, 1 when anything is duplicated or out of order, 2 on
bad input. The kill-and-resume tests and ``bench/stress_resume.py`` use :func:`audit_experiment`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from analysis import _cli
from analysis.errors import AnalysisError
from search.wandb_offline import offline_runs, run_steps

TRIAL_DIR_PREFIX = "trial_"
WANDB_DIR = "wandb"


@dataclass
class Audit:
    """What an experiment recorded more than once, per trial and source (empty when all is well)."""

    trials: int = 0
    duplicated: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # trial -> source -> epochs
    wandb: dict[str, str] = field(default_factory=dict)  # trial -> what is wrong with its W&B run(s)
    optuna: list[str] = field(default_factory=list)  # Ray trial ids the study holds more than once

    @property
    def ok(self) -> bool:
        return not (self.duplicated or self.wandb or self.optuna)

    @property
    def duplicated_epochs(self) -> int:
        """Epoch records beyond the first, over every trial and source."""
        return sum(len(epochs) for sources in self.duplicated.values() for epochs in sources.values())

    def lines(self) -> list[str]:
        out = [f"{self.trials} trials audited"]
        for trial, sources in sorted(self.duplicated.items()):
            for source, epochs in sorted(sources.items()):
                out.append(f"trial {trial}: {source} records epochs {epochs} more than once")
        out += [f"trial {trial}: W&B {problem}" for trial, problem in sorted(self.wandb.items())]
        out += [f"trial {trial}: the Optuna study holds it more than once" for trial in self.optuna]
        if self.ok:
            out.append("every epoch of every trial is recorded exactly once")
        return out


def audit_experiment(experiment_dir: str | Path) -> Audit:
    """Audit a local experiment directory (see the module docstring)."""
    root = Path(experiment_dir)
    if not root.is_dir():
        raise AnalysisError(f"{root}: no such experiment directory")
    audit = Audit()
    for trial_dir in sorted(root.glob(f"{TRIAL_DIR_PREFIX}*")):
        if not trial_dir.is_dir():
            continue
        trial = trial_dir.name[len(TRIAL_DIR_PREFIX):]
        audit.trials += 1
        sources = {
            "result.json": _json_lines_epochs(trial_dir / "result.json"),
            "progress.csv": _csv_epochs(trial_dir / "progress.csv"),
            "training_history.json": _history_epochs(trial_dir / "training_history.json"),
        }
        repeated = {name: _repeated(epochs) for name, epochs in sources.items()}
        repeated = {name: epochs for name, epochs in repeated.items() if epochs}
        if repeated:
            audit.duplicated[trial] = repeated
        problem = _wandb_problem(root / WANDB_DIR, trial)
        if problem:
            audit.wandb[trial] = problem
    audit.optuna = _optuna_repeats(root)
    return audit


# ------------------------------------------------------------------------------------------------
# Sources


def _repeated(epochs: list[int]) -> list[int]:
    return sorted(epoch for epoch, count in Counter(epochs).items() for _ in range(count - 1))


def _json_lines_epochs(path: Path) -> list[int]:
    if not path.is_file():
        return []
    epochs = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), (int, float)):
            epochs.append(int(record["epoch"]))
    return epochs


def _csv_epochs(path: Path) -> list[int]:
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return [int(float(row["epoch"])) for row in csv.DictReader(file) if row.get("epoch") not in (None, "")]


def _history_epochs(path: Path) -> list[int]:
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [int(row["epoch"]) for row in history if isinstance(row, dict) and "epoch" in row]


def _optuna_repeats(root: Path) -> list[str]:
    from search.study import STUDY_FILE, load_study

    if not (root / STUDY_FILE).is_file():
        return []
    counts = Counter(t.user_attrs.get("ray_trial_id") for t in load_study(root).trials)
    return sorted(trial for trial, count in counts.items() if trial and count > 1)


# ------------------------------------------------------------------------------------------------
# W&B offline runs


def _wandb_problem(wandb_dir: Path, trial: str) -> str | None:
    files = offline_runs(wandb_dir, trial)
    if not files:
        return None
    run_ids: set[str] = set()
    steps: list[int] = []
    for path in files:
        ids, file_steps = run_steps(path)
        run_ids |= ids
        steps += file_steps
    if len(run_ids) > 1:
        return f"logged under {len(run_ids)} run ids ({', '.join(sorted(run_ids))})"
    backwards = [b for a, b in zip(steps, steps[1:]) if b <= a]
    if backwards:
        return f"steps repeat or go backwards (steps {steps})"
    return None


# ------------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python analysis/audit.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="experiment directory (results/<name>)")
    args = parser.parse_args(argv)
    found: list[Audit] = []
    code = _cli.run(lambda: found.append(audit_experiment(args.experiment)))
    if code != _cli.EXIT_OK:
        return code
    print("\n".join(found[0].lines()))
    return 0 if found[0].ok else 1


if __name__ == "__main__":
    sys.exit(main())
