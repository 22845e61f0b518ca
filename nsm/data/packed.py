"""Many small graphs in a few flat tensors, batched by index with tensor operations only.

``PackedGraphs`` holds every graph's ``x`` / ``edge_index`` / ``edge_type`` / ``edge_attr``
concatenated, with per-graph node and edge offsets (``node_ptr``, ``edge_ptr``), one graph-level
``y`` row per graph, and any number of extra per-graph tensors (``graph_attrs``: one row per graph).
``edge_index`` is stored local to its graph (node ids ``0..n_i-1``), so one graph's slice is
self-contained and the store can be subset, saved and loaded without rewriting indices.

``PackedGraphs.batch(index)`` builds the mini-batch of the graphs ``index`` (any order, repeats
allowed) with gathers and a ``repeat_interleave``, no Python loop over graphs, and returns a
``PackedBatch`` with exactly what ``torch_geometric.data.Batch.from_data_list`` returns for the same
graphs: ``x, edge_index, edge_type, edge_attr, y, batch, ptr, num_graphs`` plus each graph attribute.
It follows PyG's batching rule for graph attributes: one whose name contains ``"index"``
(e.g. ``head_index``) is a node index and is shifted by the graph's node offset in the batch.

Storage may be compact; ``batch`` widens it: ``x`` and ``edge_attr`` stored as an integer or bool
type (e.g. a uint8 one-hot) come back as float32, ``edge_index`` / ``edge_type`` and index graph
attributes come back as int64, everything else keeps its dtype.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

_CORE = ("x", "edge_index", "edge_type", "edge_attr", "y")
_RESERVED = frozenset(_CORE) | {"node_ptr", "edge_ptr", "batch", "ptr", "num_graphs"}


class PackedBatch:
    """One mini-batch: the fields of a PyG ``Batch`` (``x, edge_index, edge_type, edge_attr, y,
    batch, ptr, num_graphs``) plus one attribute per graph attribute of the store."""

    def __init__(self, num_graphs: int, **fields: Tensor | None) -> None:
        self.num_graphs = num_graphs
        self._keys = tuple(fields)
        for key, value in fields.items():
            setattr(self, key, value)

    def keys(self) -> tuple[str, ...]:
        """The tensor fields (``num_graphs`` is not one)."""
        return self._keys

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedBatch:
        moved = {k: None if (v := getattr(self, k)) is None else v.to(device, non_blocking=non_blocking) for k in self._keys}
        return PackedBatch(self.num_graphs, **moved)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={list(v.shape) if (v := getattr(self, k)) is not None else None}" for k in self._keys)
        return f"PackedBatch(num_graphs={self.num_graphs}, {shapes})"


class PackedGraphs:
    """A store of ``num_graphs`` small graphs as flat tensors (see the module docstring).

    Args:
        x: ``[total_nodes, F]`` node features of all graphs, graph after graph.
        edge_index: ``[2, total_edges]``, each graph's columns with node ids local to that graph.
        edge_type: ``[total_edges]`` relation id per edge.
        node_ptr, edge_ptr: ``[num_graphs + 1]`` offsets; graph ``i`` owns nodes
            ``node_ptr[i]:node_ptr[i+1]`` and edges ``edge_ptr[i]:edge_ptr[i+1]``.
        y: ``[num_graphs, ...]`` graph-level target.
        edge_attr: ``[total_edges, D]`` or ``None``.
        graph_attrs: extra per-graph tensors, each ``[num_graphs, ...]``; names containing
            ``"index"`` are node indices local to their graph (1-D, like PyG).
    """

    def __init__(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_type: Tensor,
        node_ptr: Tensor,
        edge_ptr: Tensor,
        y: Tensor,
        edge_attr: Tensor | None = None,
        graph_attrs: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.x, self.edge_index, self.edge_type, self.edge_attr, self.y = x, edge_index, edge_type, edge_attr, y
        self.node_ptr, self.edge_ptr = node_ptr.long(), edge_ptr.long()
        self.graph_attrs: dict[str, Tensor] = dict(graph_attrs or {})
        self._counts: tuple[list[int], list[int]] | None = None  # per-graph sizes on the host, read once
        self._check()

    # ------------------------------------------------------------------ construction and I/O
    @classmethod
    def from_data_list(
        cls,
        graphs: Sequence[Data],
        graph_keys: Sequence[str] = (),
        *,
        x_dtype: torch.dtype | None = None,
        edge_attr_dtype: torch.dtype | None = None,
        index_dtype: torch.dtype | None = None,
        edge_type_dtype: torch.dtype | None = None,
    ) -> PackedGraphs:
        """Packs PyG ``Data`` graphs (each with ``x, edge_index, edge_type, y`` and optionally
        ``edge_attr``); ``graph_keys`` names further per-graph attributes to keep. The ``*_dtype``
        arguments store those fields compactly (e.g. ``x_dtype=torch.uint8`` for a one-hot)."""
        if len(graphs) == 0:
            raise ValueError("cannot pack an empty list of graphs")
        node_ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
        edge_ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
        node_ptr[1:] = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long).cumsum(0)
        edge_ptr[1:] = torch.tensor([g.edge_index.shape[1] for g in graphs], dtype=torch.long).cumsum(0)
        has_attr = [getattr(g, "edge_attr", None) is not None for g in graphs]
        if any(has_attr) and not all(has_attr):
            raise ValueError("either every graph has edge_attr or none does")

        def cast(t: Tensor, dtype: torch.dtype | None) -> Tensor:
            return t if dtype is None else t.to(dtype)

        return cls(
            x=cast(torch.cat([g.x for g in graphs]), x_dtype),
            edge_index=cast(torch.cat([g.edge_index for g in graphs], dim=1), index_dtype),
            edge_type=cast(torch.cat([g.edge_type for g in graphs]), edge_type_dtype),
            node_ptr=node_ptr,
            edge_ptr=edge_ptr,
            y=torch.cat([g.y.view(1, *g.y.shape[1:]) if g.y.dim() else g.y.view(1) for g in graphs]),
            edge_attr=cast(torch.cat([g.edge_attr for g in graphs]), edge_attr_dtype) if all(has_attr) else None,
            graph_attrs={k: torch.cat([getattr(g, k).reshape(1, *getattr(g, k).shape[1:]) for g in graphs]) for k in graph_keys},
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors only, for ``torch.save`` and ``torch.load(weights_only=True)``."""
        out: dict[str, Any] = {
            "x": self.x,
            "edge_index": self.edge_index,
            "edge_type": self.edge_type,
            "node_ptr": self.node_ptr,
            "edge_ptr": self.edge_ptr,
            "y": self.y,
            "graph_attrs": dict(self.graph_attrs),
        }
        if self.edge_attr is not None:
            out["edge_attr"] = self.edge_attr
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> PackedGraphs:
        """Inverse of ``to_dict``; raises ``ValueError`` when the payload is inconsistent."""
        try:
            return cls(
                x=payload["x"],
                edge_index=payload["edge_index"],
                edge_type=payload["edge_type"],
                node_ptr=payload["node_ptr"],
                edge_ptr=payload["edge_ptr"],
                y=payload["y"],
                edge_attr=payload.get("edge_attr"),
                graph_attrs=payload.get("graph_attrs") or {},
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise ValueError(f"not a packed-graphs payload: {exc}") from None

    # ------------------------------------------------------------------ basic properties
    @property
    def num_graphs(self) -> int:
        return int(self.node_ptr.numel()) - 1

    def __len__(self) -> int:
        return self.num_graphs

    @property
    def num_nodes(self) -> Tensor:
        """``[num_graphs]`` node count per graph."""
        return self.node_ptr[1:] - self.node_ptr[:-1]

    @property
    def num_edges(self) -> Tensor:
        """``[num_graphs]`` edge count per graph."""
        return self.edge_ptr[1:] - self.edge_ptr[:-1]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> PackedGraphs:
        """The same store on ``device`` (e.g. the whole training set on the GPU once)."""
        return PackedGraphs(
            x=self.x.to(device),
            edge_index=self.edge_index.to(device),
            edge_type=self.edge_type.to(device),
            node_ptr=self.node_ptr.to(device),
            edge_ptr=self.edge_ptr.to(device),
            y=self.y.to(device),
            edge_attr=None if self.edge_attr is None else self.edge_attr.to(device),
            graph_attrs={k: v.to(device) for k, v in self.graph_attrs.items()},
        )

    def __repr__(self) -> str:
        extra = ", ".join(self.graph_attrs)
        return (
            f"PackedGraphs(num_graphs={self.num_graphs}, nodes={self.x.shape[0]}, edges={self.edge_type.shape[0]}"
            + (f", graph_attrs=[{extra}]" if extra else "")
            + ")"
        )

    # ------------------------------------------------------------------ batching
    def batch(self, index: Tensor | Sequence[int]) -> PackedBatch:
        """The graphs ``index`` (in that order) as one batch, equal to PyG's ``Batch.from_data_list``."""
        idx = self._index(index)
        return self._batch(idx, *self._totals(idx))

    def batches(self, batch_size: int, order: Tensor | Sequence[int] | None = None) -> Iterator[PackedBatch]:
        """All graphs in mini-batches of ``batch_size``, in ``order`` (a permutation; default: stored order).

        A pass reads the graph sizes from the device once and copies ``order`` to it once; each batch's
        node and edge totals are then summed on the host, so building a batch never waits for the device
        (``batch`` waits for its range check and its totals).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        node_counts, edge_counts = self._host_counts()
        host_order = list(range(self.num_graphs)) if order is None else torch.as_tensor(order).tolist()
        if host_order and (min(host_order) < 0 or max(host_order) >= self.num_graphs):
            raise IndexError(f"graph index out of range for {self.num_graphs} graphs")
        device_order = torch.as_tensor(host_order, dtype=torch.long).to(self.device)
        for start in range(0, len(host_order), batch_size):
            chunk = host_order[start : start + batch_size]
            yield self._batch(device_order[start : start + batch_size],
                              sum(node_counts[i] for i in chunk), sum(edge_counts[i] for i in chunk))

    def _totals(self, idx: Tensor) -> tuple[int, int]:
        """Nodes and edges of the graphs ``idx`` in all (read from the device)."""
        return int(self.num_nodes[idx].sum()), int(self.num_edges[idx].sum())

    def _host_counts(self) -> tuple[list[int], list[int]]:
        if self._counts is None:
            self._counts = (self.num_nodes.tolist(), self.num_edges.tolist())
        return self._counts

    def _batch(self, idx: Tensor, total_nodes: int, total_edges: int) -> PackedBatch:
        num_graphs = int(idx.numel())
        node_src, ptr, node_graph = self._gather_ids(self.node_ptr, self.num_nodes, idx, total_nodes)
        edge_src, _, edge_graph = self._gather_ids(self.edge_ptr, self.num_edges, idx, total_edges)

        fields: dict[str, Tensor | None] = {
            "x": _as_float(self.x[node_src]),
            "edge_index": self.edge_index[:, edge_src].long() + ptr[edge_graph],
            "edge_type": self.edge_type[edge_src].long(),
            "edge_attr": None if self.edge_attr is None else _as_float(self.edge_attr[edge_src]),
            "y": self.y[idx],
            "batch": node_graph,
            "ptr": ptr,
        }
        for key, value in self.graph_attrs.items():
            fields[key] = value[idx].long() + ptr[:-1] if "index" in key else value[idx]
        return PackedBatch(num_graphs, **fields)

    def subset(self, index: Tensor | Sequence[int]) -> PackedGraphs:
        """A new store holding the graphs ``index`` (in that order), stored dtypes and local indices unchanged."""
        idx = self._index(index)
        total_nodes, total_edges = self._totals(idx)
        node_src, node_ptr, _ = self._gather_ids(self.node_ptr, self.num_nodes, idx, total_nodes)
        edge_src, edge_ptr, _ = self._gather_ids(self.edge_ptr, self.num_edges, idx, total_edges)
        return PackedGraphs(
            x=self.x[node_src],
            edge_index=self.edge_index[:, edge_src],
            edge_type=self.edge_type[edge_src],
            node_ptr=node_ptr,
            edge_ptr=edge_ptr,
            y=self.y[idx],
            edge_attr=None if self.edge_attr is None else self.edge_attr[edge_src],
            graph_attrs={k: v[idx] for k, v in self.graph_attrs.items()},
        )

    def __getitem__(self, i: int) -> Data:
        """Graph ``i`` as a PyG ``Data`` (widened like ``batch``); for inspection and tests."""
        b = self.batch([int(i)])
        data = Data(x=b.x, edge_index=b.edge_index, edge_type=b.edge_type, y=b.y)
        if b.edge_attr is not None:
            data.edge_attr = b.edge_attr
        for key in self.graph_attrs:
            setattr(data, key, getattr(b, key))
        return data

    # ------------------------------------------------------------------ private helpers
    def _index(self, index: Tensor | Sequence[int]) -> Tensor:
        idx = torch.as_tensor(index, dtype=torch.long, device=self.node_ptr.device).view(-1)
        if idx.numel() and (int(idx.min()) < -self.num_graphs or int(idx.max()) >= self.num_graphs):
            raise IndexError(f"graph index out of range for {self.num_graphs} graphs")
        return torch.where(idx < 0, idx + self.num_graphs, idx)

    @staticmethod
    def _gather_ids(offsets: Tensor, counts: Tensor, idx: Tensor, total: int) -> tuple[Tensor, Tensor, Tensor]:
        """For the graphs ``idx`` (``total`` rows in all): their row ids in a store with these offsets,
        their new offsets, and the position in ``idx`` that owns each row."""
        sizes = counts[idx]
        out_ptr = torch.zeros(idx.numel() + 1, dtype=torch.long, device=idx.device)
        torch.cumsum(sizes, 0, out=out_ptr[1:])
        owner = torch.repeat_interleave(torch.arange(idx.numel(), device=idx.device), sizes, output_size=total)
        return offsets[idx][owner] + torch.arange(total, device=idx.device) - out_ptr[owner], out_ptr, owner

    def _check(self) -> None:
        g = self.num_graphs
        if self.node_ptr.dim() != 1 or g < 0 or self.edge_ptr.shape != self.node_ptr.shape:
            raise ValueError("node_ptr and edge_ptr must be 1-D of the same length num_graphs + 1")
        if self.x.shape[0] != int(self.node_ptr[-1]):
            raise ValueError(f"x has {self.x.shape[0]} rows but node_ptr ends at {int(self.node_ptr[-1])}")
        num_edges = int(self.edge_ptr[-1])
        if self.edge_index.dim() != 2 or self.edge_index.shape[0] != 2 or self.edge_index.shape[1] != num_edges:
            raise ValueError(f"edge_index must be [2, {num_edges}], got {list(self.edge_index.shape)}")
        if self.edge_type.shape != (num_edges,):
            raise ValueError(f"edge_type must be [{num_edges}], got {list(self.edge_type.shape)}")
        if self.edge_attr is not None and self.edge_attr.shape[0] != num_edges:
            raise ValueError(f"edge_attr must have {num_edges} rows, got {self.edge_attr.shape[0]}")
        if self.y.shape[0] != g:
            raise ValueError(f"y must have one row per graph ({g}), got {self.y.shape[0]}")
        for key, value in self.graph_attrs.items():
            if key in _RESERVED or "batch" in key:
                raise ValueError(f"graph attribute name {key!r} is reserved")
            if value.shape[0] != g:
                raise ValueError(f"graph attribute {key!r} must have one row per graph ({g}), got {value.shape[0]}")
            if "index" in key and value.dim() != 1:
                raise ValueError(f"index graph attribute {key!r} must be 1-D, got {list(value.shape)}")


def _as_float(t: Tensor) -> Tensor:
    return t if t.is_floating_point() else t.float()


__all__ = ["PackedBatch", "PackedGraphs"]
