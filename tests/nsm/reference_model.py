"""Frozen copy of ``nsm/model.py`` as of commit 6bbdc65, before the sync-free rewrite (issue #15).

Tests compare the current model against it: same kept nodes, same logits and reconstruction. Do not
edit it; it is the reference, including its host reads and PyG's top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.pool.select import SelectTopK
from torch_geometric.utils import scatter, subgraph


class RelationalConv(nn.Module):
    r"""Relational graph convolution with basis decomposition and edge confidence.

    .. math::
        \mathbf{x}'_i = \mathbf{W}_0 \mathbf{x}_i + \sum_{r} \sum_{j \in \mathcal{N}_r(i)}
        \frac{c_{ji}}{|\mathcal{N}_r(i)|} \mathbf{W}_r \mathbf{x}_j,
        \qquad \mathbf{W}_r = \sum_{b=1}^{B} a_{rb} \mathbf{V}_b

    where :math:`c_{ji}` is the confidence of edge :math:`j \to i`. This is PyG's ``RGCNConv`` with
    basis decomposition plus a per-edge weight, which ``RGCNConv`` does not accept. Every node is
    transformed by the :math:`B` bases in one dense product; each edge then mixes its source's
    :math:`B` rows with its relation's coefficients, so no :math:`\mathbf{W}_r` is ever applied to
    every node.
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

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor, edge_weight: Tensor) -> Tensor:
        num_nodes = x.size(0)
        src, dst = edge_index
        slot = dst * self.num_relations + edge_type
        per_relation_degree = scatter(
            torch.ones_like(edge_weight), slot, dim=0, dim_size=num_nodes * self.num_relations, reduce="sum"
        )
        edge_scale = edge_weight / per_relation_degree[slot]
        # x V_b for every basis in one product, then each edge mixes its source's B rows with its
        # relation's coefficients: cheaper than x W_r for all R relations when B < R.
        per_basis = (x @ self.bases.permute(1, 0, 2).reshape(self.in_channels, -1)).view(num_nodes, self.num_bases, -1)
        mix = (self.coefficients[edge_type] * edge_scale.unsqueeze(1)).unsqueeze(1)
        messages = torch.bmm(mix, per_basis[src]).squeeze(1)
        return scatter(messages, dst, dim=0, dim_size=num_nodes, reduce="sum") + self.root(x)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"num_relations={self.num_relations}, num_bases={self.num_bases})"
        )


@dataclass
class Level:
    """One level of the hierarchy: its graph and, for levels above 1, where its nodes came from."""

    x: Tensor
    edge_index: Tensor
    edge_type: Tensor
    edge_weight: Tensor
    batch: Tensor
    kept: Tensor | None = None  # indices into the level below of the nodes pooling kept


class TopKPool(nn.Module):
    r"""Learned top-k pooling (Graph U-Nets) that keeps relation types and confidences of surviving edges.

    .. math::
        \mathbf{y} = \tanh(\mathbf{X}\mathbf{p} / \|\mathbf{p}\|), \quad
        \mathbf{i} = \mathrm{top}_{\lceil kN \rceil}(\mathbf{y}), \quad
        \mathbf{X}' = (\mathbf{X} \odot \mathbf{y})_{\mathbf{i}}

    Selection is PyG's ``SelectTopK``; the gate by :math:`\mathbf{y}` lets the scorer learn. Edges between
    kept nodes survive with their type and confidence.
    """

    def __init__(self, channels: int, ratio: float):
        super().__init__()
        self.select = SelectTopK(channels, ratio=ratio, act="sigmoid")

    def reset_parameters(self) -> None:
        self.select.reset_parameters()

    def forward(self, level: Level) -> Level:
        selection = self.select(level.x, level.batch)
        kept = selection.node_index
        x = level.x[kept] * selection.weight.unsqueeze(-1)
        edge_index, _, edge_mask = subgraph(
            kept, level.edge_index, relabel_nodes=True, num_nodes=level.x.size(0), return_edge_mask=True
        )
        return Level(
            x=x,
            edge_index=edge_index,
            edge_type=level.edge_type[edge_mask],
            edge_weight=level.edge_weight[edge_mask],
            batch=level.batch[kept],
            kept=kept,
        )


