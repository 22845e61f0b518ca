"""Synthetic graph reasoning domains: ``DOMAINS``, ``load_domain`` and the ``DomainData`` it returns.

Each domain module (``planning``, ``causal``, ``kg``) documents its semantics, its fixed relation
vocabulary (``RELATIONS``), its node features (``NODE_FEATURES``) and how its negatives are made.
Generated data is cached on disk, keyed by domain, generator version, number of graphs and seed.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from torch_geometric.data import Data

from nsm.data import _cache, causal, kg, planning
from nsm.data._split import stratified_split
from nsm.domains import SYNTHETIC, is_link_prediction
from nsm.errors import ConfigError

DOMAINS: tuple[str, ...] = SYNTHETIC
"""The domains ``load_domain`` generates (``nsm.domains.DOMAINS`` also names GraIL's splits, see ``nsm.data.grail``)."""

MIN_GRAPHS = 20  # below this a 15% split cannot hold both classes

_MODULES: dict[str, ModuleType] = {"planning": planning, "causal": causal, "kg": kg}


@dataclass(frozen=True)
class DomainData:
    """One domain's graphs split 70/15/15 (stratified by label), plus its vocabulary."""

    name: str
    train: list[Data]
    val: list[Data]
    test: list[Data]
    num_relations: int
    num_node_features: int
    relation_names: tuple[str, ...]
    node_feature_names: tuple[str, ...]


def load_domain(name: str, num_graphs: int = 2000, seed: int = 0, root: str | Path | None = None) -> DomainData:
    """Loads (from the cache, or by generating and caching) ``num_graphs`` graphs of domain ``name``.

    The result is a deterministic function of ``(name, num_graphs, seed)``. ``root`` is the cache
    folder; by default ``$NSM_DATA_DIR``, else ``$XDG_CACHE_HOME/nsm-search``, else
    ``~/.cache/nsm-search``.
    """
    module = _module(name)
    if isinstance(num_graphs, bool) or not isinstance(num_graphs, numbers.Integral) or num_graphs < MIN_GRAPHS:
        raise ConfigError(f"num_graphs must be an integer >= {MIN_GRAPHS}, got {num_graphs!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    num_graphs, seed = int(num_graphs), int(seed)
    graphs = _load_or_generate(name, module, num_graphs, seed, root)
    train, val, test = stratified_split([int(g.y) for g in graphs], seed)
    return DomainData(
        name=name,
        train=[graphs[i] for i in train],
        val=[graphs[i] for i in val],
        test=[graphs[i] for i in test],
        num_relations=len(module.RELATIONS),
        num_node_features=len(module.NODE_FEATURES),
        relation_names=tuple(module.RELATIONS),
        node_feature_names=tuple(module.NODE_FEATURES),
    )


def _module(name: str) -> ModuleType:
    if is_link_prediction(name):
        raise ConfigError(f"{name!r} is a GraIL split, not a synthetic domain: load it with nsm.data.grail.load_grail")
    if name not in _MODULES:
        raise ConfigError(f"unknown domain {name!r}; expected one of {', '.join(SYNTHETIC)}")
    return _MODULES[name]


def _load_or_generate(name: str, module: ModuleType, num_graphs: int, seed: int, root: str | Path | None) -> list[Data]:
    folder = Path(root).expanduser() if root is not None else _cache.default_root()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"data root {str(folder)!r} is not a directory")
    path = _cache.cache_path(folder, name, num_graphs, seed, module.VERSION)
    meta = {"domain": name, "version": module.VERSION, "num_graphs": num_graphs, "seed": seed}
    payload = _cache.load(path, meta)
    if payload is not None:
        return _cache.unpack(payload)
    payload = _cache.pack(module.generate(num_graphs, seed), meta)
    try:
        _cache.save(path, payload)
    except OSError as exc:
        # The data is still correct without a cache (e.g. a read-only home on a worker); only slower next time.
        warnings.warn(f"could not cache {name} data at {path}: {exc}", RuntimeWarning, stacklevel=3)
    # Graphs come back from the packed tensors, so a fresh load and a cache hit give identical objects.
    return _cache.unpack(payload)


__all__ = ["DOMAINS", "DomainData", "load_domain"]
