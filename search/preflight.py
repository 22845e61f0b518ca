"""Checks that run before any trial: arguments, the cluster address, and whether trials can ever fit.

Ray leaves a trial PENDING forever when it asks for resources no node has (a GPU on a CPU-only
cluster); the search would hang instead of failing. Everything here raises :class:`SearchError`
with one line saying what was asked and what exists.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from search import storage
from search.errors import SearchError

# Budgets of the bare command. CPU: the planning trainer does ~1000 graphs/s on 2 threads and an
# epoch is 1400 graphs, so 12 trials x 15 epochs with ASHA take about 10 minutes on 2 cores.
CPU_BUDGET = {"num_samples": 24, "max_epochs": 20}
GPU_BUDGET = {"num_samples": 64, "max_epochs": 50}
DEFAULT_GPUS_PER_TRIAL = 0.25  # four small graph models share one GPU comfortably
MAX_DEFAULT_CPUS_PER_GPU_TRIAL = 4


@dataclass(frozen=True)
class ClusterResources:
    """What the Ray cluster (or, before Ray starts, this machine) offers."""

    cpus: float
    gpus: float
    largest_node_cpus: float
    largest_node_gpus: float
    nodes: int = 1

    def describe(self) -> str:
        node_word = "node" if self.nodes == 1 else "nodes"
        gpu_part = f"{_fmt(self.gpus)} GPU{'s' if self.gpus != 1 else ''}" if self.gpus else "no GPU"
        return f"{_fmt(self.cpus)} CPUs and {gpu_part} on {self.nodes} {node_word}"


@dataclass(frozen=True)
class TrialBudget:
    num_samples: int
    max_epochs: int
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int


def _fmt(value: float) -> str:
    return f"{value:g}"


# ------------------------------------------------------------------------------------------------
# Arguments


def check_counts(
    num_samples: int | None,
    max_epochs: int | None,
    cpus_per_trial: float | None,
    gpus_per_trial: float | None,
    max_concurrent: int | None,
    time_budget_s: float | None,
    *,
    grace_period: int | None = None,
    reduction_factor: int | None = None,
    epoch_budget: int | None = None,
) -> None:
    """Range checks of the numeric flags (None means "choose a default")."""
    if num_samples is not None and num_samples < 1:
        raise SearchError(f"--num-samples must be >= 1, got {num_samples}")
    if max_epochs is not None and max_epochs < 1:
        raise SearchError(f"--max-epochs must be >= 1, got {max_epochs}")
    if cpus_per_trial is not None and not (cpus_per_trial > 0 and math.isfinite(cpus_per_trial)):
        raise SearchError(f"--cpus-per-trial must be > 0, got {cpus_per_trial:g}")
    if gpus_per_trial is not None:
        if not (gpus_per_trial >= 0 and math.isfinite(gpus_per_trial)):
            raise SearchError(f"--gpus-per-trial must be >= 0, got {gpus_per_trial:g}")
        if gpus_per_trial > 1:
            # nsm trains a trial on one GPU; Ray would reserve the others and leave them idle.
            raise SearchError(f"--gpus-per-trial must be at most 1 (a trial trains on one GPU), got {gpus_per_trial:g}")
    if max_concurrent is not None and max_concurrent < 1:
        raise SearchError(f"--max-concurrent must be >= 1, got {max_concurrent}")
    if time_budget_s is not None and not (time_budget_s > 0 and math.isfinite(time_budget_s)):
        raise SearchError(f"--time-budget-s must be > 0, got {time_budget_s:g}")
    if grace_period is not None and grace_period < 1:
        raise SearchError(f"--grace-period must be >= 1, got {grace_period}")
    if reduction_factor is not None and reduction_factor < 2:
        raise SearchError(f"--reduction-factor must be >= 2, got {reduction_factor}")
    if epoch_budget is not None and epoch_budget < 1:
        raise SearchError(f"--epoch-budget must be >= 1, got {epoch_budget}")


def check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or os.sep in name or name.startswith("."):
        raise SearchError(f"--name must be a plain directory name, got {name!r}")


def check_storage_path(storage_path: str) -> None:
    """A directory (created if missing) or a URI that pyarrow can open, as Ray's ``storage_path`` accepts."""
    if storage.is_uri(storage_path):
        storage.check_storage_uri(storage_path)
        return
    if os.path.exists(storage_path) and not os.path.isdir(storage_path):
        raise SearchError(f"--storage-path {storage_path} exists and is not a directory")


def check_address(address: str) -> None:
    """Fail fast on a cluster address nobody answers at (``auto`` is checked by ``ray.init``)."""
    if address == "auto":
        return
    target = address if "://" in address else f"ray://{address}"
    parts = urlsplit(target)
    if parts.scheme != "ray" or not parts.hostname or parts.port is None:
        raise SearchError(f"--address must be 'auto', 'ray://host:port' or 'host:port', got {address!r}")
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=3):
            pass
    except OSError as error:
        raise SearchError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}") from None