def unpool(x_coarse: Tensor, fine: Level, kept: Tensor) -> Tensor:
    r"""Place coarse node states back on the finer level and fill the dropped nodes from kept neighbours.

    .. math::
        \mathbf{h}_i = \mathbf{x}'_{\pi(i)} \text{ if } i \text{ was kept, else }
        \operatorname{mean}_{j \in \mathcal{N}(i),\, j \text{ kept}} \mathbf{x}'_{\pi(j)}

    A dropped node with no kept neighbour starts from zero; the relational convolution that follows
    unpooling gives it context from the reconstructed neighbourhood.
    """
    num_nodes = fine.x.size(0)
    placed = x_coarse.new_zeros(num_nodes, x_coarse.size(1))
    placed[kept] = x_coarse
    is_kept = torch.zeros(num_nodes, dtype=torch.bool, device=x_coarse.device)
    is_kept[kept] = True
    src, dst = fine.edge_index
    from_kept = is_kept[src]
    filled = scatter(placed[src[from_kept]], dst[from_kept], dim=0, dim_size=num_nodes, reduce="mean")
    return torch.where(is_kept.unsqueeze(1), placed, filled)


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
    ):
        super().__init__()
        self.num_relations = num_relations
        self.dropout = dropout
        typed = 2 * num_relations  # forward and inverse direction of each relation

        def conv() -> RelationalConv:
            return RelationalConv(hidden_dim, hidden_dim, typed, num_bases)

        self.embed = nn.Linear(num_node_features, hidden_dim)
        self.why_convs = nn.ModuleList([conv(), conv(), conv(), conv()])  # two on level 1, one on 2 and 3
        self.why_pools = nn.ModuleList([TopKPool(hidden_dim, pool_ratio), TopKPool(hidden_dim, pool_ratio)])
        self.what_convs = nn.ModuleList([conv(), conv()])  # level 3 -> 2, level 2 -> 1
        self.decoder = nn.Linear(hidden_dim, num_node_features)
        self.classifier = nn.Sequential(
            nn.Linear(2 * hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes)
        )

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def _refine(self, conv: RelationalConv, level: Level, x: Tensor) -> Tensor:
        update = F.relu(conv(x, level.edge_index, level.edge_type, level.edge_weight))
        return F.dropout(update, self.dropout, self.training)

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor, edge_attr: Tensor, batch: Tensor) -> NSMOutput:
        level1 = Level(
            x=self.embed(x),
            edge_index=torch.cat([edge_index, edge_index.flip(0)], dim=1),
            edge_type=torch.cat([edge_type, edge_type + self.num_relations]),
            edge_weight=edge_attr.view(-1).repeat(2),
            batch=batch,
        )
        # WHY: abstract upwards.
        h1 = self._refine(self.why_convs[0], level1, level1.x)
        h1 = self._refine(self.why_convs[1], level1, h1)
        level1.x = h1
        level2 = self.why_pools[0](level1)
        level2.x = self._refine(self.why_convs[2], level2, level2.x)
        level3 = self.why_pools[1](level2)
        level3.x = self._refine(self.why_convs[3], level3, level3.x)

        # Hierarchical readout (Cangea et al., 2018): the top level's mean and max plus those of the
        # levels below. Reading level 3 alone trains to chance on planning and causal: early in
        # training the pooling scores do not yet keep the few nodes that decide the label.
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        readout = sum(_mean_max(level.x, level.batch, num_graphs) for level in (level1, level2, level3))
        logits = self.classifier(readout)

        # WHAT: concretise downwards, then decode the input features.
        down2 = self._refine(self.what_convs[0], level2, unpool(level3.x, level2, level3.kept))
        down1 = self._refine(self.what_convs[1], level1, unpool(down2, level1, level2.kept))
        reconstruction = self.decoder(down1)
        return NSMOutput(logits, reconstruction, (level1.x.size(0), level2.x.size(0), level3.x.size(0)))


def _mean_max(x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    return torch.cat(
        [scatter(x, batch, dim=0, dim_size=num_graphs, reduce="mean"), scatter(x, batch, dim=0, dim_size=num_graphs, reduce="max")],
        dim=1,
    )
