"""The trainable's core (run_trial) without Ray: per-epoch reports with checkpoints, resume, NaN, OOM."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from nsm import METRIC_NAMES
from nsm import train as nsm_train
from search import trainable
from search.outcome import STATUS_KEY
from tests.fake_cuda import GiB, FakeCuda

TINY = {"domain": "planning", "lr": 3e-3, "cycle_weight": 0.01, "batch_size": 32, "epochs": 3,
        "hidden_dim": 16, "num_bases": 4, "num_graphs": 160, "save_every": 0}


class Recorder:
    """Collects reports; copies each checkpoint out before the trainable deletes its temp dir."""

    def __init__(self, tmp_path):
        self.reports, self.checkpoints, self.tmp_path = [], [], tmp_path

    def __call__(self, metrics, checkpoint):
        self.reports.append(metrics)
        if checkpoint is not None:
            target = self.tmp_path / f"ckpt_{len(self.reports)}"
            shutil.copytree(checkpoint.path, target)
            self.checkpoints.append(target / trainable.CHECKPOINT_FILE)


def test_reports_every_epoch_with_a_checkpoint_and_resumes(tmp_path):
    first = Recorder(tmp_path)
    out_dir = tmp_path / "trial"
    results = trainable.run_trial(TINY, out_dir, cpus=1, gpus=0, resume=None, report=first)
    assert results["status"] == "completed"
    assert [r["epoch"] for r in first.reports] == [1, 2, 3]
    assert set(METRIC_NAMES) <= set(first.reports[0]) and first.reports[0][STATUS_KEY] == "running"
    assert len(first.checkpoints) == 3 and all(path.is_file() for path in first.checkpoints)
    info = json.loads((out_dir / trainable.TRIAL_INFO_FILE).read_text())
    assert info["device"] == "cpu" and info["ended_at"] >= info["started_at"]
    assert (out_dir / "final_results.json").is_file() and (out_dir / "training_history.json").is_file()

    # Resume from epoch 1's checkpoint: training continues at epoch 2 exactly.
    resumed = Recorder(tmp_path / "second")
    (tmp_path / "second").mkdir()
    checkpoint = nsm_train.load_checkpoint(first.checkpoints[0])
    trainable.run_trial(TINY, tmp_path / "trial2", cpus=1, gpus=0, resume=checkpoint, report=resumed)
    assert [r["epoch"] for r in resumed.reports] == [2, 3]
    assert resumed.reports[-1]["val_acc"] == pytest.approx(first.reports[-1]["val_acc"])


def test_fractional_gpu_without_cuda_runs_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    recorder = Recorder(tmp_path)
    trainable.run_trial({**TINY, "epochs": 1}, tmp_path / "trial", cpus=1, gpus=0.25, resume=None, report=recorder)
    assert json.loads((tmp_path / "trial" / trainable.TRIAL_INFO_FILE).read_text())["device"] == "cpu"


def _on_a_fake_gpu(monkeypatch, peak_reserved, error):
    """run_trial on a stand-in CUDA device whose training raises ``error``; returns the stand-in."""
    fake = FakeCuda(total=40 * GiB, peak_reserved=peak_reserved)
    monkeypatch.setattr(trainable, "_cuda", fake)

    def fake_train(config, out_dir, on_epoch, resume, overwrite):
        assert config.device == "cuda"
        raise error

    monkeypatch.setattr(trainable.nsm_train, "train", fake_train)
    return fake


def test_out_of_memory_at_the_trials_cap_reports_infeasible_instead_of_raising(tmp_path, monkeypatch):
    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    fake = _on_a_fake_gpu(monkeypatch, peak_reserved=9 * GiB, error=error)  # a quarter GPU is ~9.5 GiB
    recorder = Recorder(tmp_path)
    assert trainable.run_trial(TINY, tmp_path / "trial", cpus=1, gpus=0.25, resume=None, report=recorder) is None
    (last,) = recorder.reports
    assert last[STATUS_KEY] == "infeasible" and math.isnan(last["val_acc"]) and last["epoch"] == 1
    assert recorder.checkpoints == []
    # The trial started from an empty cache, capped below its quarter by the CUDA context's margin.
    assert fake.calls[:3] == ["empty_cache", "reset_peak_memory_stats", ("fraction", pytest.approx(0.25 - 0.5 / 40))]


@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),  # a neighbour took the memory
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    ValueError("a bug"),
])
def test_other_failures_raise_for_rays_retry_on_a_clean_cache(tmp_path, monkeypatch, error):
    fake = _on_a_fake_gpu(monkeypatch, peak_reserved=1 * GiB, error=error)
    recorder = Recorder(tmp_path)
    with pytest.raises(type(error)):
        trainable.run_trial(TINY, tmp_path / "trial", cpus=1, gpus=0.25, resume=None, report=recorder)
    assert recorder.reports == []  # not marked infeasible for good
    assert fake.calls[-1] == "empty_cache"  # the retry on this actor starts clean


def test_diverged_epoch_is_reported_without_a_checkpoint(tmp_path, monkeypatch):
    def fake_train(config, out_dir, on_epoch, resume, overwrite):
        metrics = {name: 0.5 for name in METRIC_NAMES}
        on_epoch(nsm_train.EpochEnd(metrics={**metrics, "epoch": 1}, status="running", _state=lambda: {"epoch": 1}))
        on_epoch(nsm_train.EpochEnd(metrics={**metrics, "epoch": 2, "val_acc": math.nan}, status="diverged",
                                    _state=lambda: {"epoch": 2}))
        return {"status": "diverged"}

    monkeypatch.setattr(trainable.nsm_train, "train", fake_train)
    recorder = Recorder(tmp_path)
    trainable.run_trial(TINY, tmp_path / "trial", cpus=1, gpus=0, resume=None, report=recorder)
    assert [r[STATUS_KEY] for r in recorder.reports] == ["running", "diverged"]
    assert len(recorder.checkpoints) == 1
