"""Shared fixtures: a tiny search space and one in-process Ray session for the search tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from .interrupts import (  # noqa: F401 - re-exported for the tests
    REPO,
    cli,
    cli_env,
    finished_trials,
    kill_group,
    recorded_epochs,
    snapshot_statuses,
    wait_for_finished_trials,
    wait_until,
)

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

    start_test_ray()
    yield ray
    ray.shutdown()


def start_test_ray() -> None:
    """The in-process Ray session of ``ray_session`` (also restarted by tests that need a different one)."""
    import ray

    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, logging_level="WARNING")


