"""One real small search per test session (``python search/run.py``), shared by all analysis tests.

The experiment is produced once (3 trials x 2 epochs of a 150-graph planning domain, FIFO so all
three trials run their full budget and reach the Optuna study as COMPLETE). Tests that damage an
experiment work on a copy (``experiment_copy``); the others only read it, or write ``best/`` and
``analysis/``, which is what the analysis tools are allowed to write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SMALL_SPACE = """\
default:
  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
  cycle_weight: {type: loguniform, low: 1.0e-3, high: 0.3}
  batch_size: {type: choice, values: [16, 32, 64]}
  hidden_dim: 16
  num_bases: 4
  num_graphs: 150
  save_every: 0
"""


def run_search(storage: Path, name: str, space: Path, *extra: str, num_samples: int = 3, max_epochs: int = 2) -> Path:
    command = [
        sys.executable, str(REPO / "search" / "run.py"), "--domain", "planning", "--num-samples", str(num_samples),
        "--max-epochs", str(max_epochs), "--space", str(space), "--storage-path", str(storage), "--name", name,
        "--wandb", "disabled", "--scheduler", "none", "--seed", "0", *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_MODE": "disabled"})
    assert done.returncode == 0, f"search failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return storage / name


@pytest.fixture(scope="session")
def small_space(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "small.yaml"
    path.write_text(SMALL_SPACE)
    return path


@pytest.fixture(scope="session")
def experiment(tmp_path_factory, small_space) -> Path:
    """A finished experiment directory made by search/run.py."""
    return run_search(tmp_path_factory.mktemp("results"), "exp", small_space)


@pytest.fixture(scope="session")
def exported(experiment) -> Path:
    """``best/`` of the experiment, written once by ``analysis/best.py``."""
    from analysis import best

    assert best.main([str(experiment)]) == 0
    return experiment / "best"


@pytest.fixture
def experiment_copy(experiment, tmp_path) -> Path:
    """A private copy of the experiment (without analysis outputs) that a test may damage."""
    copy = tmp_path / "results" / experiment.name
    shutil.copytree(experiment, copy, ignore=shutil.ignore_patterns("best", "analysis"))
    return copy


def set_trial_status(experiment_dir: Path, status: str, trial_ids: set[str] | None = None) -> None:
    """Rewrite trial statuses in Ray's experiment snapshot (simulates a search that is still running)."""
    for path in experiment_dir.glob("experiment_state-*.json"):
        state = json.loads(path.read_text())
        for entry in state["trial_data"]:
            trial = json.loads(entry[0])
            if trial_ids is None or trial["trial_id"] in trial_ids:
                trial["status"] = status
            entry[0] = json.dumps(trial, indent=2)
        path.write_text(json.dumps(state))
