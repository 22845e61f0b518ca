"""nsm checkpoints and the other files of a run directory: names, atomic writes, model rebuilding.

A checkpoint is a dict of plain values and tensors, so it loads with ``torch.load(weights_only=True)``:

- ``config``: the run's :class:`nsm.config.TrainConfig` as a dict;
- ``model_args``: the keyword arguments the model was constructed with (as nanoGPT stores them), so
  :func:`load_model` rebuilds exactly that model;
- ``model``, ``optimizer``, ``scheduler``: state dicts; ``epoch``, ``metrics`` and ``history`` (the
  epochs so far);
- ``best_val_acc``, ``best_epoch``, ``best_model``: the best weights so far, which a resumed run keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nsm.config import TrainConfig
from nsm.errors import ConfigError, first_line
from nsm.files import atomic_write
from nsm.model import NSM

BEST_MODEL_FILE = "best_model.pt"
HISTORY_FILE = "training_history.json"
RESULTS_FILE = "final_results.json"
REQUIRED_KEYS = ("config", "model", "epoch")


def epoch_checkpoint_file(epoch: int) -> str:
    """``checkpoint_epoch_N.pt``: the periodic checkpoint of epoch N (``save_every``)."""
    return f"checkpoint_epoch_{epoch}.pt"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an nsm checkpoint with ``weights_only=True``; a missing or corrupt file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise ConfigError(f"checkpoint {path} is corrupt or not an nsm checkpoint: {first_line(error)}") from None
    missing = set(REQUIRED_KEYS) - set(checkpoint) if isinstance(checkpoint, dict) else {"config"}
    if missing:
        raise ConfigError(f"checkpoint {path} is not an nsm checkpoint (missing {', '.join(sorted(missing))})")
    return checkpoint


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint atomically, so a crash never leaves half of one."""
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def model_args(config: TrainConfig, num_node_features: int, num_relations: int, link_prediction: bool = False) -> dict[str, Any]:
    """The model's constructor arguments for ``config`` on a domain with this vocabulary; a
    link-prediction domain also scores a query relation (one of ``num_relations``)."""
    arguments = {
        "num_node_features": num_node_features,
        "num_relations": num_relations,
        "hidden_dim": config.hidden_dim,
        "num_bases": config.num_bases,
        "pool_ratio": config.pool_ratio,
        "dropout": config.dropout,
    }
    if link_prediction:
        arguments["num_query_relations"] = num_relations
        # per root: each relation out, then in; none where the config leaves the roots' context out
        arguments["num_root_features"] = 2 * num_relations if config.root_context else 0
        if config.root_proximity:  # absent otherwise, so that earlier checkpoints' arguments stay as stored
            arguments["root_proximity"] = True
        if config.root_pagerank:
            arguments["root_pagerank"] = True
    return arguments


def load_model(checkpoint: str | Path | dict[str, Any], device: str = "cpu") -> tuple[NSM, TrainConfig]:
    """Rebuild the model stored in a checkpoint (its ``model`` weights) in eval mode."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(checkpoint["config"], source="checkpoint config")
    arguments = checkpoint.get("model_args") or _legacy_model_args(checkpoint["model"], config)
    model = NSM(**arguments)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), config


def _legacy_model_args(state: dict[str, torch.Tensor], config: TrainConfig) -> dict[str, Any]:
    """LEGACY: checkpoints written before ``model_args`` was stored. Their vocabulary sizes are read
    off the weight shapes of the model of that time (input embedding, first relational convolution
    over forward and inverse relations); every other argument comes from the config."""
    try:
        num_node_features = state["embed.weight"].shape[1]
        num_relations = state["why_convs.0.coefficients"].shape[0] // 2
    except (KeyError, AttributeError, IndexError):
        raise ConfigError("checkpoint stores no model_args and its weights are not those of an nsm model") from None
    return model_args(config, num_node_features, num_relations)
