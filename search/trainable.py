"""The Ray Tune function trainable: one trial = one call of ``nsm.train.train``.

Each epoch it reports nsm's metrics (plus ``nsm_status``) with a checkpoint directory holding
``checkpoint.pt`` in nsm's format; a restarted trial resumes from ``ray.tune.get_checkpoint()``.
The trial's nsm run files (best_model.pt, training_history.json, final_results.json) are written to
its working directory, which Ray syncs into the trial directory (``SyncConfig(sync_artifacts=True)``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray import tune

from nsm import device as nsm_device
from nsm import train as nsm_train
from nsm.config import TrainConfig
from nsm.errors import first_line
from nsm.domains import task_of
from search.outcome import INFEASIBLE, STATUS_KEY

CHECKPOINT_FILE = "checkpoint.pt"
NODE_KEY = "node_id"  # which Ray node ran the trial: Ray's own node_ip is the same for nodes sharing a host
TRIAL_INFO_FILE = "trial.json"

logger = logging.getLogger(__name__)

_cuda: Any = torch.cuda  # tests stand a fake CUDA in for it

Reporter = Callable[[dict[str, Any], "tune.Checkpoint | None"], None]

HOLD_ENV = "NSM_SEARCH_TEST_HOLD"
"""``<epoch>:<folder>``, set only by the interruption tests. After reporting that epoch, the first trial
to get there runs on (so one trial can finish); every later one writes ``<folder>/held-<pid>`` (holding
its working directory's name) and waits until ``<folder>/release`` exists. A test can then interrupt
the driver while a trial is known to be running with that epoch logged, whatever the machine's speed."""


def train_nsm(config: dict[str, Any]) -> None:
    """Ray Tune function trainable around :func:`nsm.train.train` (use inside ``Tuner``)."""
    _quiet_ray_worker_logs()
    context = tune.get_context()
    resources = context.get_trial_resources().required_resources
    checkpoint = tune.get_checkpoint()
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = nsm_train.load_checkpoint(Path(directory) / CHECKPOINT_FILE)
    run_trial(
        config,
        out_dir=Path(context.get_storage().trial_working_directory),
        cpus=float(resources.get("CPU", 1.0)),
        gpus=float(resources.get("GPU", 0.0)),
        resume=resume,
        report=lambda metrics, ckpt: tune.report(metrics, checkpoint=ckpt),
    )


def run_trial(
    config: dict[str, Any],
    out_dir: Path,
    cpus: float,
    gpus: float,
    resume: dict[str, Any] | None,
    report: Reporter,
) -> dict[str, Any] | None:
    """Train ``config`` and report every epoch through ``report``; the Ray-free core of the trainable."""
    torch.set_num_threads(max(1, int(cpus)))
    train_config = TrainConfig.from_dict(config, source="trial config")
    train_config.device = _device_for(train_config.device, gpus)
    device = torch.device(train_config.device)
    # Ray packs fractional trials onto one GPU but does not enforce the fraction: cap this trial's
    # allocator below its share (room for its CUDA context), starting from an empty cache on a reused actor.
    memory_cap = nsm_device.prepare_trial_memory(device, gpus, cuda=_cuda)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"started_at": time.time(), "device": train_config.device, "cpus": cpus, "gpus": gpus,
            "resumed_from_epoch": int(resume["epoch"]) if resume else 0, "pid": os.getpid()}
    _write_info(out_dir, info)
    last_epoch = int(resume["epoch"]) if resume else 0
    node_id = _node_id()
    final_epoch_dir = tempfile.TemporaryDirectory(prefix="nsm-checkpoint-")
    final_report: list[dict[str, Any]] = []

    def on_epoch(end: nsm_train.EpochEnd) -> None:
        nonlocal last_epoch
        last_epoch = int(end.metrics["epoch"])
        metrics = {**end.metrics, STATUS_KEY: end.status, NODE_KEY: node_id}
        if end.status != "running":
            report(metrics, None)  # a diverged epoch's weights are not worth resuming from
            return
        if last_epoch >= train_config.epochs:
            # Reported after train() returns: a scheduler decision on this last result would stop
            # the trial before nsm writes final_results.json and tests the best weights.
            end.save_checkpoint(Path(final_epoch_dir.name) / CHECKPOINT_FILE)
            final_report.append(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="nsm-checkpoint-") as directory:
            end.save_checkpoint(Path(directory) / CHECKPOINT_FILE)
            report(metrics, tune.Checkpoint.from_directory(directory))
        _hold_for_tests(last_epoch, out_dir)

    try:
        results = nsm_train.train(train_config, out_dir=out_dir, on_epoch=on_epoch, resume=resume, overwrite=True)
        for metrics in final_report:
            report(metrics, tune.Checkpoint.from_directory(final_epoch_dir.name))
    except Exception as error:
        verdict = nsm_device.out_of_memory_verdict(error, device, memory_cap, cuda=_cuda)
        if verdict != nsm_device.INFEASIBLE:
            # Not out of memory, or memory taken by a neighbour or a fragmented cache: Ray's
            # FailureConfig retries the trial from its last checkpoint, on a clean cache.
            nsm_device.release_memory(device, cuda=_cuda)
            raise
        # Its own memory reached its cap: retrying cannot help, the config does not fit its GPU share.
        logger.warning("trial is infeasible, CUDA out of memory: %s", first_line(error))
        metrics = {name: math.nan for name in task_of(train_config.domain).epoch_metrics}
        # The epoch that failed, not the last one that finished: a result for an epoch already
        # recorded would replace that epoch's record (search.result_loggers).
        metrics.update(epoch=last_epoch + 1, **{STATUS_KEY: INFEASIBLE, NODE_KEY: node_id})
        report(metrics, None)
        results = None
    finally:
        final_epoch_dir.cleanup()
        info["ended_at"] = time.time()
        _write_info(out_dir, info)
    return results


def _hold_for_tests(epoch: int, out_dir: Path) -> None:
    spec = os.environ.get(HOLD_ENV)
    if not spec:
        return
    at, _, folder_text = spec.partition(":")
    if epoch != int(at):
        return
    folder = Path(folder_text)
    try:
        (folder / "passed").open("x").close()
        return  # the first trial here: it runs on
    except FileExistsError:
        pass
    (folder / f"held-{os.getpid()}").write_text(out_dir.name)
    while not (folder / "release").exists():
        time.sleep(0.05)


# Ray's trial workers log every persisted checkpoint at INFO ("Checkpoint successfully created at:
# ..."), once per epoch per trial, and forward it to the driver's console. Raised to WARNING in the
# worker itself: warnings and errors from these loggers still reach the console.
_CHATTY_WORKER_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")


def _quiet_ray_worker_logs() -> None:
    for name in _CHATTY_WORKER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _device_for(requested: str, gpus: float) -> str:
    """CPU unless Ray gave the trial a GPU that CUDA can actually see.

    A cluster may declare logical GPUs on a machine without CUDA (or a trial may get none); the
    trial then runs on CPU rather than failing.
    """
    if requested != "auto":
        return requested
    if gpus > 0 and _cuda.is_available():
        return "cuda"
    if gpus > 0:
        logger.warning("Ray assigned %g GPU to this trial but CUDA is not available here; training on CPU", gpus)
    return "cpu"


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _write_info(out_dir: Path, info: dict[str, Any]) -> None:
    (out_dir / TRIAL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
