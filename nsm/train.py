"""Train one NSM config: ``python -m nsm.train --domain planning --epochs 20 --out runs/x``.

The loop reads top to bottom: config, data, model, optimiser, then one epoch at a time
train -> evaluate -> report -> checkpoint. ``train()`` is also the seam the Ray trainable uses: it calls
``on_epoch`` after every epoch with the metrics (named exactly as ``nsm.METRIC_NAMES``) and a way to
write a checkpoint, and stops when the callback returns True.

Every epoch reseeds torch from (seed, epoch), so a run resumed from a checkpoint replays the same
batches and dropout masks as an uninterrupted one: on CPU the metrics are identical.

Two tasks share the loop (``nsm.domains.task_of``): graph classification on the synthetic domains,
and link prediction on GraIL's splits (``python -m nsm.train --domain WN18RR_v1``). Link prediction
trains the same 2-class cross-entropy on each training triple's enclosing subgraph against its
corruption's (the model scores ``logit_1 - logit_0``), validates every epoch on the validation AUC
pairs (loss, accuracy, ``val_auc_pr``) and ranking lists (``val_hits_at_10``, ``val_mrr``), keeps
the weights with the best ``val_mrr`` (the task's default metric), and tests them by GraIL's
protocol; ``final_results.json`` also holds the PageRank shortcut's test metrics on the same
candidates (``shortcut_metrics``, :mod:`nsm.ppr`). The candidates are fixed (data seed 0 whatever
``seed`` is), so runs with different seeds and methods are scored on the same lists.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from nsm.checkpoint import (
    BEST_MODEL_FILE,
    HISTORY_FILE,
    RESULTS_FILE,
    epoch_checkpoint_file,
    load_checkpoint,
    load_model,
    model_args,
    save_checkpoint,
)
from nsm.config import BASELINE, TrainConfig, load_config_file
from nsm import device as nsm_device
from nsm.data import load_domain
from nsm.data.packed import PackedBatch, PackedGraphs
from nsm.domains import is_link_prediction, task_of
from nsm.errors import ConfigError
from nsm.files import write_json

from nsm.model import NSM, NSMOutput, count_parameters, cycle_loss
from nsm.ranking import auc_pr, hits_at_k, mrr

# The config surface and checkpoint loading live in nsm.config and nsm.checkpoint; they are also
# importable from here, where training scripts have always found them.
__all__ = [
    "BASELINE", "EpochEnd", "TrainConfig", "evaluate", "forward", "load_checkpoint", "load_config_file", "load_model",
    "main", "predict", "resolve_device", "train",
]


@dataclass
class EpochEnd:
    """What ``on_epoch`` receives after each epoch."""

    metrics: dict[str, float]  # exactly the task's epoch metrics (nsm.METRIC_NAMES for graph classification)
    status: str  # "running", or "diverged" on the last call of a run whose loss became NaN/inf
    _state: Callable[[], dict[str, Any]]

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write this epoch's checkpoint (config, model, optimiser, epoch, metrics, history) to ``path``."""
        return save_checkpoint(self._state(), Path(path))


def resolve_device(name: str) -> torch.device:
    """The training device (``auto``: CUDA when available); TF32 on for CUDA, on old and new torch alike."""
    return nsm_device.resolve_device(name)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def forward(model: NSM, batch: Batch | PackedBatch) -> NSMOutput:
    """The model on one batch: the one place that unpacks a batch into the model's inputs. A
    link-prediction model also reads each graph's roots and query relation."""
    if not model.num_query_relations:
        return model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=batch.num_graphs)
    return model(
        batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=batch.num_graphs,
        head_index=batch.head_index, tail_index=batch.tail_index, relation=batch.relation,
        root_relations=batch.root_relations if model.num_root_features else None,
        root_pagerank=batch.root_pagerank if model.root_pagerank else None,
    )


