"""The 3-level Neural Symbolic Model: typed convolution, pooling up (WHY), unpooling down (WHAT).

Level 1 is the input graph. WHY abstracts it twice with learned top-k pooling (levels 2 and 3);
the graph classifier reads level 3. WHAT concretises level 3 back to level 1, and the cycle-consistency
loss asks WHAT(WHY(x)) to reproduce the input node features at every level-1 node, including the
nodes that pooling dropped, which WHAT must infer from their kept neighbours.

On a GPU the host only waits for the device when it needs a value back. A forward pass reads back
three numbers at once: how many nodes levels 2 and 3 keep and how many edges level 2 keeps. Every
other shape follows from them and from ``num_graphs``: top-k selection runs on the device, level 3
keeps level 2's edge list and marks the edges that lost an end, and nothing selects with a boolean
mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.pool.select import SelectTopK
from torch_geometric.utils import scatter


LINK_HEAD_REVISION = 2
"""Revision of the link-prediction scoring head, bumped when it changes what a trained model computes
(1: readout, roots' states and query relation; 2: plus the roots' relational context). Benchmark
records carry it, so a rerun never reuses a number measured with an earlier head."""


BLOCK = 64
"""Edge slots per block of :class:`RelationalEdges`: big enough for dense products, small enough that
padding (up to one block per relation) stays a fraction of a batch's edges."""


@dataclass
class RelationalEdges:
    r"""A graph's typed edges laid out for :class:`RelationalConv`, with each edge's factor
    :math:`c_{ji} / |\mathcal{N}_r(i)|`, where :math:`|\mathcal{N}_r(i)|` counts the edges of relation
    :math:`r` into node :math:`i`.

    Edges are grouped by relation into blocks of :data:`BLOCK` slots, so that each block holds edges of
    one relation only (the remaining slots are padding with factor 0). The number of blocks,
    :math:`\lfloor (E + R(\mathit{BLOCK} - 1)) / \mathit{BLOCK} \rfloor`, depends only on the number of
    edges and relations, so building the layout reads nothing from the device. Build it once per graph
    and share it between the convolutions over that graph.
    """

    src: Tensor  # [S] source node of each slot (0 for padding)
    dst: Tensor  # [S] target node of each slot (0 for padding)
    norm: Tensor  # [S] c_ji / |N_r(i)| of each slot's edge, 0 for padding and absent edges
    block_relation: Tensor  # [S / BLOCK] the relation of each block's edges
    slot: Tensor  # [E] each edge's slot
    edge_type: Tensor  # [E]
    num_relations: int

    @classmethod
    def build(
        cls,
        edge_index: Tensor,
        edge_type: Tensor,
        edge_weight: Tensor,
        num_nodes: int,
        num_relations: int,
        edge_mask: Tensor | None = None,
    ) -> RelationalEdges:
        """Lay out ``edge_index`` by relation; edges with ``edge_mask`` 0 are absent (factor 0, not counted)."""
        num_edges = edge_type.numel()
        count = torch.zeros(num_relations, dtype=torch.long, device=edge_type.device)
        count.index_add_(0, edge_type, torch.ones_like(edge_type))
        blocks = (count + BLOCK - 1) // BLOCK
        block_end = blocks.cumsum(0)
        grouped_type, order = torch.sort(edge_type, stable=True)
        # An edge's slot: its relation's first block, plus its rank among that relation's edges.
        rank = torch.arange(num_edges, device=edge_type.device) - (count.cumsum(0) - count).index_select(0, grouped_type)
        grouped_slot = (block_end - blocks).index_select(0, grouped_type) * BLOCK + rank
        slot = torch.empty_like(edge_type).index_copy_(0, order, grouped_slot)
        # Without edges there are no blocks (and maybe no node 0 for padding to point at).
        num_blocks = (num_edges + num_relations * (BLOCK - 1)) // BLOCK if num_edges else 0
        block_relation = torch.searchsorted(block_end, torch.arange(num_blocks, device=edge_type.device), right=True)
        block_relation = block_relation.clamp_(max=num_relations - 1)  # blocks past the last used: all padding
        return cls._placed(edge_index, edge_weight, num_nodes, edge_mask, slot, edge_type, block_relation, num_relations)

    def renumbered(
        self, edge_index: Tensor, edge_weight: Tensor, num_nodes: int, edge_mask: Tensor | None = None
    ) -> RelationalEdges:
        """The same edges, in the same slots, with new endpoints (on ``num_nodes`` nodes) and presence."""
        return self._placed(
            edge_index, edge_weight, num_nodes, edge_mask, self.slot, self.edge_type, self.block_relation, self.num_relations
        )

    @classmethod
    def _placed(
        cls,
        edge_index: Tensor,
        edge_weight: Tensor,
        num_nodes: int,
        edge_mask: Tensor | None,
        slot: Tensor,
        edge_type: Tensor,
        block_relation: Tensor,
        num_relations: int,
    ) -> RelationalEdges:
        num_slots = block_relation.numel() * BLOCK
        degree_slot = edge_index[1] * num_relations + edge_type
        present = torch.ones_like(edge_weight) if edge_mask is None else edge_mask.to(edge_weight.dtype)
        degree = edge_weight.new_zeros(num_nodes * num_relations).index_add_(0, degree_slot, present)
        norm = edge_weight * present / degree.clamp(min=1).index_select(0, degree_slot)
        endpoints = edge_index.new_zeros(2, num_slots).index_copy_(1, slot, edge_index)
        return cls(
            src=endpoints[0],
            dst=endpoints[1],
            norm=edge_weight.new_zeros(num_slots).index_copy_(0, slot, norm),
            block_relation=block_relation,
            slot=slot,
            edge_type=edge_type,
            num_relations=num_relations,
        )


