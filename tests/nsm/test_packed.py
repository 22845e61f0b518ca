"""Tests of nsm.data.packed: batches equal PyG's Batch.from_data_list, subsets, save/load, bad input."""

from __future__ import annotations

import random

import pytest
import torch
from torch_geometric.data import Batch, Data

from nsm.data.packed import PackedGraphs


def _graphs(count: int, seed: int, empty_every: int = 0) -> list[Data]:
    """Random small typed graphs with a uint8-able one-hot ``x``, edge weights and per-graph attributes."""
    rng = random.Random(seed)
    graphs = []
    for i in range(count):
        n = rng.randint(1, 9)
        e = 0 if empty_every and i % empty_every == 0 else rng.randint(0, 3 * n)
        x = torch.zeros(n, 5)
        x[torch.arange(n), torch.tensor([rng.randrange(5) for _ in range(n)])] = 1.0
        graphs.append(
            Data(
                x=x,
                edge_index=torch.tensor([[rng.randrange(n) for _ in range(e)], [rng.randrange(n) for _ in range(e)]], dtype=torch.long).view(2, e),
                edge_type=torch.tensor([rng.randrange(7) for _ in range(e)], dtype=torch.long),
                edge_attr=torch.tensor([[rng.random()] for _ in range(e)], dtype=torch.float32).view(e, 1),
                y=torch.tensor([rng.randrange(2)]),
                head_index=torch.tensor([rng.randrange(n)]),
                tail_index=torch.tensor([rng.randrange(n)]),
                relation=torch.tensor([rng.randrange(7)]),
            )
        )
    return graphs


CORE = ("x", "edge_index", "edge_type", "edge_attr", "y", "batch", "ptr")
ALL = ("head_index", "tail_index", "relation")


def _assert_same_as_pyg(packed: PackedGraphs, graphs: list[Data], index: list[int], graph_keys=ALL) -> None:
    ours = packed.batch(index)
    theirs = Batch.from_data_list([graphs[i] for i in index])
    assert ours.num_graphs == theirs.num_graphs == len(index)
    for key in CORE + tuple(graph_keys):
        a, b = getattr(ours, key), getattr(theirs, key)
        assert a.dtype == b.dtype, key
        assert torch.equal(a, b), key


@pytest.mark.parametrize("compact", [False, True])
def test_batch_equals_pyg_batching(compact):
    graphs = _graphs(60, seed=1, empty_every=7)
    dtypes = dict(x_dtype=torch.uint8, index_dtype=torch.int16, edge_type_dtype=torch.int16) if compact else {}
    packed = PackedGraphs.from_data_list(graphs, graph_keys=ALL, **dtypes)
    if compact:
        assert packed.x.dtype == torch.uint8 and packed.edge_index.dtype == torch.int16
    rng = random.Random(2)
    for index in ([0], list(range(60)), list(range(59, -1, -1)), [rng.randrange(60) for _ in range(40)], [5, 5, 5]):
        _assert_same_as_pyg(packed, graphs, index)


def test_batch_accepts_a_tensor_index_and_negative_positions():
    graphs = _graphs(10, seed=3)
    packed = PackedGraphs.from_data_list(graphs, graph_keys=("head_index",))
    a = packed.batch(torch.tensor([9, 1]))
    b = packed.batch([-1, 1])
    assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and torch.equal(a.head_index, b.head_index)
    with pytest.raises(IndexError):
        packed.batch([10])


def test_batches_cover_an_order_like_pyg_and_build_each_batch_without_waiting():
    from nsm._sync import SyncCounter

    graphs = _graphs(50, seed=5, empty_every=6)
    packed = PackedGraphs.from_data_list(graphs, graph_keys=ALL)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    with SyncCounter(cpu_is_device=True) as syncs:
        passes = iter(packed.batches(16, order))
        first = next(passes)  # the pass's set-up: the sizes (once per store) and the order, read once
        setup = syncs.count
        rest = list(passes)
    assert setup <= 3 and syncs.count == setup, syncs.describe()  # the other 3 batches waited for nothing
    assert [b.num_graphs for b in (first, *rest)] == [16, 16, 16, 2]
    for start, ours in zip(range(0, 50, 16), (first, *rest)):
        theirs = Batch.from_data_list([graphs[i] for i in order[start : start + 16].tolist()])
        for key in CORE + ALL:
            assert torch.equal(getattr(ours, key), getattr(theirs, key)), key
    assert [b.num_graphs for b in packed.batches(64)] == [50]  # default: stored order
    with pytest.raises(IndexError):
        next(packed.batches(8, [0, 50]))
    with pytest.raises(ValueError):
        next(packed.batches(0))


