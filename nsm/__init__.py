"""NSM workload: synthetic graph reasoning domains, the 3-level Neural Symbolic Model, and its trainer."""

from nsm.errors import ConfigError

METRIC_NAMES = (
    "epoch",
    "train_loss",
    "train_task_loss",
    "train_cycle_loss",
    "train_acc",
    "val_loss",
    "val_task_loss",
    "val_cycle_loss",
    "val_acc",
    "val_acc_class0",
    "val_acc_class1",
    "lr",
    "epoch_time_s",
    "graphs_per_s",
    "gpu_mem_mb",
)

__all__ = ["ConfigError", "METRIC_NAMES"]
