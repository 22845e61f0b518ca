"""On-disk cache of generated domains: where it lives, how graphs pack into plain tensors, atomic I/O.

A cache file holds one dict of plain tensors (all graphs' ``x`` / ``edge_index`` / ``edge_type`` /
``edge_attr`` / ``y`` concatenated, plus per-graph node and edge offsets) and a few scalars, so it
loads with ``torch.load(weights_only=True)`` quickly and without unpickling arbitrary objects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch_geometric.data import Data

from nsm.config import PROJECT_NAME
from nsm.files import atomic_write

_FORMAT = 1  # bump when the layout of the payload changes


def default_root() -> Path:
    """``$NSM_DATA_DIR``, else ``$XDG_CACHE_HOME/nsm-search``, else ``~/.cache/nsm-search``."""
    if os.environ.get("NSM_DATA_DIR"):
        return Path(os.environ["NSM_DATA_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / PROJECT_NAME


def cache_path(root: Path, domain: str, num_graphs: int, seed: int, version: int) -> Path:
    return root / f"{domain}-v{version}.{_FORMAT}-n{num_graphs}-s{seed}.pt"


def pack(graphs: Sequence[Data], meta: dict[str, int | str]) -> dict:
    """All graphs as concatenated tensors; ``edge_index`` stays local to each graph."""
    node_ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    edge_ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    node_ptr[1:] = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long).cumsum(0)
    edge_ptr[1:] = torch.tensor([g.edge_index.shape[1] for g in graphs], dtype=torch.long).cumsum(0)
    return {
        **meta,
        "format": _FORMAT,
        "x": torch.cat([g.x for g in graphs]),
        "edge_index": torch.cat([g.edge_index for g in graphs], dim=1),
        "edge_type": torch.cat([g.edge_type for g in graphs]),
        "edge_attr": torch.cat([g.edge_attr for g in graphs]),
        "y": torch.cat([g.y for g in graphs]),
        "node_ptr": node_ptr,
        "edge_ptr": edge_ptr,
    }


def unpack(payload: dict) -> list[Data]:
    x, edge_index, edge_type = payload["x"], payload["edge_index"], payload["edge_type"]
    edge_attr, y = payload["edge_attr"], payload["y"]
    node_ptr, edge_ptr = payload["node_ptr"].tolist(), payload["edge_ptr"].tolist()
    graphs = []
    for i in range(len(node_ptr) - 1):
        n0, n1, e0, e1 = node_ptr[i], node_ptr[i + 1], edge_ptr[i], edge_ptr[i + 1]
        graphs.append(
            Data(
                x=x[n0:n1],
                edge_index=edge_index[:, e0:e1],
                edge_type=edge_type[e0:e1],
                edge_attr=edge_attr[e0:e1],
                y=y[i : i + 1],
            )
        )
    return graphs


def _valid(payload: object, meta: dict[str, int | str]) -> bool:
    """Whether a loaded payload is a complete, self-consistent cache entry for ``meta``."""
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        return False
    if any(payload.get(k) != v for k, v in meta.items()):
        return False
    try:
        node_ptr, edge_ptr = payload["node_ptr"], payload["edge_ptr"]
        num_graphs = int(meta["num_graphs"])
        return (
            node_ptr.shape == (num_graphs + 1,)
            and edge_ptr.shape == (num_graphs + 1,)
            and payload["y"].shape == (num_graphs,)
            and payload["x"].shape[0] == int(node_ptr[-1])
            and payload["edge_index"].shape == (2, int(edge_ptr[-1]))
            and payload["edge_type"].shape == (int(edge_ptr[-1]),)
            and payload["edge_attr"].shape == (int(edge_ptr[-1]), 1)
        )
    except (KeyError, AttributeError, TypeError, IndexError):
        return False


def load(path: Path, meta: dict[str, int | str]) -> dict | None:
    """The cached payload, or None when the file is missing, unreadable, corrupt or stale."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - any unreadable file (truncated zip, garbage, wrong pickle) is regenerated
        return None
    return payload if _valid(payload, meta) else None


def save(path: Path, payload: dict) -> None:
    """Writes atomically and durably: a crash leaves either the old file or the complete new one, never half."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as file:
            torch.save(payload, file)

    atomic_write(path, write, fsync=True)
