"""Each trial's W&B run summarises every ranking metric by its registered direction (and its last value)."""

from __future__ import annotations

import json

import wandb

from search.wandb_logging import define_summaries

from .test_search import item_key, read_wandb_records


def test_run_summary_holds_the_best_value_in_the_metrics_direction(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = wandb.init(project="summaries", dir=str(tmp_path), mode="offline",
                     settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True))
    define_summaries(run)  # what the trial's logging actor runs right after wandb.init
    for step, (acc, loss, memory) in enumerate([(0.5, 1.0, 30.0), (0.9, 0.5, 10.0), (0.7, 0.8, 20.0)]):
        run.log({"epoch": step + 1, "val_acc": acc, "val_loss": loss, "gpu_mem_mb": memory}, step=step)
    run.finish()
    wandb.teardown()
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    summary = {}
    for record in read_wandb_records(log):
        if record.WhichOneof("record_type") == "summary":
            summary.update({item_key(item): json.loads(item.value_json) for item in record.summary.update})
    assert summary["val_acc"] == {"max": 0.9, "last": 0.7}
    assert summary["val_loss"] == {"min": 0.5, "last": 0.8}
    assert summary["gpu_mem_mb"] == {"min": 10.0, "last": 20.0}
    assert summary["epoch"] == 3  # bookkeeping: its last value only
