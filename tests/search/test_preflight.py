"""Budgets chosen for the hardware, resource checks, and W&B mode resolution (no Ray needed)."""

from __future__ import annotations

import pytest

from search.errors import SearchError
from search.preflight import ClusterResources, asha_grace_period, check_counts, check_trial_resources, choose_budget
from search.tuner import resolve_wandb_mode

LAPTOP = ClusterResources(cpus=2, gpus=0, largest_node_cpus=2, largest_node_gpus=0)
GPU_BOX = ClusterResources(cpus=16, gpus=1, largest_node_cpus=16, largest_node_gpus=1)


def test_cpu_laptop_gets_the_short_budget():
    budget = choose_budget(LAPTOP, None, None, None, None, None)
    assert (budget.num_samples, budget.max_epochs) == (24, 20)
    assert (budget.cpus_per_trial, budget.gpus_per_trial, budget.max_concurrent) == (1.0, 0.0, 2)


def test_gpu_machine_gets_quarter_gpu_trials_and_the_full_budget():
    budget = choose_budget(GPU_BOX, None, None, None, None, None)
    assert (budget.num_samples, budget.max_epochs) == (64, 50)
    assert (budget.gpus_per_trial, budget.cpus_per_trial, budget.max_concurrent) == (0.25, 4.0, 4)


def test_explicit_flags_win():
    budget = choose_budget(GPU_BOX, 5, 7, 2, 0.5, 3)
    assert (budget.num_samples, budget.max_epochs, budget.cpus_per_trial, budget.gpus_per_trial, budget.max_concurrent) == (5, 7, 2, 0.5, 3)


def test_resource_checks_say_what_exists():
    with pytest.raises(SearchError, match=r"--gpus-per-trial 0.25 requested but the cluster has no GPU \(it has 2 CPUs"):
        check_trial_resources(1, 0.25, LAPTOP)
    with pytest.raises(SearchError, match="more than any node has"):
        check_trial_resources(1, 2, GPU_BOX)
    with pytest.raises(SearchError, match="--cpus-per-trial 32 is more than any node has"):
        check_trial_resources(32, 0, GPU_BOX)
    check_trial_resources(1, 0.25, GPU_BOX)


@pytest.mark.parametrize("gpus", [1.5, 2, 8])
def test_more_than_one_gpu_per_trial_is_refused_until_multi_gpu_training_exists(gpus):
    with pytest.raises(SearchError, match=rf"^--gpus-per-trial must be at most 1 \(a trial trains on one GPU\), got {gpus:g}$"):
        check_counts(None, None, None, gpus, None, None)
    for allowed in (0, 0.25, 1):
        check_counts(None, None, None, allowed, None, None)


@pytest.mark.parametrize(("epochs", "grace"), [(1, 1), (4, 1), (15, 4), (20, 5), (50, 12)])
def test_asha_grace_period(epochs, grace):
    assert asha_grace_period(epochs) == grace


def test_wandb_auto_is_offline_without_a_key_and_online_with_one(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    assert resolve_wandb_mode("disabled") == "disabled"
