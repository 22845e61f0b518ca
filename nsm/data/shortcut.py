"""Count-only features of a graph: what a classifier could use if labels leaked through graph size.

Every domain's labels must be unpredictable from these (tests/nsm/test_data.py holds a gradient-boosted
classifier on them to at most 0.65 test accuracy; bench/trainer.py prints its score beside the NSM's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch_geometric.data import Data


def count_features(graphs: Sequence[Data], num_relations: int) -> np.ndarray:
    """One row per graph: nodes, edges, nodes per type, and, for all edges and for each relation, the
    edge count and the mean/max/std of out- and in-degree."""
    rows = []
    for graph in graphs:
        num_nodes = graph.num_nodes
        src, dst = graph.edge_index.numpy()
        relation = graph.edge_type.numpy()
        row = [num_nodes, len(relation), *graph.x.sum(0).tolist()]
        for mask in [np.ones_like(relation, dtype=bool)] + [relation == r for r in range(num_relations)]:
            row.append(int(mask.sum()))
            for ends in (src[mask], dst[mask]):
                degree = np.bincount(ends, minlength=num_nodes)
                row += [degree.mean(), degree.max(), degree.std()]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)
