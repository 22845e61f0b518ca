"""Train one NSM config: ``python -m nsm.train --domain planning --epochs 20 --out runs/x``.

The loop reads top to bottom: config, data, model, optimiser, then one epoch at a time
train -> evaluate -> report -> checkpoint. ``train()`` is also the seam the Ray trainable uses: it calls
``on_epoch`` after every epoch with the metrics (named exactly as ``nsm.METRIC_NAMES``) and a way to
write a checkpoint, and stops when the callback returns True.

Every epoch reseeds torch from (seed, epoch), so a run resumed from a checkpoint replays the same
batches and dropout masks as an uninterrupted one: on CPU the metrics are identical.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from nsm import METRIC_NAMES
from nsm.data import DOMAINS, load_domain
from nsm.errors import ConfigError
from nsm.model import NSM, count_parameters, cycle_loss

BASELINE = {"lr": 1e-4, "cycle_weight": 0.01, "batch_size": 64}
"""The research code's default config: every search evaluates it first and reports the gain over it."""


@dataclass
class TrainConfig:
    domain: str = "planning"
    lr: float = 3e-3
    cycle_weight: float = 0.01
    batch_size: int = 64
    epochs: int = 30
    hidden_dim: int = 64
    num_bases: int = 8
    pool_ratio: float = 0.5
    dropout: float = 0.1
    weight_decay: float = 1e-5
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    seed: int = 0
    num_graphs: int = 2000
    device: str = "auto"  # "auto": CUDA when available (TF32 on), else CPU
    save_every: int = 10  # write checkpoint_epoch_N.pt every N epochs; 0 disables
    eval_every: int = 1  # evaluate on val every N epochs (and always on the last)
    data_root: str | None = None  # dataset cache directory; None: the user cache dir

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
        converted = {}
        for name, value in values.items():
            converted[name] = _coerce(name, value, known[name].type, source)
        config = cls(**converted)
        config.validate(source)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, source: str = "config") -> None:
        checks = [
            (self.domain in DOMAINS, f"domain: unknown domain {self.domain!r} (choose from {', '.join(DOMAINS)})"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be > 0, got {self.lr}"),
            (self.cycle_weight >= 0 and math.isfinite(self.cycle_weight), f"cycle_weight must be >= 0, got {self.cycle_weight}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.hidden_dim >= 1, f"hidden_dim must be >= 1, got {self.hidden_dim}"),
            (self.num_bases >= 1, f"num_bases must be >= 1, got {self.num_bases}"),
            (0 < self.pool_ratio <= 1, f"pool_ratio must be in (0, 1], got {self.pool_ratio}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.num_graphs >= 1, f"num_graphs must be >= 1, got {self.num_graphs}"),
            (self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), f"device: unknown device {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{source}: {message}")


def _coerce(name: str, value: Any, annotation: str, source: str) -> Any:
    """Accept YAML/CLI values of the field's type; ints where floats are expected, nothing looser."""
    if annotation == "str | None":
        if value is None or isinstance(value, str):
            return value
    elif annotation == "str":
        if isinstance(value, str):
            return value
    elif annotation == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    raise ConfigError(f"{source}: {name} must be {annotation}, got {value!r}")


def load_config_file(path: str | Path) -> TrainConfig:
    """Read a .yaml/.yml/.json file of TrainConfig keys (an exported best config, a hand-written one)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {_first_line(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of config keys")
    return TrainConfig.from_dict(values, source=str(path))


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# ---------------------------------------------------------------------------------------------------
# Checkpoints


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an nsm checkpoint with ``weights_only=True``; a missing or corrupt file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise ConfigError(f"checkpoint {path} is corrupt or not an nsm checkpoint: {_first_line(error)}") from None
    missing = {"config", "model", "epoch"} - set(checkpoint) if isinstance(checkpoint, dict) else {"config"}
    if missing:
        raise ConfigError(f"checkpoint {path} is not an nsm checkpoint (missing {', '.join(sorted(missing))})")
    return checkpoint


def _save_atomically(payload: dict[str, Any], path: Path) -> Path:
    """Write to a temp file in the same directory, then rename, so a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_json(payload: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=True))
    os.replace(tmp, path)


def build_model(config: TrainConfig, num_node_features: int, num_relations: int) -> NSM:
    return NSM(
        num_node_features=num_node_features,
        num_relations=num_relations,
        hidden_dim=config.hidden_dim,
        num_bases=config.num_bases,
        pool_ratio=config.pool_ratio,
        dropout=config.dropout,
    )


def load_model(checkpoint: str | Path | dict[str, Any], device: str = "cpu") -> tuple[NSM, TrainConfig]:
    """Rebuild the model stored in a checkpoint (its ``model`` weights) in eval mode."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(checkpoint["config"], source="checkpoint config")
    shapes = checkpoint["model"]
    model = build_model(config, shapes["embed.weight"].shape[1], shapes["why_convs.0.coefficients"].shape[0] // 2)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), config


# ---------------------------------------------------------------------------------------------------
# Training


@dataclass
class EpochEnd:
    """What ``on_epoch`` receives after each epoch."""

    metrics: dict[str, float]  # exactly nsm.METRIC_NAMES
    status: str  # "running", or "diverged" on the last call of a run whose loss became NaN/inf
    _state: Callable[[], dict[str, Any]]

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write this epoch's checkpoint (config, model, optimiser, epoch, metrics, history) to ``path``."""
        return _save_atomically(self._state(), Path(path))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    return device


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


@torch.no_grad()
def predict(model: NSM, graphs: Sequence[Data], batch_size: int = 256, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities [N, 2] and labels [N] for ``graphs``, in order."""
    model.eval()
    probs, labels = [], []
    for batch in DataLoader(list(graphs), batch_size=batch_size):
        batch = batch.to(device)
        out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
        probs.append(out.logits.softmax(-1).cpu())
        labels.append(batch.y.view(-1).cpu())
    return torch.cat(probs), torch.cat(labels)


@torch.no_grad()
def evaluate(model: NSM, loader: DataLoader, cycle_weight: float, device: torch.device) -> dict[str, float]:
    """Loss, task and cycle loss, accuracy and per-class accuracy over one pass of ``loader``."""
    model.eval()
    task_sum = cycle_sum = 0.0
    graphs = nodes = 0
    correct = torch.zeros(2, dtype=torch.long)
    count = torch.zeros(2, dtype=torch.long)
    for batch in loader:
        batch = batch.to(device)
        out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
        y = batch.y.view(-1)
        task_sum += F.cross_entropy(out.logits, y, reduction="sum").item()
        cycle_sum += cycle_loss(out.reconstruction, batch.x).item() * batch.num_nodes
        hits = (out.logits.argmax(-1) == y).cpu()
        y = y.cpu()
        correct += torch.bincount(y[hits], minlength=2)[:2]
        count += torch.bincount(y, minlength=2)[:2]
        graphs += batch.num_graphs
        nodes += batch.num_nodes
    task = task_sum / max(graphs, 1)
    cycle = cycle_sum / max(nodes, 1)
    per_class = (correct.double() / count.clamp(min=1).double()).tolist()
    return {
        "loss": task + cycle_weight * cycle,
        "task_loss": task,
        "cycle_loss": cycle,
        "acc": correct.sum().item() / max(graphs, 1),
        "acc_class0": per_class[0],
        "acc_class1": per_class[1],
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
    if out is not None and resume is None and not overwrite and (out / "final_results.json").exists():
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


def _train(
    config: TrainConfig,
    out: Path | None,
    on_epoch: Callable[[EpochEnd], bool | None] | None,
    checkpoint: dict[str, Any] | None,
    device: torch.device,
    progress: bool,
) -> dict[str, Any]:
    # Data: deterministic per (domain, num_graphs, seed), cached on disk.
    data = load_domain(config.domain, num_graphs=config.num_graphs, seed=config.seed, root=config.data_root)
    eval_batch = max(config.batch_size, 256)
    val_loader = DataLoader(list(data.val), batch_size=eval_batch)
    test_loader = DataLoader(list(data.test), batch_size=eval_batch)

    # Model and optimiser.
    torch.manual_seed(config.seed)
    model = build_model(config, data.num_node_features, data.num_relations).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr * 0.05)
    history: list[dict[str, float]] = []
    best_val_acc, best_epoch, best_model_state, best_metrics = -1.0, 0, None, None
    start_epoch = 1
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        if "optimizer" in checkpoint:
            optimizer.load_state_dict(checkpoint["optimizer"])
        if "scheduler" in checkpoint:
            scheduler.load_state_dict(checkpoint["scheduler"])
        history = list(checkpoint.get("history", []))
        best_val_acc = float(checkpoint.get("best_val_acc", -1.0))
        best_epoch = int(checkpoint.get("best_epoch", 0))
        best_model_state = checkpoint.get("best_model")
        best_metrics = history[best_epoch - 1] if 0 < best_epoch <= len(history) else None
        start_epoch = int(checkpoint["epoch"]) + 1
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    def state(epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "config": config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "metrics": metrics,
            "history": history,
            "best_val_acc": best_val_acc,
            "best_epoch": best_epoch,
            "best_model": best_model_state,
        }

    status = "completed"
    started = time.perf_counter()
    val_metrics: dict[str, float] | None = history[-1] if history else None
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_started = time.perf_counter()
        torch.manual_seed(_epoch_seed(config.seed, epoch))
        order = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
        train_loader = DataLoader(list(data.train), batch_size=config.batch_size, shuffle=True, generator=order)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        model.train()
        task_sum = cycle_sum = 0.0
        correct = graphs = nodes = 0
        diverged = False
        batches = tqdm(train_loader, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=not progress)
        for batch in batches:
            batch = batch.to(device)
            out_batch = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
            y = batch.y.view(-1)
            task = F.cross_entropy(out_batch.logits, y)
            cycle = cycle_loss(out_batch.reconstruction, batch.x)
            loss = task + config.cycle_weight * cycle
            if not torch.isfinite(loss):
                diverged = True  # the step would poison the weights; stop here and report
                task_sum, cycle_sum = math.nan, math.nan
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            task_sum += task.item() * batch.num_graphs
            cycle_sum += cycle.item() * batch.num_nodes
            correct += int((out_batch.logits.argmax(-1) == y).sum())
            graphs += batch.num_graphs
            nodes += batch.num_nodes
            batches.set_postfix(loss=f"{loss.item():.4f}")
        train_time = time.perf_counter() - epoch_started
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step()

        if diverged or epoch % config.eval_every == 0 or epoch == config.epochs or val_metrics is None:
            evaluated = evaluate(model, val_loader, config.cycle_weight, device)
            val_metrics = {f"val_{name}": value for name, value in evaluated.items()}
        train_task = task_sum / max(graphs, 1)
        train_cycle = cycle_sum / max(nodes, 1)
        metrics = {
            "epoch": epoch,
            "train_loss": train_task + config.cycle_weight * train_cycle,
            "train_task_loss": train_task,
            "train_cycle_loss": train_cycle,
            "train_acc": correct / max(graphs, 1),
            **{name: val_metrics[name] for name in METRIC_NAMES if name.startswith("val_")},
            "lr": lr_now,
            "epoch_time_s": time.perf_counter() - epoch_started,
            "graphs_per_s": graphs / train_time if train_time > 0 else 0.0,
            "gpu_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0,
        }
        history.append(metrics)
        if not diverged and metrics["val_acc"] > best_val_acc:
            best_val_acc, best_epoch, best_metrics = metrics["val_acc"], epoch, metrics
            best_model_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
            if out is not None:
                _save_atomically(state(epoch, metrics), out / "best_model.pt")
        if out is not None:
            if config.save_every and epoch % config.save_every == 0 and not diverged:
                _save_atomically(state(epoch, metrics), out / f"checkpoint_epoch_{epoch}.pt")
            _write_json(history, out / "training_history.json")
        if progress:
            tqdm.write(
                f"epoch {epoch:3d}  loss {metrics['train_loss']:.4f}  train_acc {metrics['train_acc']:.3f}  "
                f"val_acc {metrics['val_acc']:.3f}  cycle {metrics['train_cycle_loss']:.4f}  "
                f"{metrics['graphs_per_s']:.0f} graphs/s"
            )

        frozen_epoch, frozen_metrics = epoch, metrics
        report = EpochEnd(metrics=dict(metrics), status="diverged" if diverged else "running",
                          _state=lambda: state(frozen_epoch, frozen_metrics))
        stop_requested = bool(on_epoch(report)) if on_epoch is not None else False
        if diverged:
            status = "diverged"
            break
        if stop_requested:
            status = "stopped"
            break

    # Test the best weights: the checkpoint a user would keep.
    if best_model_state is not None:
        model.load_state_dict(best_model_state)
    tested = evaluate(model, test_loader, config.cycle_weight, device)
    results = {
        "status": status,
        "config": config.to_dict(),
        "best_epoch": best_epoch,
        "best_metrics": best_metrics,
        "final_metrics": history[-1] if history else None,
        "test_metrics": {f"test_{name}": value for name, value in tested.items()},
        "epochs_run": len(history),
        "wall_time_s": time.perf_counter() - started,
        "num_parameters": count_parameters(model),
        "device": str(device),
    }
    if out is not None:
        _write_json(results, out / "final_results.json")
    return results


# ---------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nsm.train",
        description="Train one NSM config on a synthetic graph domain and write best_model.pt, "
        "checkpoint_epoch_N.pt, training_history.json and final_results.json.",
    )
    defaults = TrainConfig()
    helps = {
        "domain": f"graph domain: {', '.join(DOMAINS)}",
        "lr": "Adam learning rate (cosine-annealed to 5%% of it)",
        "cycle_weight": "weight of the cycle-consistency loss added to cross-entropy",
        "batch_size": "graphs per batch",
        "epochs": "training epochs",
        "hidden_dim": "hidden width of every level",
        "num_bases": "basis matrices shared by the relation weights",
        "pool_ratio": "fraction of nodes kept by each pooling step, in (0, 1]",
        "dropout": "dropout probability",
        "weight_decay": "Adam weight decay",
        "grad_clip": "max gradient norm (0 disables)",
        "seed": "seed of data generation, initialisation and batch order",
        "num_graphs": "graphs generated for the domain (split 70/15/15)",
        "device": "auto, cpu, cuda or cuda:N",
        "save_every": "write checkpoint_epoch_N.pt every N epochs (0 disables)",
        "eval_every": "evaluate on the validation split every N epochs",
        "data_root": "dataset cache directory (default: $NSM_DATA_DIR or ~/.cache/nsm-search)",
    }
    for field in dataclasses.fields(TrainConfig):
        kind = {"int": int, "float": float}.get(field.type, str)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", dest=field.name, type=kind, default=argparse.SUPPRESS,
            help=f"{helps[field.name]} (default: {getattr(defaults, field.name)})",
        )
    parser.add_argument("--config", type=Path, help="YAML/JSON file of config keys; flags given here override it")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: runs/<domain>-<UTC time>)")
    parser.add_argument("--resume", type=Path, help="continue from this checkpoint (checkpoint_epoch_N.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    return parser


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
        print(f"training {config.domain} on {resolve_device(config.device)}: lr {config.lr:g}, "
              f"cycle_weight {config.cycle_weight:g}, batch {config.batch_size}, {config.epochs} epochs -> {out}")
        results = train(config, out, resume=checkpoint, overwrite=overwrite, progress=True)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: python -m nsm.train --resume <{out}/checkpoint_epoch_N.pt>", file=sys.stderr)
        return 130
    best = results["best_metrics"] or {}
    print(
        f"{results['status']}: best val_acc {best.get('val_acc', float('nan')):.4f} at epoch {results['best_epoch']}, "
        f"test acc {results['test_metrics']['test_acc']:.4f}, {results['wall_time_s']:.1f} s\n"
        f"files: {out}/best_model.pt, training_history.json, final_results.json"
    )
    return 0 if results["status"] != "diverged" else 1


if __name__ == "__main__":
    sys.exit(main())
