"""A search joins an existing multi-node Ray cluster (``--address``) and uses every node.

Two nodes on this machine (``ray.cluster_utils.Cluster``), each declaring one logical GPU backed by
CPU: at ``--gpus-per-trial 0.5`` Ray places trials on both nodes at once, and all results land in the
one experiment directory under the shared ``--storage-path``.
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import pytest
import ray
from ray import tune
from ray.cluster_utils import Cluster

from search.run import main

from .conftest import start_test_ray, write_tiny_space

NUM_TRIALS = 4
# Trials must outlast the start of the others' actors (seconds on 2 cores), or reused actors on the
# head node can run all four one after another and the worker is never needed (seen in CI).
EPOCHS = 5


@pytest.fixture
def two_node_cluster():
    # The search must connect to this cluster, so this process may not hold another Ray session
    # (the other tests' in-process one is put back afterwards).
    had_session = ray.is_initialized()
    ray.shutdown()
    # A private Ray temp dir: Cluster() records its address in <temp>/ray/ray_current_cluster, where a
    # plain ray.init() elsewhere on this machine would otherwise find and join it. Short, for Ray's
    # unix-socket path limit.
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="nsm-rc-", dir="/tmp"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1})
    worker = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster, {cluster.head_node.node_id, worker.node_id}
    finally:
        cluster.shutdown()
        monkeypatch.undo()
        if had_session:
            start_test_ray()


def test_a_search_refuses_an_address_other_than_the_session_it_runs_in(ray_session, tmp_path: Path, capsys) -> None:
    # Something answers at the address (preflight connects to it), but it is not this process's cluster.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        code = main(["--domain", "planning", "--address", address, "--storage-path", str(tmp_path),
                     "--name", "elsewhere", "--wandb", "disabled"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already connected to the Ray cluster at" in err[0] and address in err[0], err
    assert not (tmp_path / "elsewhere").exists()


def test_search_uses_both_nodes_of_an_existing_cluster(two_node_cluster, tmp_path: Path) -> None:
    cluster, node_ids = two_node_cluster
    space = write_tiny_space(tmp_path / "tiny.yaml", num_graphs=800)
    storage = tmp_path / "shared"

    code = main([
        "--domain", "planning", "--address", cluster.address, "--gpus-per-trial", "0.5",
        "--cpus-per-trial", "1", "--num-samples", str(NUM_TRIALS), "--max-epochs", str(EPOCHS),
        "--scheduler", "none", "--space", str(space), "--storage-path", str(storage),
        "--name", "on-cluster", "--wandb", "disabled",
    ])

    assert code == 0
    experiment = storage / "on-cluster"
    analysis = tune.ExperimentAnalysis(str(experiment))
    assert len(analysis.trials) == NUM_TRIALS
    assert all(trial.status == "TERMINATED" for trial in analysis.trials)

    # Every trial reports the node it ran on: both nodes took trials.
    ran_on = {trial.trial_id: trial.last_result["node_id"] for trial in analysis.trials}
    assert set(ran_on.values()) == node_ids

    # ... at the same time: some trial on one node overlaps in time with one on the other.
    spans = {trial.trial_id: _span(Path(trial.path)) for trial in analysis.trials}
    assert any(
        ran_on[a] != ran_on[b] and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
        for a in spans for b in spans
    ), f"no two trials on different nodes overlapped: {spans}"

    # One experiment directory holds everything, whichever node a trial ran on.
    for trial in analysis.trials:
        trial_dir = Path(trial.path)
        assert trial_dir.parent == experiment
        assert (trial_dir / "final_results.json").is_file()
        assert len((trial_dir / "result.json").read_text().splitlines()) == EPOCHS  # one line per epoch
    summary = json.loads((experiment / "summary.json").read_text())
    assert summary["num_trials"] == NUM_TRIALS


def _span(trial_dir: Path) -> tuple[float, float]:
    """(first, last) wall time of a trial, from Ray's per-epoch results (timestamp minus the epoch's time)."""
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    return rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]
