"""A tiny builder shared by the domain generators: typed nodes, typed edges, one ``Data`` out."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch_geometric.data import Data


class GraphBuilder:
    """Collects nodes (as active feature columns) and typed directed edges of one graph."""

    def __init__(self, num_features: int) -> None:
        self.num_features = num_features
        self.node_features: list[tuple[int, ...]] = []
        self.edges: list[list[int]] = []  # [src, dst, relation]; lists so a corruption can rewire in place

    def add_node(self, *features: int) -> int:
        self.node_features.append(features)
        return len(self.node_features) - 1

    def add_edge(self, src: int, dst: int, relation: int) -> None:
        self.edges.append([src, dst, relation])

    def has_edge(self, src: int, dst: int) -> bool:
        return any(e[0] == src and e[1] == dst for e in self.edges)

    def build(self, label: int, rng: random.Random) -> Data:
        """Returns the graph as ``Data`` with nodes and edges in a random order.

        The shuffle keeps generation order (e.g. "the treatment is node 0", "the corrupted edge is
        last") from leaking the role of a node or edge to anything that looks at indices.
        """
        num_nodes = len(self.node_features)
        perm = list(range(num_nodes))
        rng.shuffle(perm)  # perm[old] = new
        x = np.zeros((num_nodes, self.num_features), dtype=np.float32)
        for old, features in enumerate(self.node_features):
            x[perm[old], list(features)] = 1.0
        edges = [(perm[s], perm[d], r) for s, d, r in self.edges]
        rng.shuffle(edges)
        arr = np.asarray(edges, dtype=np.int64).reshape(-1, 3)
        # Confidence is noise with the same distribution in both classes, in (0.5, 1].
        conf = np.asarray([1.0 - 0.5 * rng.random() for _ in edges], dtype=np.float32).reshape(-1, 1)
        return Data(
            x=torch.from_numpy(x),
            edge_index=torch.from_numpy(np.ascontiguousarray(arr[:, :2].T)),
            edge_type=torch.from_numpy(np.ascontiguousarray(arr[:, 2])),
            edge_attr=torch.from_numpy(conf),
            y=torch.tensor([label], dtype=torch.long),
        )


def balanced_labels(num_graphs: int, rng: random.Random) -> list[int]:
    """Exactly half positives (the extra one of an odd count is a negative), in random order."""
    labels = [1] * (num_graphs // 2) + [0] * (num_graphs - num_graphs // 2)
    rng.shuffle(labels)
    return labels