def test_without_edge_attr_the_batch_has_none_like_pyg():
    graphs = _graphs(8, seed=4)
    for g in graphs:
        del g.edge_attr
    packed = PackedGraphs.from_data_list(graphs)
    assert packed.batch([0, 3]).edge_attr is None
    assert Batch.from_data_list([graphs[0], graphs[3]]).edge_attr is None


def test_subset_keeps_graphs_and_storage():
    graphs = _graphs(30, seed=5)
    packed = PackedGraphs.from_data_list(graphs, graph_keys=("head_index", "relation"), x_dtype=torch.uint8)
    pick = [7, 3, 3, 29, 0]
    sub = packed.subset(pick)
    assert len(sub) == 5 and sub.x.dtype == torch.uint8
    _assert_same_as_pyg(sub, [graphs[i] for i in pick], list(range(5)), graph_keys=("head_index", "relation"))


def test_single_graph_round_trips_through_getitem():
    graphs = _graphs(5, seed=6)
    packed = PackedGraphs.from_data_list(graphs, graph_keys=("head_index",))
    g = packed[2]
    assert torch.equal(g.x, graphs[2].x) and torch.equal(g.edge_index, graphs[2].edge_index)
    assert int(g.head_index) == int(graphs[2].head_index)


def test_save_and_load_with_weights_only(tmp_path):
    graphs = _graphs(12, seed=7)
    packed = PackedGraphs.from_data_list(graphs, graph_keys=("tail_index",), x_dtype=torch.uint8)
    torch.save(packed.to_dict(), tmp_path / "p.pt")
    loaded = PackedGraphs.from_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    assert loaded.x.dtype == torch.uint8
    _assert_same_as_pyg(loaded, graphs, list(range(12)), graph_keys=("tail_index",))


def test_to_device_and_batch_to_device():
    packed = PackedGraphs.from_data_list(_graphs(4, seed=8), graph_keys=("head_index",))
    moved = packed.to("cpu")
    assert moved.device == torch.device("cpu")
    batch = moved.batch([0, 1]).to("cpu")
    assert batch.x.device == torch.device("cpu") and batch.num_graphs == 2
    assert set(batch.keys()) >= {"x", "edge_index", "edge_type", "edge_attr", "y", "batch", "ptr", "head_index"}


def test_inconsistent_stores_are_rejected():
    graphs = _graphs(4, seed=9)
    good = PackedGraphs.from_data_list(graphs, graph_keys=("head_index",)).to_dict()
    with pytest.raises(ValueError, match="x has"):
        PackedGraphs.from_dict({**good, "x": good["x"][:-1]})
    with pytest.raises(ValueError, match="edge_type"):
        PackedGraphs.from_dict({**good, "edge_type": good["edge_type"][:-1]})
    with pytest.raises(ValueError, match="one row per graph"):
        PackedGraphs.from_dict({**good, "graph_attrs": {"head_index": torch.zeros(3, dtype=torch.long)}})
    with pytest.raises(ValueError, match="reserved"):
        PackedGraphs.from_dict({**good, "graph_attrs": {"batch": torch.zeros(4, dtype=torch.long)}})
    with pytest.raises(ValueError, match="not a packed-graphs payload"):
        PackedGraphs.from_dict({"x": good["x"]})
    with pytest.raises(ValueError, match="empty"):
        PackedGraphs.from_data_list([])


def test_the_synthetic_domains_cache_payload_loads_as_a_store():
    """nsm.data._cache packs the synthetic domains in the same layout: they can move onto the store."""
    from nsm.data import _cache, kg

    graphs = kg.generate(24, seed=0)
    packed = PackedGraphs.from_dict(_cache.pack(graphs, {"domain": "kg"}))
    _assert_same_as_pyg(packed, graphs, [3, 0, 23, 3], graph_keys=())
