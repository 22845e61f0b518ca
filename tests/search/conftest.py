"""Shared fixtures: a tiny search space and one in-process Ray session for the search tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Small enough that a trial epoch takes well under a second on one core.
TINY_SPACE = """
default:
  lr: {type: loguniform, low: 1.0e-4, high: 3.0e-2}
  cycle_weight: {type: loguniform, low: 1.0e-3, high: 0.3}
  batch_size: {type: choice, values: [16, 32, 64]}
  hidden_dim: 16
  num_bases: 4
  num_graphs: 160
  save_every: 0
"""


def write_tiny_space(path: Path, num_graphs: int = 160) -> Path:
    """The tiny space, written to ``path``; more graphs make longer epochs."""
    path.write_text(textwrap.dedent(TINY_SPACE).replace("num_graphs: 160", f"num_graphs: {num_graphs}"))
    return path


@pytest.fixture(scope="session")
def tiny_space(tmp_path_factory) -> Path:
    return write_tiny_space(tmp_path_factory.mktemp("spaces") / "tiny.yaml")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray session for all in-process searches, declared with 4 CPUs and 1 logical GPU.

    The logical GPU lets the fractional-packing test run on this CPU-only machine (trials fall back
    to CPU when CUDA is absent); the other tests ask for --gpus-per-trial 0.
    """
    import ray

    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def cli_env() -> dict[str, str]:
    """Environment of a CLI subprocess: the test session's data cache, W&B offline."""
    env = dict(os.environ)
    env["WANDB_MODE"] = "offline"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "search" / "run.py"), *args]


def wait_for_finished_trials(experiment_dir: Path, driver: subprocess.Popen, timeout: float = 240) -> set[str]:
    """Ray trial ids of the first trials the study in ``experiment_dir`` holds as finished."""
    from search.study import STUDY_FILE, load_study

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the search ended before it could be interrupted"
        if (experiment_dir / STUDY_FILE).is_file():
            try:
                trials = load_study(experiment_dir).trials
            except KeyError:  # the journal file exists, the study is not created in it yet
                trials = []
            done = {t.user_attrs["ray_trial_id"] for t in trials if t.state.is_finished()}
            if done:
                return done
        time.sleep(0.5)
    raise AssertionError("no trial finished in time")


def kill_group(pgid: int) -> None:
    """Remove the Ray processes an interrupted driver left behind (they share its session)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