class RelationalConv(nn.Module):
    r"""Relational graph convolution with basis decomposition and edge confidence.

    .. math::
        \mathbf{x}'_i = \mathbf{W}_0 \mathbf{x}_i + \sum_{r} \sum_{j \in \mathcal{N}_r(i)}
        \frac{c_{ji}}{|\mathcal{N}_r(i)|} \mathbf{W}_r \mathbf{x}_j,
        \qquad \mathbf{W}_r = \sum_{b=1}^{B} a_{rb} \mathbf{V}_b

    where :math:`c_{ji}` is the confidence of edge :math:`j \to i`. This is PyG's ``RGCNConv`` with
    basis decomposition plus a per-edge weight, which ``RGCNConv`` does not accept. The edges come as
    :class:`RelationalEdges`, grouped by relation in blocks: each block is one dense product of its
    edges' source rows with its relation's :math:`\mathbf{W}_r`, so an edge costs one
    :math:`C_{in} \times C_{out}` product and no node is transformed by all :math:`B` bases.
    """

    def __init__(self, in_channels: int, out_channels: int, num_relations: int, num_bases: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_relations = num_relations
        self.num_bases = num_bases
        self.bases = nn.Parameter(torch.empty(num_bases, in_channels, out_channels))
        self.coefficients = nn.Parameter(torch.empty(num_relations, num_bases))
        self.root = nn.Linear(in_channels, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Glorot over one basis block: each W_r is a mix of B blocks with coefficients of scale 1/sqrt(B).
        bound = (6.0 / (self.in_channels + self.out_channels)) ** 0.5
        nn.init.uniform_(self.bases, -bound, bound)
        nn.init.normal_(self.coefficients, std=self.num_bases**-0.5)
        self.root.reset_parameters()

    def forward(self, x: Tensor, edges: RelationalEdges) -> Tensor:
        relation_weights = self.coefficients @ self.bases.view(self.num_bases, -1)  # W_r, flattened
        relation_weights = relation_weights.view(-1, self.in_channels, self.out_channels)
        sources = (x.index_select(0, edges.src) * edges.norm.unsqueeze(1)).view(-1, BLOCK, self.in_channels)
        messages = torch.bmm(sources, relation_weights.index_select(0, edges.block_relation))
        return self.root(x).index_add_(0, edges.dst, messages.view(-1, self.out_channels))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"num_relations={self.num_relations}, num_bases={self.num_bases})"
        )


@dataclass
class Level:
    """One level of the hierarchy: its graph and, for levels above 1, where its nodes came from.

    Level 3 keeps level 2's edge list, re-pointed at its own nodes, with ``edge_mask`` 1 for the edges
    whose two ends it kept and 0 for the others (which point at node 0), so its shapes follow from
    level 2's without a read from the device.
    """

    x: Tensor
    edge_index: Tensor
    edge_type: Tensor
    edge_weight: Tensor  # the input confidences c_ji
    batch: Tensor
    graph_sizes: Tensor | None = None  # nodes per graph, [num_graphs]; needed to pool this level
    kept: Tensor | None = None  # indices into the level below of the nodes pooling kept
    edge_mask: Tensor | None = None  # 1.0 where the edge exists at this level; None: all do
    edges: RelationalEdges | None = None  # the convolutions' layout of the edges


@dataclass
class Selection:
    """The nodes a pooling keeps, decided on the device; their counts stay tensors until read."""

    score: Tensor  # [N] the gate y
    ranked: Tensor  # [N] nodes grouped by graph, best first
    kept_per_graph: Tensor  # [num_graphs]
    is_kept: Tensor  # [N] 1.0 for kept nodes
    edge_kept: Tensor  # [E] 1.0 for edges that exist and whose two ends are kept


class TopKPool(nn.Module):
    r"""Learned top-k pooling (Graph U-Nets) that keeps relation types and confidences of surviving edges.

    .. math::
        \mathbf{y} = \sigma(\mathbf{X}\mathbf{p} / \|\mathbf{p}\|), \quad
        \mathbf{i} = \mathrm{top}_{\lceil \rho N_g \rceil}(\mathbf{y}) \text{ in each graph } g, \quad
        \mathbf{X}' = (\mathbf{X} \odot \mathbf{y})_{\mathbf{i}}

    with :math:`\sigma` the logistic function and :math:`\rho` the ratio (1 keeps every node). The
    gate by :math:`\mathbf{y}` lets the scorer learn. Edges between kept nodes survive with their type
    and confidence.

    Pooling is two steps so that the caller can read every size it needs at once: :meth:`choose`
    decides on the device (the same nodes, in the same order, as PyG's ``SelectTopK``, whose parameter
    :math:`\mathbf{p}` and initialisation this module keeps), and :meth:`forward` gathers, given the
    counts read on the host. PyG's own top-k reads the largest graph index and selects with a boolean
    mask (two waits), and reads a ratio of 1 as "one node".
    """

    def __init__(self, channels: int, ratio: float):
        super().__init__()
        self.ratio = float(ratio)
        self.select = SelectTopK(channels, ratio=ratio, act="sigmoid")  # holds p; its forward is not used

    def reset_parameters(self) -> None:
        self.select.reset_parameters()

    def num_kept(self, graph_sizes: Tensor) -> Tensor:
        r"""Nodes kept per graph, :math:`\lceil \rho N_g \rceil`."""
        return (self.ratio * graph_sizes.to(self.select.weight.dtype)).ceil().to(torch.long)

    def choose(self, level: Level) -> Selection:
        """Rank ``level``'s nodes and mark the kept nodes and edges, without reading from the device."""
        weight = self.select.weight
        score = self.select.act((level.x * weight).sum(dim=-1) / weight.norm(p=2, dim=-1))
        # PyG's order: by score, then stably by graph.
        order = torch.sort(score, descending=True).indices
        grouped_batch, by_graph = torch.sort(level.batch.index_select(0, order), stable=True)
        ranked = order.index_select(0, by_graph)
        kept_per_graph = self.num_kept(level.graph_sizes)
        first = level.graph_sizes.cumsum(0) - level.graph_sizes
        rank = torch.arange(ranked.numel(), device=ranked.device) - first.index_select(0, grouped_batch)
        kept_in_order = (rank < kept_per_graph.index_select(0, grouped_batch)).to(score.dtype)
        is_kept = torch.zeros_like(score).index_copy_(0, ranked, kept_in_order)
        src, dst = level.edge_index
        edge_kept = is_kept.index_select(0, src) * is_kept.index_select(0, dst)
        if level.edge_mask is not None:
            edge_kept = edge_kept * level.edge_mask
        return Selection(score, ranked, kept_per_graph, is_kept, edge_kept)

    def forward(self, level: Level, selection: Selection, num_kept: int, num_edges: int | None = None) -> Level:
        """Pool ``level`` as ``selection`` says.

        ``num_kept`` is ``selection.kept_per_graph.sum()`` and ``num_edges`` is
        ``selection.edge_kept.count_nonzero()``, both read by the caller; without ``num_edges`` the
        pooled level keeps ``level``'s edge list and marks the absent edges in ``edge_mask``.
        """
        device = level.x.device
        slot = torch.arange(num_kept, device=device)
        end = selection.kept_per_graph.cumsum(0)
        batch = torch.searchsorted(end, slot, right=True)
        first = level.graph_sizes.cumsum(0) - level.graph_sizes
        rank = slot - (end - selection.kept_per_graph).index_select(0, batch)
        kept = selection.ranked.index_select(0, first.index_select(0, batch) + rank)
        x = level.x.index_select(0, kept) * selection.score.index_select(0, kept).unsqueeze(-1)

        position = torch.zeros(level.x.size(0), dtype=torch.long, device=device).index_copy_(0, kept, slot)
        edge_index, edge_type, edge_weight = level.edge_index, level.edge_type, level.edge_weight
        edge_mask: Tensor | None = selection.edge_kept
        if num_edges is not None:
            # The n-th surviving edge is where the running count of survivors first reaches n.
            survivors = edge_mask.to(torch.long).cumsum(0)
            surviving = torch.searchsorted(survivors, torch.arange(1, num_edges + 1, device=device))
            edge_index = edge_index.index_select(1, surviving)
            edge_type, edge_weight = edge_type.index_select(0, surviving), edge_weight.index_select(0, surviving)
            edge_mask = None
        return Level(
            x=x,
            edge_index=position.index_select(0, edge_index.reshape(-1)).view(2, -1),
            edge_type=edge_type,
            edge_weight=edge_weight,
            batch=batch,
            graph_sizes=selection.kept_per_graph,
            kept=kept,
            edge_mask=edge_mask,
        )


def unpool(x_coarse: Tensor, fine: Level, kept: Tensor) -> Tensor:
    r"""Place coarse node states back on the finer level and fill the dropped nodes from kept neighbours.

    .. math::
        \mathbf{h}_i = \mathbf{x}'_{\pi(i)} \text{ if } i \text{ was kept, else }
        \operatorname{mean}_{j \in \mathcal{N}(i),\, j \text{ kept}} \mathbf{x}'_{\pi(j)}

    The mean is a scatter over all of the fine level's edges, each weighted 1 if its source was kept
    (and the edge exists at that level), else 0; no boolean mask selects edges. A dropped node with no kept neighbour starts from
    zero; the relational convolution that follows unpooling gives it context from the reconstructed
    neighbourhood.
    """
    num_nodes, channels = fine.x.size(0), x_coarse.size(1)
    placed = x_coarse.new_zeros(num_nodes, channels).index_copy(0, kept, x_coarse)
    is_kept = x_coarse.new_zeros(num_nodes).index_fill_(0, kept, 1.0)
    src, dst = fine.edge_index
    from_kept = is_kept.index_select(0, src)
    messages = placed.index_select(0, src)  # zero from dropped sources already
    if fine.edge_mask is not None:
        from_kept = from_kept * fine.edge_mask
        messages = messages * fine.edge_mask.unsqueeze(1)
    total = placed.new_zeros(num_nodes, channels).index_add_(0, dst, messages)
    count = from_kept.new_zeros(num_nodes).index_add_(0, dst, from_kept)
    filled = total / count.clamp(min=1).unsqueeze(1)
    return torch.where(is_kept.unsqueeze(1) > 0, placed, filled)


@dataclass
class NSMOutput:
    logits: Tensor  # [num_graphs, num_classes]
    reconstruction: Tensor  # [num_nodes, num_node_features], level-1 input features from WHAT(WHY(x))
    level_sizes: tuple[int, int, int]


class NSM(nn.Module):
    r"""The 3-level Neural Symbolic Model.

    WHY: :math:`h^{(1)} = \mathrm{Conv}^2(\mathrm{Embed}(x))`, :math:`h^{(2)} = \mathrm{Conv}(\mathrm{Pool}(h^{(1)}))`,
    :math:`h^{(3)} = \mathrm{Conv}(\mathrm{Pool}(h^{(2)}))`; the classifier reads
    :math:`\sum_{l=1}^{3} [\mathrm{mean}(h^{(l)}) \,\|\, \max(h^{(l)})]`, the top level plus the levels below it.
    WHAT: :math:`\tilde h^{(2)} = \mathrm{Conv}(\mathrm{Unpool}(h^{(3)}))`,
    :math:`\tilde h^{(1)} = \mathrm{Conv}(\mathrm{Unpool}(\tilde h^{(2)}))`, :math:`\hat x = \mathrm{Dec}(\tilde h^{(1)})`.
    Every convolution sees the domain's relations plus their inverses, so information flows both ways
    along a directed relation.

    Link prediction (``num_query_relations > 0``, GraIL's scoring): each graph is the enclosing
    subgraph of a target triple ``(h, r, t)``, and the classifier reads
    :math:`[\text{readout} \,\|\, h^{(1)}_h \,\|\, h^{(1)}_t \,\|\, e_r]`, the hierarchical readout above
    plus the level-1 states of the two root nodes (``head_index``, ``tail_index``) and a learned
    embedding of the query relation ``relation``, as GraIL scores from the pooled graph, the head and
    tail embeddings and the relation. The triple's score is ``logits[:, 1] - logits[:, 0]``. The
    hierarchy and the cycle loss are unchanged. With ``num_root_features > 0`` the classifier also
    reads each root's relational context (``root_relations``: per root, counts of the facts of each
    relation that leave and enter it, as SNRI adds to GraIL), encoded as
    :math:`c_v = W_c \log(1 + n_v)` with one :math:`W_c` for both roots:
    :math:`[\ldots \,\|\, c_h \,\|\, c_t]`. It tells the kind of entity each root is where the enclosing
    subgraph says nothing (no path between the roots within the hop limit). With ``root_proximity`` it
    also reads :func:`root_proximity` of the two roots, :math:`[\ldots \,\|\, \rho_{ht}]`: how closely
    they are linked whatever the relations, which the PageRank shortcut ranks by and which mean
    aggregation cannot count. With ``root_pagerank`` it reads the Personalized PageRank between the roots
    on the whole graph (``root_pagerank``: :math:`n\,\pi_h(t)` and :math:`n\,\pi_t(h)`, the shortcut's
    score relative to the uniform :math:`1/n`), as :math:`[\ldots \,\|\, \log(1 + n\,\pi)]`: the
    walks beyond the subgraph's hop limit and size cap, which the subgraph cannot show.

    ``forward`` takes the batch's graph count as ``num_graphs`` (``batch.num_graphs`` of a PyG
    ``Batch``); without it the count is read from the device as ``batch.max() + 1``, which also
    misses empty graphs at the end of a batch.
    """

    def __init__(
        self,
        num_node_features: int,
        num_relations: int,
        hidden_dim: int = 64,
        num_bases: int = 8,
        pool_ratio: float = 0.5,
        dropout: float = 0.1,
        num_classes: int = 2,
        num_query_relations: int = 0,
        num_root_features: int = 0,
        root_proximity: bool = False,
        root_pagerank: bool = False,
    ):
        super().__init__()
        self.num_relations = num_relations
        self.num_query_relations = num_query_relations
        self.num_root_features = num_root_features
        self.root_proximity = root_proximity
        self.root_pagerank = root_pagerank
        self.dropout = dropout
        typed = 2 * num_relations  # forward and inverse direction of each relation

        def conv() -> RelationalConv:
            return RelationalConv(hidden_dim, hidden_dim, typed, num_bases)

        self.embed = nn.Linear(num_node_features, hidden_dim)
        self.why_convs = nn.ModuleList([conv(), conv(), conv(), conv()])  # two on level 1, one on 2 and 3
        self.why_pools = nn.ModuleList([TopKPool(hidden_dim, pool_ratio), TopKPool(hidden_dim, pool_ratio)])
        self.what_convs = nn.ModuleList([conv(), conv()])  # level 3 -> 2, level 2 -> 1
        self.decoder = nn.Linear(hidden_dim, num_node_features)
        readout = 2 * hidden_dim
        if num_query_relations > 0:
            self.relation_embed = nn.Embedding(num_query_relations, hidden_dim)
            readout += 3 * hidden_dim  # head state, tail state, query relation
        if num_root_features > 0:
            self.root_encoder = nn.Linear(num_root_features, hidden_dim)
            readout += 2 * hidden_dim  # head context, tail context
        if root_proximity:
            readout += PROXIMITY_FEATURES
        if root_pagerank:
            readout += 2  # head to tail, tail to head
        self.classifier = nn.Sequential(
            nn.Linear(readout, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes)
        )

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def _refine(self, conv: RelationalConv, level: Level, x: Tensor) -> Tensor:
        update = F.relu(conv(x, level.edges))
        return F.dropout(update, self.dropout, self.training)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_type: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        num_graphs: int | None = None,
        head_index: Tensor | None = None,
        tail_index: Tensor | None = None,
        relation: Tensor | None = None,
        root_relations: Tensor | None = None,
        root_pagerank: Tensor | None = None,
    ) -> NSMOutput:
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        level1 = Level(
            x=self.embed(x),
            edge_index=torch.cat([edge_index, edge_index.flip(0)], dim=1),
            edge_type=torch.cat([edge_type, edge_type + self.num_relations]),
            edge_weight=edge_attr.view(-1).repeat(2),
            batch=batch,
            graph_sizes=batch.new_zeros(num_graphs).index_add_(0, batch, torch.ones_like(batch)),
        )
        level1.edges = RelationalEdges.build(
            level1.edge_index, level1.edge_type, level1.edge_weight, x.size(0), 2 * self.num_relations
        )
        # WHY: abstract upwards.
        h1 = self._refine(self.why_convs[0], level1, level1.x)
        level1.x = self._refine(self.why_convs[1], level1, h1)

        # The forward's one read from the device: the sizes of levels 2 and 3 (level 3 keeps level 2's
        # edge list, masked). It comes after the level-1 work is queued, so the device is busy meanwhile.
        pool2, pool3 = self.why_pools
        selection2 = pool2.choose(level1)
        kept3 = pool3.num_kept(selection2.kept_per_graph)
        sizes = torch.stack([selection2.kept_per_graph.sum(), selection2.edge_kept.count_nonzero(), kept3.sum()])
        num_nodes2, num_edges2, num_nodes3 = sizes.tolist()

        level2 = pool2(level1, selection2, num_nodes2, num_edges2)
        level2.edges = RelationalEdges.build(
            level2.edge_index, level2.edge_type, level2.edge_weight, num_nodes2, 2 * self.num_relations
        )
        level2.x = self._refine(self.why_convs[2], level2, level2.x)
        level3 = pool3(level2, pool3.choose(level2), num_nodes3)
        level3.edges = level2.edges.renumbered(level3.edge_index, level3.edge_weight, num_nodes3, level3.edge_mask)
        level3.x = self._refine(self.why_convs[3], level3, level3.x)

        # Hierarchical readout (Cangea et al., 2018): the top level's mean and max plus those of the
        # levels below. Reading level 3 alone trains to chance on planning and causal: early in
        # training the pooling scores do not yet keep the few nodes that decide the label.
        readout = _mean_max_sum((level1, level2, level3), num_graphs)
        if self.num_query_relations > 0:
            if head_index is None or tail_index is None or relation is None:
                raise ValueError("a link-prediction NSM needs head_index, tail_index and relation for every graph")
            parts = [readout, level1.x.index_select(0, head_index), level1.x.index_select(0, tail_index),
                     self.relation_embed(relation)]
            if self.num_root_features > 0:
                if root_relations is None:
                    raise ValueError("this NSM reads root_relations for every graph")
                context = self.root_encoder(torch.log1p(root_relations.float()).view(num_graphs * 2, -1))
                parts.append(context.view(num_graphs, -1))
            if self.root_proximity:
                parts.append(root_proximity(edge_index, x.size(0), head_index, tail_index).to(readout.dtype))
            if self.root_pagerank:
                if root_pagerank is None:
                    raise ValueError("this NSM reads root_pagerank for every graph")
                parts.append(torch.log1p(root_pagerank.to(readout.dtype)))
            readout = torch.cat(parts, dim=1)
        logits = self.classifier(readout)

        # WHAT: concretise downwards, then decode the input features.
        down2 = self._refine(self.what_convs[0], level2, unpool(level3.x, level2, level3.kept))
        down1 = self._refine(self.what_convs[1], level1, unpool(down2, level1, level2.kept))
        reconstruction = self.decoder(down1)
        return NSMOutput(logits, reconstruction, (level1.x.size(0), num_nodes2, num_nodes3))