def check_connected_cluster(address: str | None) -> None:
    """In a process already connected to Ray, fail unless that is the cluster ``--address`` names.

    A notebook or a script that called ``ray.init()`` before the search would otherwise run the
    search on its own session, not on the cluster asked for. ``auto`` accepts any session.
    """
    import ray

    if address is None or address == "auto":
        return
    client = address.startswith("ray://")
    if client and ray.util.client.ray.is_connected():
        return  # a Ray Client session; its server-side address is not visible to compare
    connected = ray.get_runtime_context().gcs_address
    if not client and _same_host_port(connected, address):
        return
    raise SearchError(f"this process is already connected to the Ray cluster at {connected}, not to "
                      f"--address {address}; call ray.shutdown() first or run the search in a new process")


def _same_host_port(a: str, b: str) -> bool:
    def resolved(address: str) -> tuple[str, int | None]:
        parts = urlsplit(f"ray://{address}")
        try:
            return socket.gethostbyname(parts.hostname or ""), parts.port
        except OSError:
            return parts.hostname or "", parts.port

    return resolved(a) == resolved(b)


# ------------------------------------------------------------------------------------------------
# Resources


def local_resources() -> ClusterResources:
    """This machine, as a Ray cluster started here would see it (before starting it)."""
    cpus = float(os.cpu_count() or 1)
    gpus = float(_local_gpu_count())
    return ClusterResources(cpus=cpus, gpus=gpus, largest_node_cpus=cpus, largest_node_gpus=gpus)


def _local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def live_cluster_resources() -> ClusterResources:
    """The connected Ray cluster's totals and its largest node."""
    import ray

    alive = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if not alive:
        totals = ray.cluster_resources()
        alive = [totals]
    return ClusterResources(
        cpus=sum(node.get("CPU", 0.0) for node in alive),
        gpus=sum(node.get("GPU", 0.0) for node in alive),
        largest_node_cpus=max(node.get("CPU", 0.0) for node in alive),
        largest_node_gpus=max(node.get("GPU", 0.0) for node in alive),
        nodes=len(alive),
    )


def check_trial_resources(cpus_per_trial: float, gpus_per_trial: float, resources: ClusterResources) -> None:
    """A trial must fit on one node, or Ray would keep it PENDING forever."""
    if gpus_per_trial > 0 and resources.gpus == 0:
        raise SearchError(
            f"--gpus-per-trial {_fmt(gpus_per_trial)} requested but the cluster has no GPU "
            f"(it has {resources.describe()}); use --gpus-per-trial 0"
        )
    if gpus_per_trial > resources.largest_node_gpus:
        raise SearchError(
            f"--gpus-per-trial {_fmt(gpus_per_trial)} is more than any node has "
            f"(largest node: {_fmt(resources.largest_node_gpus)} GPUs; cluster: {resources.describe()})"
        )
    if cpus_per_trial > resources.largest_node_cpus:
        raise SearchError(
            f"--cpus-per-trial {_fmt(cpus_per_trial)} is more than any node has "
            f"(largest node: {_fmt(resources.largest_node_cpus)} CPUs; cluster: {resources.describe()})"
        )


def choose_budget(
    resources: ClusterResources,
    num_samples: int | None,
    max_epochs: int | None,
    cpus_per_trial: float | None,
    gpus_per_trial: float | None,
    max_concurrent: int | None,
) -> TrialBudget:
    """Fill unset flags: a full budget on GPUs (a quarter GPU per trial), a ~10-minute one on CPUs."""
    if gpus_per_trial is None:
        gpus_per_trial = DEFAULT_GPUS_PER_TRIAL if resources.gpus > 0 else 0.0
    uses_gpu = gpus_per_trial > 0
    defaults = GPU_BUDGET if uses_gpu else CPU_BUDGET
    if cpus_per_trial is None:
        if uses_gpu:
            trials_per_node = max(1, int(resources.largest_node_gpus / gpus_per_trial))
            cpus_per_trial = float(max(1, min(MAX_DEFAULT_CPUS_PER_GPU_TRIAL, int(resources.largest_node_cpus // trials_per_node))))
        else:
            cpus_per_trial = 1.0
    if max_concurrent is None:
        # As many trials as fit at once: more would only queue, and fewer pending trials let
        # TPE learn from finished ones sooner.
        fit = int(resources.cpus // cpus_per_trial) if cpus_per_trial > 0 else 1
        if uses_gpu:
            fit = min(fit, int(resources.gpus / gpus_per_trial + 1e-9))
        max_concurrent = max(1, fit)
    return TrialBudget(
        num_samples=num_samples if num_samples is not None else defaults["num_samples"],
        max_epochs=max_epochs if max_epochs is not None else defaults["max_epochs"],
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent,
    )


def asha_grace_period(max_epochs: int) -> int:
    """Epochs before ASHA may stop a trial: a quarter of the budget once epochs are plentiful.

    The NSM sits at chance for its first 2-4 epochs even at a good learning rate before it starts
    to learn (measured on planning); a grace period of 2 pruned exactly the best configs of a default
    search. 20 epochs -> 5, 50 -> 12; tiny budgets (test runs) start judging after the first epoch.
    """
    if max_epochs < 8:
        return 1
    return round(max_epochs / 4)
