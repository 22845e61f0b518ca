"""Vectorised extraction of GraIL's enclosing subgraphs for many target triples at once.

For a target ``(h, r, t)`` on a knowledge graph (typed directed facts), with edge directions and
relations ignored for distances:

- ``d_h(v)``: hop distance from ``h`` to ``v`` in the graph without ``t``; ``d_t(v)``: from ``t``
  without ``h`` (GraIL's double-radius labels).
- Nodes: ``h``, ``t`` and every ``v`` with ``d_h(v) <= k`` and ``d_t(v) <= k``. ``h`` is labelled
  ``(0, 1)``, ``t`` ``(1, 0)``.
- Edges: every fact among those nodes except the target fact itself (when the graph holds it, i.e.
  a training positive). Other facts between ``h`` and ``t`` stay.

This is GraIL's enclosing subgraph (Teru et al. 2020, ``subgraph_extraction_labeling`` with
``enclosing_sub_graph=True``) but for one detail: GraIL measures the two distances inside the
intersection of the two k-hop balls, which it computes with the target fact present, while here
they are measured in the whole graph. So the node set can only be larger (by nodes whose shortest
route to a root leaves that intersection), and, because each distance is taken with the other
root removed, the target fact cannot change any node or label: a positive and a negative are cut
by the same rule (GraIL's balls include the far root's neighbours through the target fact).

Node features are the one-hot of ``d_h`` (``k + 1`` columns) followed by the one-hot of ``d_t``,
stored as uint8; nothing identifies an entity. Node order: ``h`` (local 0), ``t`` (local 1), then
by ``d_h + d_t``, then ``max(d_h, d_t)``, then entity id. A subgraph with more than ``max_nodes``
nodes keeps the first ``max_nodes`` in that order (closest to both roots first, ties by entity id,
so the cut is deterministic) and the facts among them.

Work is done for a block of targets at a time, as set operations on sorted int64 keys
``column * num_entities + entity``: each breadth-first step gathers the neighbours of the whole
frontier of every column at once (CSR + ``repeat_interleave``), drops the column's other root,
deduplicates, and removes what was seen (``searchsorted``). Cost grows with the balls actually
explored, not with ``num_entities`` per target. Edges are gathered the same way: each kept node's
outgoing facts, kept when their other end is in the same subgraph.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

_BLOCK = 1024  # targets per block: bounds the memory of one block's distance tables and candidate edges
_FAR = 255  # distance of an entity not reached within the hop limit
_BLOCKED = 254  # the other root: never entered
# A breadth-first step gathers the frontier's neighbour lists, unless that is more than
# 1/_DENSE_RATIO of a sparse-adjacency x dense-frontier product's multiply-adds: the gather costs
# several random-access passes per neighbour, the product about one streaming step per nonzero.
_DENSE_RATIO = 64


@dataclass(frozen=True)
class Subgraphs:
    """Enclosing subgraphs of ``T`` targets, packed graph after graph (node ids local to each graph)."""

    x: Tensor  # [total_nodes, 2 * (hops + 1)] uint8 one-hot of (d_head, d_tail)
    edge_index: Tensor  # [2, total_edges] int16 (int32 if max_nodes > 32767), local node ids
    edge_type: Tensor  # [total_edges] int16 relation ids (int32 beyond 32767 relations)
    node_ptr: Tensor  # [T + 1] int64
    edge_ptr: Tensor  # [T + 1] int64
    uncapped_nodes: Tensor  # [T] int64 node count before the max_nodes cap
    entity: Tensor  # [total_nodes] int64 entity of each node (for audits; not a feature)


class _Graph:
    """The fact graph in the two CSR layouts the extraction needs."""

    def __init__(self, facts: Tensor, num_entities: int) -> None:
        self.num_entities = n = num_entities
        self.src, self.rel, self.dst = facts[:, 0], facts[:, 1], facts[:, 2]
        short = self.rel.numel() == 0 or int(self.rel.max()) <= torch.iinfo(torch.int16).max
        self.rel_dtype = torch.int16 if short else torch.int32
        # Undirected, relation-free neighbour lists (each neighbour once), self-loops dropped.
        loop = self.src == self.dst
        pairs = torch.cat([self.src[~loop] * n + self.dst[~loop], self.dst[~loop] * n + self.src[~loop]]).unique()
        self.nbr = pairs % n
        self.nbr_ptr = _ptr(torch.bincount(pairs // n, minlength=n))
        with warnings.catch_warnings():  # "sparse CSR support is in beta": sparse @ dense is all we use
            warnings.simplefilter("ignore", UserWarning)
            self.adjacency = torch.sparse_csr_tensor(self.nbr_ptr, self.nbr, torch.ones(self.nbr.numel()), (n, n))
        # Outgoing facts of each entity, for gathering a subgraph's edges.
        self.out_facts = torch.argsort(self.src, stable=True)
        self.out_ptr = _ptr(torch.bincount(self.src, minlength=n))


def extract(
    facts: Tensor,
    num_entities: int,
    targets: Tensor,
    target_fact: Tensor,
    hops: int,
    max_nodes: int,
) -> Subgraphs:
    """Enclosing subgraphs of ``targets`` (``[T, 3]`` rows ``(head, relation, tail)``) in ``facts``.

    ``facts``: ``[E, 3]`` int64 rows ``(head, relation, tail)`` over entities ``0..num_entities-1``.
    ``target_fact[i]``: the row of ``facts`` equal to target ``i`` (left out of its subgraph), or
    ``-1`` when the graph does not hold it.
    """
    if hops < 1:
        raise ValueError(f"hops must be >= 1, got {hops}")
    if max_nodes < 2:
        raise ValueError(f"max_nodes must be >= 2, got {max_nodes}")
    if bool((targets[:, 0] == targets[:, 2]).any()):
        raise ValueError("a target's head equals its tail; it has no enclosing subgraph")
    graph = _Graph(facts, num_entities)
    width = 2 * (hops + 1)
    parts = [
        _extract_block(graph, targets[i : i + _BLOCK], target_fact[i : i + _BLOCK], hops, max_nodes)
        for i in range(0, targets.shape[0], _BLOCK)
    ]
    if not parts:
        empty = torch.zeros(1, dtype=torch.long)
        return Subgraphs(
            torch.zeros(0, width, dtype=torch.uint8),
            torch.zeros(2, 0, dtype=torch.int16 if max_nodes <= torch.iinfo(torch.int16).max else torch.int32),
            torch.zeros(0, dtype=graph.rel_dtype),
            empty,
            empty.clone(),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
        )
    return Subgraphs(
        x=torch.cat([p[0] for p in parts]),
        edge_index=torch.cat([p[1] for p in parts], dim=1),
        edge_type=torch.cat([p[2] for p in parts]),
        node_ptr=_ptr(torch.cat([p[3] for p in parts])),
        edge_ptr=_ptr(torch.cat([p[4] for p in parts])),
        uncapped_nodes=torch.cat([p[5] for p in parts]),
        entity=torch.cat([p[6] for p in parts]),
    )


def _ptr(counts: Tensor) -> Tensor:
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.long)
    ptr[1:] = counts.cumsum(0)
    return ptr


def _expand(ptr: Tensor, values: Tensor, items: Tensor, tag: Tensor) -> tuple[Tensor, Tensor]:
    """The CSR lists of ``items`` concatenated, and ``tag`` of the item each entry came from.

    One pass per output tensor: the per-item start and tag are repeated, never indexed per entry.
    """
    start = ptr[items]
    count = ptr[items + 1] - start
    total = int(count.sum())
    base = start - (count.cumsum(0) - count)  # entry j of the output reads values[base[item] + j]
    index = torch.repeat_interleave(base, count, output_size=total) + torch.arange(total)
    return values[index], torch.repeat_interleave(tag, count, output_size=total)


def _distances(graph: _Graph, seeds: Tensor, blocked: Tensor, hops: int) -> Tensor:
    """``[C, num_entities]`` uint8 hop distances of a breadth-first search from ``seeds[c]`` that never
    enters ``blocked[c]``, for every column ``c``; ``_FAR`` beyond ``hops`` or unreachable."""
    n, c = graph.num_entities, seeds.numel()
    columns = torch.arange(c)
    dist = torch.full((c, n), _FAR, dtype=torch.uint8)
    dist[columns, blocked] = _BLOCKED
    dist[columns, seeds] = 0
    flat = dist.view(-1)
    frontier = columns * n + seeds
    for step in range(1, hops + 1):
        entity = frontier % n
        work = int((graph.nbr_ptr[entity + 1] - graph.nbr_ptr[entity]).sum())
        if work * _DENSE_RATIO > graph.nbr.numel() * c:
            dense = torch.zeros(n, c)
            dense[entity, frontier // n] = 1.0
            reached = (torch.sparse.mm(graph.adjacency, dense) > 0).t().reshape(-1)
        else:
            neighbours, row_start = _expand(graph.nbr_ptr, graph.nbr, entity, frontier - entity)
            reached = torch.zeros(c * n, dtype=torch.bool)
            reached[row_start + neighbours] = True
        new = reached & (flat == _FAR)
        if step == hops:  # the last level needs no frontier list
            flat.masked_fill_(new, step)
            break
        frontier = new.nonzero().squeeze(1)
        if frontier.numel() == 0:
            break
        flat[frontier] = step
    return dist


def _extract_block(
    graph: _Graph, targets: Tensor, target_fact: Tensor, hops: int, max_nodes: int
) -> tuple[Tensor, ...]:
    b, n = targets.shape[0], graph.num_entities
    heads, tails = targets[:, 0], targets[:, 2]
    rows = torch.arange(b)

    # Distances from each root with the other root removed; nodes within `hops` of both, and the roots.
    dist = _distances(graph, torch.cat([heads, tails]), torch.cat([tails, heads]), hops)
    d_head, d_tail = dist[:b], dist[b:]
    d_head[rows, tails], d_tail[rows, tails] = 1, 0
    d_tail[rows, heads] = 1
    keep = (d_head <= hops) & (d_tail <= hops)
    row, node = keep.nonzero(as_tuple=True)  # sorted by row, then entity
    dh, dt = d_head[row, node].long(), d_tail[row, node].long()

    # Order within each subgraph: head, tail, then closest to both roots, then entity; cap at max_nodes.
    num_ranks = 2 + (2 * hops + 1) * (hops + 1)
    rank = 2 + (dh + dt) * (hops + 1) + torch.maximum(dh, dt)
    rank = torch.where(node == heads[row], 0, torch.where(node == tails[row], 1, rank))
    group = row * num_ranks + rank
    per_group = torch.bincount(group, minlength=b * num_ranks).view(b, num_ranks)
    uncapped = per_group.sum(1)
    ahead = (per_group.cumsum(1) - per_group).view(-1)  # nodes of the same subgraph ranked strictly before
    maybe = ahead[group] < max_nodes  # only these can make the cut; sort just them
    row, node, dh, dt, group = row[maybe], node[maybe], dh[maybe], dt[maybe], group[maybe]
    order = torch.sort(group, stable=True).indices  # entity order within a group is kept from nonzero()
    row, node, dh, dt = row[order], node[order], dh[order], dt[order]
    candidates = torch.bincount(row, minlength=b)
    pos = torch.arange(row.numel()) - (candidates.cumsum(0) - candidates)[row]
    kept = pos < max_nodes
    row, node, dh, dt, pos = row[kept], node[kept], dh[kept], dt[kept], pos[kept]

    x = torch.zeros(row.numel(), 2 * (hops + 1), dtype=torch.uint8)
    x[torch.arange(row.numel()), dh] = 1
    x[torch.arange(row.numel()), hops + 1 + dt] = 1

    # Edges: every outgoing fact of a kept node whose other end is kept in the same subgraph.
    local = torch.full((b, n), -1, dtype=torch.int32)
    local[row, node] = pos.int()
    fact, owner = _expand(graph.out_ptr, graph.out_facts, node, torch.arange(node.numel()))
    edge_row = row[owner]
    dst_local = local.view(-1)[edge_row * n + graph.dst[fact]]
    keep_edge = (dst_local >= 0) & (fact != target_fact[edge_row])
    owner, fact, edge_row, dst_local = owner[keep_edge], fact[keep_edge], edge_row[keep_edge], dst_local[keep_edge]
    index_dtype = torch.int16 if max_nodes <= torch.iinfo(torch.int16).max else torch.int32
    edge_index = torch.stack([pos[owner], dst_local.long()]).to(index_dtype)
    edge_type = graph.rel[fact].to(graph.rel_dtype)
    node_counts, edge_counts = torch.bincount(row, minlength=b), torch.bincount(edge_row, minlength=b)
    return x, edge_index, edge_type, node_counts, edge_counts, uncapped, node