PROXIMITY_STEPS = 3
"""Longest walk :func:`root_proximity` counts: GraIL's hop limit, so every path its subgraph holds."""

PROXIMITY_FEATURES = 3 * PROXIMITY_STEPS


@torch.no_grad()
def root_proximity(edge_index: Tensor, num_nodes: int, head_index: Tensor, tail_index: Tensor) -> Tensor:
    r"""How closely each graph's two roots are linked, ignoring relation types and directions.

    With :math:`A` the undirected multigraph of the edges (:math:`A_{uv}` facts between :math:`u` and
    :math:`v` either way), :math:`P = D^{-1} A` its random walk and :math:`k = 1, \ldots, K`:

    .. math::
        \rho_{ht} = \big[\log(1 + (A^k)_{ht})\big]_k \,\|\, \big[(P^k)_{ht}\big]_k \,\|\, \big[(P^k)_{th}\big]_k

    walks of :math:`k` steps between head and tail, counted, and the probability that a random walk from
    one root stands on the other after :math:`k` steps: the terms Personalized PageRank sums with weights
    :math:`\alpha (1 - \alpha)^k`. The counts grow with the subgraph's density; the probabilities do not.
    A constant of the data, so no gradient flows through it. ``[len(head_index), 3K]``.
    """
    src, dst = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    dtype = torch.get_default_dtype()
    degree = torch.zeros(num_nodes, dtype=dtype, device=src.device).index_add_(
        0, src, torch.ones(src.numel(), dtype=dtype, device=src.device)
    )
    # Every walk stays in its graph, so one row per node holds its own graph's three walks: counted
    # from the head, the probability from the head, the probability from the tail.
    leave = 1.0 / degree.clamp(min=1.0)
    leave = torch.stack([torch.ones_like(leave), leave, leave], dim=1)
    walks = torch.zeros(num_nodes, 3, dtype=dtype, device=src.device)
    walks[head_index, 0] = 1.0
    walks[head_index, 1] = 1.0
    walks[tail_index, 2] = 1.0
    readings = []
    for _ in range(PROXIMITY_STEPS):
        step = (walks * leave).index_select(0, src)
        walks = torch.zeros_like(walks).index_add_(0, dst, step)
        readings.append(torch.stack([walks[tail_index, 0].log1p(), walks[tail_index, 1], walks[head_index, 2]], dim=1))
    return torch.cat(readings, dim=1)


def _mean_max_sum(levels: tuple[Level, ...], num_graphs: int) -> Tensor:
    """Sum over levels of each graph's [mean || max] node state: one scatter per reduction for all levels."""
    x = torch.cat([level.x for level in levels])
    index = torch.cat([level.batch + i * num_graphs for i, level in enumerate(levels)])
    size = len(levels) * num_graphs
    mean = scatter(x, index, dim=0, dim_size=size, reduce="mean")
    largest = scatter(x, index, dim=0, dim_size=size, reduce="max")
    return torch.cat([mean, largest], dim=1).view(len(levels), num_graphs, -1).sum(0)


def cycle_loss(reconstruction: Tensor, x: Tensor) -> Tensor:
    """Mean squared error between WHAT(WHY(x)) decoded and the input node features.

    The target is the fixed input, not a learned representation, so the loss cannot be lowered by
    shrinking hidden states; a model that infers every dropped node's type and roles drives it to 0.
    """
    return F.mse_loss(reconstruction, x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