def link_scores(logits: torch.Tensor) -> torch.Tensor:
    """A triple's score from its two logits: the log-odds that it is true."""
    return logits[:, 1] - logits[:, 0]


@torch.no_grad()
def predict(model: NSM, graphs: Sequence[Data], batch_size: int = 256, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities [N, 2] and labels [N] for ``graphs``, in order."""
    model.eval()
    probs, labels = [], []
    for batch in DataLoader(list(graphs), batch_size=batch_size):
        batch = batch.to(device)
        probs.append(forward(model, batch).logits.softmax(-1).cpu())
        labels.append(batch.y.view(-1).cpu())
    return torch.cat(probs), torch.cat(labels)


@torch.no_grad()
def evaluate(model: NSM, loader: DataLoader, cycle_weight: float, device: torch.device) -> dict[str, float]:
    """Loss, task and cycle loss, accuracy and per-class accuracy over one pass of ``loader``."""
    return _evaluate_batches(model, loader, cycle_weight, device)[0]


def _evaluate_batches(
    model: NSM, batches: Iterable[Batch | PackedBatch], cycle_weight: float, device: torch.device
) -> tuple[dict[str, float], torch.Tensor]:
    """Loss, task and cycle loss, accuracy and per-class accuracy over ``batches``, and every graph's
    score (``link_scores``, in order, on the CPU).

    The sums stay on ``device`` and are read once at the end: a batch waits for the device only where
    the model does.
    """
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # task loss, cycle loss (times nodes)
    correct = torch.zeros(2, dtype=torch.long, device=device)
    count = torch.zeros(2, dtype=torch.long, device=device)
    graphs = nodes = 0
    scores = []
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            out = forward(model, batch)
            y = batch.y.view(-1)
            num_nodes = batch.x.size(0)
            sums[0] += F.cross_entropy(out.logits, y, reduction="sum")
            sums[1] += cycle_loss(out.reconstruction, batch.x) * num_nodes
            correct.index_add_(0, y, (out.logits.argmax(-1) == y).long())
            count.index_add_(0, y, torch.ones_like(y))
            graphs += batch.num_graphs
            nodes += num_nodes
            scores.append(link_scores(out.logits))
    task_sum, cycle_sum = sums.tolist()
    task = task_sum / max(graphs, 1)
    cycle = cycle_sum / max(nodes, 1)
    per_class = (correct.double() / count.clamp(min=1).double()).tolist()
    stats = {
        "loss": task + cycle_weight * cycle,
        "task_loss": task,
        "cycle_loss": cycle,
        "acc": int(correct.sum()) / max(graphs, 1),
        "acc_class0": per_class[0],
        "acc_class1": per_class[1],
    }
    return stats, torch.cat(scores).cpu() if scores else torch.zeros(0)


@torch.no_grad()
def score_link_part(
    model: NSM, pairs: PackedGraphs, ranking: PackedGraphs, num_candidates: int, cycle_weight: float,
    device: torch.device, batch_size: int = 256,
) -> dict[str, float]:
    """A link-prediction model on one part of GraIL's protocol: the classification statistics of the AUC
    pairs (``pairs``: true triples, then one corruption of each), their AUC-PR, and Hits@10 and MRR of
    the ranking lists (``ranking``: lists of ``num_candidates``, true triple first)."""
    stats, pair_scores = _evaluate_batches(model, pairs.batches(batch_size), cycle_weight, device)
    _, list_scores = _evaluate_batches(model, ranking.batches(batch_size), cycle_weight, device)
    half = pair_scores.numel() // 2
    lists = list_scores.view(-1, num_candidates)
    return {
        **stats,
        "auc_pr": auc_pr(pair_scores[:half], pair_scores[half:]),
        "hits_at_10": hits_at_k(lists, 10),
        "mrr": mrr(lists),
    }


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    on_epoch: Callable[[EpochEnd], bool | None] | None = None,
    resume: str | Path | dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``config``; return the final results (also written to ``out_dir/final_results.json``)."""
    config.validate()
    checkpoint = resume if isinstance(resume, dict) or resume is None else load_checkpoint(resume)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and resume is None and not overwrite and (out / RESULTS_FILE).exists():
        raise ConfigError(f"{out} already holds a finished run (pass --overwrite to replace it, or --resume)")
    device = resolve_device(config.device)
    with _deterministic_kernels(device):
        return _train(config, out, on_epoch, checkpoint, device, progress)


@contextlib.contextmanager
def _deterministic_kernels(device: torch.device) -> Iterator[None]:
    """On CPU, make scatter reductions deterministic so a resumed run matches an uninterrupted one bit
    for bit (multi-threaded scatter-add otherwise sums in a varying order); restored afterwards."""
    if device.type != "cpu":
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


# ---------------------------------------------------------------------------------------------------
# Training loop


def _train(
    config: TrainConfig,
    out: Path | None,
    on_epoch: Callable[[EpochEnd], bool | None] | None,
    checkpoint: dict[str, Any] | None,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    # Data: deterministic per (domain, num_graphs, seed) or per GraIL split, cached on disk.
    work = _LinkWorkload(config, device) if is_link_prediction(config.domain) else _GraphWorkload(config, device)
    run = _Run.start(config, work, device, checkpoint)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    status = "completed"
    started = time.perf_counter()
    val_metrics: dict[str, float] | None = run.history[-1] if run.history else None
    for epoch in range(run.start_epoch, config.epochs + 1):
        epoch_started = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trained = _train_epoch(run, work, epoch, device, progress)
        train_time = time.perf_counter() - epoch_started
        lr_now = run.optimizer.param_groups[0]["lr"]
        run.scheduler.step()

        if trained.diverged or epoch % config.eval_every == 0 or epoch == config.epochs or val_metrics is None:
            evaluated = work.evaluate(run.model, "val", device)
            val_metrics = {f"val_{name}": value for name, value in evaluated.items()}
        metrics = {
            "epoch": epoch,
            **trained.averages(config.cycle_weight),
            **{name: val_metrics[name] for name in work.task.epoch_metrics if name.startswith("val_")},
            "lr": lr_now,
            "epoch_time_s": time.perf_counter() - epoch_started,
            "graphs_per_s": trained.graphs / train_time if train_time > 0 else 0.0,
            "gpu_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0,
        }
        improved = run.record(metrics, trained.diverged)
        if out is not None:
            _write_epoch_files(run, epoch, metrics, improved, trained.diverged, out)
        if progress:
            _print_epoch(metrics, work.task.default_metric)

        report = EpochEnd(metrics=dict(metrics), status="diverged" if trained.diverged else "running",
                          _state=functools.partial(run.state, epoch, metrics))
        stop_requested = bool(on_epoch(report)) if on_epoch is not None else False
        if trained.diverged:
            status = "diverged"
            break
        if stop_requested:
            status = "stopped"
            break
    return _finish(run, work, device, status, started, out)


class _GraphWorkload:
    """Graph classification on a synthetic domain: each split packed once and kept on the training device.

    Batches are gathered there by index (``PackedGraphs``, the same batches PyG's DataLoader builds),
    so an epoch neither collates on the host nor copies to the device.
    """

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.task = task_of(config.domain)
        self.data = load_domain(config.domain, num_graphs=config.num_graphs, seed=config.seed, root=config.data_root)
        self.num_node_features, self.num_relations = self.data.num_node_features, self.data.num_relations
        self.link_prediction = False
        self._eval_batch = max(config.batch_size, 256)
        self._parts = {part: _pack(graphs, device) for part, graphs in
                       (("train", self.data.train), ("val", self.data.val), ("test", self.data.test))}

    def train_batches(self, order: torch.Generator, epoch: int) -> Iterable[PackedBatch]:
        train = self._parts["train"]
        # The permutation PyG's DataLoader(shuffle=True, generator=order) draws.
        return train.batches(self.config.batch_size, torch.randperm(len(train), generator=order)) if train else ()

    def evaluate(self, model: NSM, part: str, device: torch.device) -> dict[str, float]:
        graphs = self._parts[part]
        batches = graphs.batches(self._eval_batch) if graphs else ()
        return _evaluate_batches(model, batches, self.config.cycle_weight, device)[0]

    def extra_results(self) -> dict[str, Any]:
        return {}


def _pack(graphs: Sequence[Data], device: torch.device) -> PackedGraphs | None:
    """A split on ``device``, or ``None`` for an empty one (a handful of graphs leaves a split empty)."""
    return PackedGraphs.from_data_list(graphs).to(device) if len(graphs) else None


GRAIL_DATA_SEED = 0
"""The seed of every GraIL split's corruptions and candidate lists: fixed, so that runs with different
``seed`` values, searches and the PPR shortcut are all scored on the same candidates."""

_LINK_DATA: dict[tuple[str, str | None, int, float], Any] = {}  # one load per process: a Ray worker that runs several trials reads the cache once

EXTRACTION_KEYS = ("train_corruptions", "train_graph_keep")
"""The config keys that decide a GraIL split's extracted training graphs: each combination is one cache file."""


def load_link_data(domain: str, data_root: str | None = None, train_corruptions: int = 1,
                   train_graph_keep: float = 1.0) -> Any:
    """The GraIL split ``domain`` with every enclosing subgraph (``nsm.data.grail.GrailData``), loaded
    once per process (the disk cache makes the first load of a process fast too). Validation and
    test are the same whatever the training graphs' keys (``EXTRACTION_KEYS``)."""
    from nsm.data.grail import load_grail

    key = (domain, data_root, train_corruptions, train_graph_keep)
    if key not in _LINK_DATA:
        _LINK_DATA[key] = load_grail(domain, data_root, seed=GRAIL_DATA_SEED, train_corruptions=train_corruptions,
                                     train_graph_keep=train_graph_keep)
    return _LINK_DATA[key]


def link_data_for(config: TrainConfig) -> Any:
    """``load_link_data`` for the split and extraction keys of ``config``."""
    return load_link_data(config.domain, config.data_root, config.train_corruptions, config.train_graph_keep)


class _LinkWorkload:
    """Link prediction on a GraIL split: packed enclosing subgraphs kept on the training device."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.task = task_of(config.domain)
        self.data = link_data_for(config)
        self.num_node_features, self.num_relations = self.data.num_node_features, self.data.num_relations
        self.link_prediction = True
        self._eval_batch = max(config.batch_size, 256)
        train = self.data.train if config.train_pathless_facts else self.data.training_pairs_with_paths()
        self._train = train.to(device)
        self._parts = {
            "val": (self.data.valid.to(device), self.data.valid_ranking.to(device)),
            "test": (self.data.test.to(device), self.data.test_ranking.to(device)),
        }

    def epoch_pairs(self, epoch: int) -> torch.Tensor:
        """Indices into the training graphs of epoch ``epoch`` (from 1): every fact, then its corruption of
        block ``(epoch - 1) mod K``. With one block that is every training graph, in stored order."""
        corruptions = self.data.train_corruptions
        facts = len(self._train) // (1 + corruptions)
        block = 1 + (epoch - 1) % corruptions
        return torch.cat([torch.arange(facts), torch.arange(block * facts, (block + 1) * facts)])

    def train_batches(self, order: torch.Generator, epoch: int) -> Iterable[PackedBatch]:
        pairs = self.epoch_pairs(epoch)
        return self._train.batches(self.config.batch_size, pairs[torch.randperm(len(pairs), generator=order)])

    def evaluate(self, model: NSM, part: str, device: torch.device) -> dict[str, float]:
        pairs, ranking = self._parts[part]
        return score_link_part(model, pairs, ranking, self.data.num_candidates, self.config.cycle_weight, device,
                               self._eval_batch)

    def extra_results(self) -> dict[str, Any]:
        """The PageRank shortcut on the same test candidates, so a result is never read without it."""
        from nsm import ppr

        return {"shortcut_metrics": ppr.evaluate(self.data.protocol, "test")}


@dataclass
class _Run:
    """Everything a checkpoint holds: the model, its optimiser and schedule, the history, the best weights."""

    config: TrainConfig
    model_args: dict[str, Any]
    model: NSM
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start_epoch: int = 1
    history: list[dict[str, float]] = field(default_factory=list)
    best_value: float = -1.0  # of select_metric (maximised)
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    select_metric: str = "val_acc"  # the task's default metric: which epoch's weights are kept and tested

    @classmethod
    def start(cls, config: TrainConfig, work: _GraphWorkload | _LinkWorkload, device: torch.device,
              checkpoint: dict[str, Any] | None) -> _Run:
        """A fresh run seeded by ``config.seed``, or the run ``checkpoint`` holds, continued."""
        torch.manual_seed(config.seed)
        arguments = model_args(config, work.num_node_features, work.num_relations, work.link_prediction)
        model = NSM(**arguments).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr * 0.05)
        run = cls(config, arguments, model, optimizer, scheduler, select_metric=work.task.default_metric)
        if checkpoint is None:
            return run
        model.load_state_dict(checkpoint["model"])
        if "optimizer" in checkpoint:
            optimizer.load_state_dict(checkpoint["optimizer"])
        if "scheduler" in checkpoint:
            scheduler.load_state_dict(checkpoint["scheduler"])
        run.start_epoch = int(checkpoint["epoch"]) + 1
        run.history = list(checkpoint.get("history", []))
        run.best_value = float(checkpoint.get("best_value", checkpoint.get("best_val_acc", -1.0)))
        run.best_epoch = int(checkpoint.get("best_epoch", 0))
        run.best_model = checkpoint.get("best_model")
        return run

    @property
    def best_metrics(self) -> dict[str, float] | None:
        return next((metrics for metrics in self.history if metrics["epoch"] == self.best_epoch), None)

    def record(self, metrics: dict[str, float], diverged: bool) -> bool:
        """Append an epoch to the history; whether its ``select_metric`` is the best so far (ties keep the first)."""
        self.history.append(metrics)
        if diverged or not metrics[self.select_metric] > self.best_value:
            return False
        self.best_value, self.best_epoch = metrics[self.select_metric], int(metrics["epoch"])
        self.best_model = {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}
        return True

    def state(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """The checkpoint of ``epoch`` (see :mod:`nsm.checkpoint` for its keys)."""
        return {
            "config": self.config.to_dict(),
            "model_args": self.model_args,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "metrics": metrics,
            "history": self.history,
            "best_metric": self.select_metric,
            "best_value": self.best_value,
            # The key older checkpoints (and tools reading them) know: the best value of the kept metric.
            "best_val_acc": self.best_value,
            "best_epoch": self.best_epoch,
            "best_model": self.best_model,
        }


@dataclass
class _EpochSums:
    """Running sums over one training epoch, read from the device once (``read``); ``diverged`` once a
    batch's loss is NaN/inf."""

    task: float = 0.0
    cycle: float = 0.0
    correct: int = 0
    graphs: int = 0
    nodes: int = 0
    diverged: bool = False

    def read(self, on_device: torch.Tensor) -> None:
        """Take the task loss, cycle loss and correct count that the epoch summed on the device."""
        if not self.diverged:
            task, cycle, correct = on_device.tolist()
            self.task, self.cycle, self.correct = task, cycle, int(correct)

    def averages(self, cycle_weight: float) -> dict[str, float]:
        task = self.task / max(self.graphs, 1)
        cycle = self.cycle / max(self.nodes, 1)
        return {
            "train_loss": task + cycle_weight * cycle,
            "train_task_loss": task,
            "train_cycle_loss": cycle,
            "train_acc": self.correct / max(self.graphs, 1),
        }


def _train_epoch(run: _Run, work: _GraphWorkload | _LinkWorkload, epoch: int, device: torch.device, progress: bool) -> _EpochSums:
    """One pass over the training split, in the batch order and dropout masks of (seed, epoch)."""
    config, model, optimizer = run.config, run.model, run.optimizer
    torch.manual_seed(_epoch_seed(config.seed, epoch))
    order = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
    loader = work.train_batches(order, epoch)
    model.train()
    sums = _EpochSums()
    on_device = torch.zeros(3, dtype=torch.float64, device=device)  # task loss, cycle loss, correct
    # disable=None: tqdm draws only on a terminal, so a log file gets no carriage-return redraws.
    batches = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=None if progress else True)
    for batch in batches:
        batch = batch.to(device)
        out = forward(model, batch)
        y = batch.y.view(-1)
        task = F.cross_entropy(out.logits, y)
        cycle = cycle_loss(out.reconstruction, batch.x)
        loss = task + config.cycle_weight * cycle
        if not torch.isfinite(loss):
            sums.diverged = True  # the step would poison the weights; stop here and report
            sums.task, sums.cycle = math.nan, math.nan
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        with torch.no_grad():
            hits = (out.logits.argmax(-1) == y).sum().to(on_device.dtype)
            on_device += torch.stack([task.double() * batch.num_graphs, cycle.double() * batch.x.size(0), hits])
        sums.graphs += batch.num_graphs
        sums.nodes += batch.x.size(0)
        if not batches.disable:
            batches.set_postfix(loss=f"{loss.item():.4f}")  # a terminal is watching: worth one read
    sums.read(on_device)
    return sums


def _write_epoch_files(run: _Run, epoch: int, metrics: dict[str, float], improved: bool, diverged: bool, out: Path) -> None:
    """best_model.pt when the epoch is the best so far, the periodic checkpoint, the history so far."""
    if improved:
        save_checkpoint(run.state(epoch, metrics), out / BEST_MODEL_FILE)
    if run.config.save_every and epoch % run.config.save_every == 0 and not diverged:
        save_checkpoint(run.state(epoch, metrics), out / epoch_checkpoint_file(epoch))
    write_json(out / HISTORY_FILE, run.history, trailing_newline=False)


def _print_epoch(metrics: dict[str, float], select_metric: str = "val_acc") -> None:
    shown = dict.fromkeys(["val_acc", select_metric, *(["val_hits_at_10"] if "val_hits_at_10" in metrics else [])])
    tqdm.write(
        f"epoch {metrics['epoch']:3d}  loss {metrics['train_loss']:.4f}  train_acc {metrics['train_acc']:.3f}  "
        + "".join(f"{name} {metrics[name]:.3f}  " for name in shown)
        + f"cycle {metrics['train_cycle_loss']:.4f}  {metrics['graphs_per_s']:.0f} graphs/s  {metrics['epoch_time_s']:.1f} s"
    )


def _finish(run: _Run, work: _GraphWorkload | _LinkWorkload, device: torch.device, status: str, started: float,
            out: Path | None) -> dict[str, Any]:
    """Test the best weights (the checkpoint a user would keep) and write final_results.json."""
    if run.best_model is not None:
        run.model.load_state_dict(run.best_model)
    tested = work.evaluate(run.model, "test", device)
    test_names = work.task.test_metrics
    results = {
        "status": status,
        "config": run.config.to_dict(),
        "best_epoch": run.best_epoch,
        "best_metrics": run.best_metrics,
        "final_metrics": run.history[-1] if run.history else None,
        "test_metrics": {f"test_{name}": value for name, value in tested.items() if f"test_{name}" in test_names},
        **work.extra_results(),
        "epochs_run": len(run.history),
        "wall_time_s": time.perf_counter() - started,
        "num_parameters": count_parameters(run.model),
        "device": str(device),
    }
    if out is not None:
        write_json(out / RESULTS_FILE, results, trailing_newline=False)
    return results


# ---------------------------------------------------------------------------------------------------
# CLI


def boolean(text: str) -> bool:
    """A flag's ``true``/``false`` (also ``yes``/``no``, ``1``/``0``, any case); argparse names this
    function in its one-line error for any other word."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.lower() not in words:
        raise ValueError(text)
    return words[text.lower()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nsm.train",
        description="Train one NSM config on a synthetic graph domain or a GraIL split (link prediction) and write best_model.pt, "
        "checkpoint_epoch_N.pt, training_history.json and final_results.json.",
    )
    defaults = TrainConfig()
    for key in dataclasses.fields(TrainConfig):
        kind = {"int": int, "float": float, "bool": boolean}.get(key.type, str)
        default = getattr(defaults, key.name)
        parser.add_argument(
            f"--{key.name.replace('_', '-')}", dest=key.name, type=kind, default=argparse.SUPPRESS,
            help=f"{key.metadata['help']} (default: {str(default).lower() if kind is boolean else default})",
            **({"metavar": "{true,false}"} if kind is boolean else {}),
        )
    parser.add_argument("--config", type=Path, help="YAML/JSON file of config keys; flags given here override it")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: runs/<domain>-<UTC time>)")
    parser.add_argument("--resume", type=Path, help="continue from this checkpoint (checkpoint_epoch_N.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    return parser


def _describe(config: TrainConfig) -> str:
    """The baseline's keys and every other key that differs from its default, e.g. a searched dropout."""
    defaults = TrainConfig()
    shown = [*BASELINE, *(key.name for key in dataclasses.fields(TrainConfig)
                          if key.name not in (*BASELINE, "domain", "epochs", "device", "data_root")
                          and getattr(config, key.name) != getattr(defaults, key.name))]
    values = (getattr(config, key) for key in shown)
    return ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}" for key, value in zip(shown, values))


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    config_file, out, resume, overwrite = (args.pop(key) for key in ("config", "out", "resume", "overwrite"))
    try:
        values = load_config_file(config_file).to_dict() if config_file else {}
        checkpoint = None
        if resume is not None:
            checkpoint = load_checkpoint(resume)
            values = {**checkpoint["config"], **values}
        config = TrainConfig.from_dict({**values, **args}, source="--config" if config_file else "arguments")
        if out is None:
            out = Path("runs") / f"{config.domain}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        print(f"training {config.domain} on {resolve_device(config.device)}: {_describe(config)}, "
              f"{config.epochs} epochs -> {out}")
        results = train(config, out, resume=checkpoint, overwrite=overwrite, progress=True)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: python -m nsm.train --resume <{out}/checkpoint_epoch_N.pt>", file=sys.stderr)
        return 130
    best = results["best_metrics"] or {}
    task = task_of(config.domain)
    tested = results["test_metrics"]
    test_text = ", ".join(f"{name} {tested[name]:.4f}" for name in ("test_acc", "test_auc_pr", "test_hits_at_10", "test_mrr") if name in tested)
    shortcut = results.get("shortcut_metrics")
    if shortcut:
        test_text += "; PPR shortcut " + ", ".join(f"{name} {value:.4f}" for name, value in shortcut.items())
    print(
        f"{results['status']}: best {task.default_metric} {best.get(task.default_metric, float('nan')):.4f} at epoch "
        f"{results['best_epoch']}, {test_text}, {results['wall_time_s']:.1f} s\n"
        f"files: {out}/{BEST_MODEL_FILE}, {HISTORY_FILE}, {RESULTS_FILE}"
    )
    return 0 if results["status"] != "diverged" else 1


if __name__ == "__main__":
    sys.exit(main())
