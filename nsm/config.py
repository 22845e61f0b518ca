"""The training config: ``TrainConfig``, the research baseline, and config files (read and write).

This module imports neither torch nor PyG, so a search space, the search CLI and the analysis tools
can validate config keys without loading the workload. A config file is YAML or JSON holding a mapping
of ``TrainConfig`` keys: an exported best config, a hand-written one, or ``--warm-start``'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nsm.domains import DOMAINS, canonical_domain, is_domain
from nsm.errors import ConfigError, first_line
from nsm.files import write_json, write_text

PROJECT_NAME = "nsm-search"
"""The distribution's name; also the default W&B project and the name of the cache directories."""

MAX_TRAIN_CORRUPTIONS = 64
"""The most corruptions per training fact a GraIL split is extracted with (``train_corruptions``)."""

BASELINE = {"lr": 1e-4, "cycle_weight": 0.01, "batch_size": 64}
"""The research code's default config: every search evaluates it first and reports the gain over it."""


def _key(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """One training run; its fields are the config keys that spaces, config files and flags use."""

    domain: str = _key("planning", f"graph domain (any case): {', '.join(DOMAINS)}")
    lr: float = _key(3e-3, "Adam learning rate (cosine-annealed to 5%% of it)")
    cycle_weight: float = _key(0.01, "weight of the cycle-consistency loss added to cross-entropy")
    batch_size: int = _key(64, "graphs per batch")
    epochs: int = _key(30, "training epochs")
    hidden_dim: int = _key(64, "hidden width of every level")
    num_bases: int = _key(8, "basis matrices shared by the relation weights")
    pool_ratio: float = _key(0.5, "fraction of nodes kept by each pooling step, in (0, 1]")
    dropout: float = _key(0.1, "dropout probability")
    weight_decay: float = _key(1e-5, "Adam weight decay")
    grad_clip: float = _key(1.0, "max gradient norm (0 disables)")
    seed: int = _key(0, "seed of data generation, initialisation and batch order (GraIL splits: initialisation and batch order; "
                          "their candidates are fixed, so every run is scored on the same ones)")
    num_graphs: int = _key(2000, "graphs generated for a synthetic domain (split 70/15/15; unused on GraIL splits)")
    device: str = _key("auto", "auto, cpu, cuda or cuda:N")  # auto: CUDA when available (TF32 on), else CPU
    save_every: int = _key(10, "write checkpoint_epoch_N.pt every N epochs (0 disables)")
    eval_every: int = _key(1, "evaluate on the validation split every N epochs")
    data_root: str | None = _key(None, f"dataset cache directory (default: $NSM_DATA_DIR or ~/.cache/{PROJECT_NAME})")
    root_context: bool = _key(True, "GraIL splits: the classifier also reads each root's relational context (how many facts "
                                    "of each relation leave and enter it); false gives GraIL's own inputs")
    train_pathless_facts: bool = _key(True, "GraIL splits: train on the facts whose enclosing subgraph is empty (no path "
                                            "within the hop limit between head and tail once the fact is removed) and on "
                                            "their corruptions; false leaves those pairs out of training")
    root_proximity: bool = _key(False, "GraIL splits: the classifier also reads how closely the roots are linked in their "
                                       "subgraph, whatever the relations (walks of 1 to 3 steps between them, counted "
                                       "and as random-walk probabilities either way: what the PageRank shortcut ranks by)")
    root_pagerank: bool = _key(False, "GraIL splits: the classifier also reads the Personalized PageRank between the roots "
                                      "on the whole graph, either way (the shortcut's own score; a training fact is scored "
                                      "on the graph without it)")
    train_corruptions: int = _key(1, "GraIL splits: corruptions drawn per training fact, k; epoch e trains on every fact "
                                     "and its ((e - 1) mod k)-th corruption, so the model meets k different negatives "
                                     "per fact at the cost per epoch of one (extraction and memory grow with k)")
    train_graph_keep: float = _key(1.0, "GraIL splits: fraction of the training graph's facts (a seeded random part) that "
                                        "the training targets' subgraphs and root inputs are taken from; below 1 trains "
                                        "on sparser neighbourhoods, like the inductive test graphs of FB15k-237 and NELL "
                                        "(validation and test keep their whole graphs)")

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
        # Domain names are case-insensitive; the config holds the canonical spelling from here on, so
        # run names, caches and search records agree however the user typed it.
        if is_domain(self.domain):
            self.domain = canonical_domain(self.domain)
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
            (0 < self.train_graph_keep <= 1, f"train_graph_keep must be in (0, 1], got {self.train_graph_keep}"),
            (1 <= self.train_corruptions <= MAX_TRAIN_CORRUPTIONS,
             f"train_corruptions must be in [1, {MAX_TRAIN_CORRUPTIONS}], got {self.train_corruptions}"),
            (self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), f"device: unknown device {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{source}: {message}")


FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
"""Each config key's type as written in ``TrainConfig`` (``"float"``, ``"str | None"``, ...)."""


def baseline_values(keys: Iterable[str]) -> dict[str, Any]:
    """The baseline config restricted to ``keys``: the research value where it has one, else the default."""
    defaults = TrainConfig()
    return {key: BASELINE.get(key, getattr(defaults, key)) for key in keys}


def holds_values(config: Mapping[str, Any], point: Mapping[str, Any]) -> bool:
    """Whether ``config`` has every key of ``point`` with the same value.

    Floats compare to a relative 1e-9: a config read back from JSON, YAML or a W&B run is the same
    point even where its last digit is not.
    """
    return all(key in config and _same_value(config[key], value) for key, value in point.items())


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b


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
    elif annotation == "bool":
        if isinstance(value, bool):
            return value
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
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {first_line(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of config keys")
    return TrainConfig.from_dict(values, source=str(path))


def save_config_file(values: TrainConfig | dict[str, Any], path: str | Path) -> Path:
    """Write config keys atomically, as JSON for a ``.json`` path and YAML (in field order) otherwise."""
    values = values.to_dict() if isinstance(values, TrainConfig) else dict(values)
    path = Path(path)
    if path.suffix == ".json":
        return write_json(path, values)
    return write_text(path, yaml.safe_dump(values, sort_keys=False))
