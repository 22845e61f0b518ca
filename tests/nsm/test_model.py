import torch
from torch_geometric.data import Batch, Data

import pytest
from torch_geometric.loader import DataLoader
from torch_geometric.nn.pool.select.topk import topk as pyg_topk

from nsm.data import DOMAINS, load_domain
from nsm.model import (
    NSM, PROXIMITY_STEPS, Level, RelationalConv, RelationalEdges, TopKPool, count_parameters, cycle_loss, root_proximity,
    unpool,
)
from tests.nsm import reference_model


def _toy_graphs(num_graphs=3, num_nodes=12, num_edges=24, num_relations=4, num_features=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(num_graphs):
        types = torch.randint(0, num_features, (num_nodes,), generator=generator)
        graphs.append(
            Data(
                x=torch.nn.functional.one_hot(types, num_features).float(),
                edge_index=torch.randint(0, num_nodes, (2, num_edges), generator=generator),
                edge_type=torch.randint(0, num_relations, (num_edges,), generator=generator),
                edge_attr=torch.rand(num_edges, 1, generator=generator) * 0.5 + 0.5,
                y=torch.tensor([0]),
            )
        )
    return Batch.from_data_list(graphs)


def test_relational_conv_matches_the_per_edge_formula():
    torch.manual_seed(0)
    conv = RelationalConv(6, 5, num_relations=3, num_bases=2)
    x = torch.randn(7, 6)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 0], [1, 1, 1, 2, 2, 3, 0, 0]])
    edge_type = torch.tensor([0, 0, 1, 2, 2, 1, 0, 2])
    weight = torch.tensor([0.5, 1.0, 0.8, 0.9, 0.7, 1.0, 0.6, 0.95])

    expected = conv.root(x)
    relation_weights = torch.einsum("rb,bio->rio", conv.coefficients, conv.bases)
    for i in range(7):
        for r in range(3):
            incoming = [(j, c) for (j, d), t, c in zip(edge_index.t().tolist(), edge_type.tolist(), weight.tolist()) if d == i and t == r]
            for j, c in incoming:
                expected[i] += c / len(incoming) * x[j] @ relation_weights[r]

    edges = RelationalEdges.build(edge_index, edge_type, weight, num_nodes=7, num_relations=3)
    assert torch.allclose(conv(x, edges), expected, atol=1e-5)


def test_absent_edges_count_as_removed_ones():
    torch.manual_seed(0)
    conv = RelationalConv(4, 4, num_relations=2, num_bases=2)
    x = torch.randn(5, 4)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0], [1, 1, 1, 2, 2, 3]])
    edge_type = torch.tensor([0, 0, 1, 1, 1, 0])
    weight = torch.rand(6) + 0.5
    present = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    keep = present.bool()
    masked = RelationalEdges.build(edge_index, edge_type, weight, 5, 2, edge_mask=present)
    removed = RelationalEdges.build(edge_index[:, keep], edge_type[keep], weight[keep], 5, 2)
    assert torch.allclose(conv(x, masked), conv(x, removed), atol=1e-6)


def test_edge_layout_blocks_hold_one_relation_each():
    # More edges of one relation than a block holds, relations without edges, and absent ones.
    generator = torch.Generator().manual_seed(0)
    edge_type = torch.cat([torch.zeros(150, dtype=torch.long), torch.randint(2, 5, (40,), generator=generator)])
    edge_index = torch.randint(0, 30, (2, edge_type.numel()), generator=generator)
    edges = RelationalEdges.build(edge_index, edge_type, torch.ones(edge_type.numel()), 30, num_relations=6)
    slot_relation = edges.block_relation.repeat_interleave(edges.src.numel() // edges.block_relation.numel())
    assert torch.equal(slot_relation[edges.slot], edge_type)
    assert edges.slot.unique().numel() == edge_type.numel()
    assert torch.equal(edges.src[edges.slot], edge_index[0]) and torch.equal(edges.dst[edges.slot], edge_index[1])
    padding = torch.ones(edges.src.numel(), dtype=torch.bool)
    padding[edges.slot] = False
    assert edges.norm[padding].abs().sum() == 0


def test_unpool_restores_kept_nodes_and_fills_dropped_ones_from_kept_neighbours():
    fine = Level(
        x=torch.zeros(4, 2),
        edge_index=torch.tensor([[0, 1, 3], [2, 2, 1]]),  # 2 hears 0 and 1; 1 hears 3 (dropped)
        edge_type=torch.zeros(3, dtype=torch.long),
        edge_weight=torch.ones(3),
        batch=torch.zeros(4, dtype=torch.long),
    )
    kept = torch.tensor([0, 1])
    coarse = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    restored = unpool(coarse, fine, kept)
    assert torch.equal(restored[0], coarse[0]) and torch.equal(restored[1], coarse[1])
    assert torch.allclose(restored[2], torch.tensor([2.0, 3.0]))  # mean of kept neighbours 0 and 1
    assert torch.equal(restored[3], torch.zeros(2))  # no kept neighbour


def test_default_model_size_and_hierarchy():
    model = NSM(num_node_features=5, num_relations=4)
    assert 200_000 <= count_parameters(model) <= 500_000
    batch = _toy_graphs()
    out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=batch.num_graphs)
    assert out.logits.shape == (3, 2)
    assert out.reconstruction.shape == batch.x.shape
    assert out.level_sizes == (36, 18, 9)  # ratio 0.5 per level, per graph


def test_every_part_of_the_model_gets_gradient_from_its_losses():
    torch.manual_seed(0)
    model = NSM(num_node_features=5, num_relations=4, hidden_dim=16, dropout=0.0)
    batch = _toy_graphs()
    out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
    loss = torch.nn.functional.cross_entropy(out.logits, batch.y) + cycle_loss(out.reconstruction, batch.x)
    loss.backward()
    without_gradient = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without_gradient == []


def test_cycle_loss_can_be_driven_near_zero_on_a_fixed_batch():
    # A perfect WHAT(WHY(x)) exists: the loss is not floored by dropped nodes or noise targets.
    torch.manual_seed(0)
    model = NSM(num_node_features=5, num_relations=4, hidden_dim=32, dropout=0.0)
    batch = _toy_graphs(num_graphs=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
        loss = cycle_loss(out.reconstruction, batch.x)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first
    assert loss.item() < 0.02


def _kept_nodes(model):
    """Record the kept node indices of each pooling during forward calls."""
    kept = []
    for pool in model.why_pools:
        pool.register_forward_hook(lambda module, args, level: kept.append(level.kept))
    return kept


def _reference_and_current(data, dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    reference = reference_model.NSM(data.num_node_features, data.num_relations, **kwargs).to(dtype)
    current = NSM(data.num_node_features, data.num_relations, **kwargs).to(dtype)
    current.load_state_dict(reference.state_dict())  # also checks that old checkpoints still load
    return reference, current


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_same_outputs_and_kept_nodes_as_the_reference_model(domain, dtype):
    data = load_domain(domain, num_graphs=200, seed=1)
    reference, current = _reference_and_current(data, dtype)
    reference.eval(), current.eval()
    kept_reference, kept_current = _kept_nodes(reference), _kept_nodes(current)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for batch in DataLoader(data.train + data.val, batch_size=64):
        x, edge_attr = batch.x.to(dtype), batch.edge_attr.to(dtype)
        with torch.no_grad():
            expected = reference(x, batch.edge_index, batch.edge_type, edge_attr, batch.batch)
            out = current(x, batch.edge_index, batch.edge_type, edge_attr, batch.batch, num_graphs=batch.num_graphs)
        assert out.level_sizes == expected.level_sizes
        assert len(kept_current) == len(kept_reference) == 2
        for ours, theirs in zip(kept_current, kept_reference):
            assert torch.equal(ours, theirs)
        torch.testing.assert_close(out.logits, expected.logits, atol=tolerance, rtol=tolerance)
        torch.testing.assert_close(out.reconstruction, expected.reconstruction, atol=tolerance, rtol=tolerance)
        kept_reference.clear(), kept_current.clear()


def test_same_gradients_as_the_reference_model_in_training_mode():
    # Same seed, same dropout masks: the rewrite draws random numbers in the same order.
    data = load_domain("planning", num_graphs=200, seed=1)
    reference, current = _reference_and_current(data, torch.float64)
    batch = next(iter(DataLoader(data.train, batch_size=32)))
    x, edge_attr = batch.x.double(), batch.edge_attr.double()
    for model, extra in ((reference, {}), (current, {"num_graphs": batch.num_graphs})):
        torch.manual_seed(1)
        out = model(x, batch.edge_index, batch.edge_type, edge_attr, batch.batch, **extra)
        (torch.nn.functional.cross_entropy(out.logits, batch.y) + cycle_loss(out.reconstruction, x)).backward()
    for (name, theirs), ours in zip(reference.named_parameters(), current.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-10, rtol=1e-8, msg=name)


def test_top_k_selects_like_pyg_including_ties_and_empty_graphs():
    generator = torch.Generator().manual_seed(0)
    sizes = torch.tensor([5, 0, 7, 1, 12])
    batch = torch.repeat_interleave(torch.arange(5), sizes)
    pool = TopKPool(channels=3, ratio=0.4)
    x = torch.randint(0, 3, (int(sizes.sum()), 3), generator=generator).float()  # repeated rows: tied scores
    level = Level(x=x, edge_index=torch.zeros(2, 0, dtype=torch.long), edge_type=torch.zeros(0, dtype=torch.long),
                  edge_weight=torch.zeros(0), batch=batch, graph_sizes=sizes)
    selection = pool.choose(level)
    pooled = pool(level, selection, int(selection.kept_per_graph.sum()))
    score = pool.select.act((x * pool.select.weight).sum(-1) / pool.select.weight.norm())
    assert torch.equal(pooled.kept, pyg_topk(score, 0.4, batch))
    assert torch.equal(pooled.batch, batch[pooled.kept])
    assert pooled.graph_sizes.tolist() == [2, 0, 3, 1, 5]


def test_pool_ratio_one_keeps_every_node():
    # PyG's top-k reads a ratio of 1 as "keep one node per graph".
    torch.manual_seed(0)
    batch = _toy_graphs()
    model = NSM(num_node_features=5, num_relations=4, hidden_dim=16, pool_ratio=1.0).eval()
    kept = _kept_nodes(model)
    with torch.no_grad():
        out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=3)
    assert out.level_sizes == (36, 36, 36)
    assert sorted(kept[0].tolist()) == list(range(36)) and sorted(kept[1].tolist()) == list(range(36))


def test_num_graphs_keeps_empty_graphs_at_the_end_of_a_batch():
    graphs = _toy_graphs().to_data_list()
    empty = Data(x=torch.zeros(0, 5), edge_index=torch.zeros(2, 0, dtype=torch.long),
                 edge_type=torch.zeros(0, dtype=torch.long), edge_attr=torch.zeros(0, 1), y=torch.tensor([1]))
    batch = Batch.from_data_list(graphs + [empty])
    model = NSM(num_node_features=5, num_relations=4, hidden_dim=16).eval()
    with torch.no_grad():
        out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=batch.num_graphs)
        inferred = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
    assert out.logits.shape == (4, 2)
    assert inferred.logits.shape == (3, 2)  # without num_graphs the count comes from batch.max()
    torch.testing.assert_close(out.logits[:3], inferred.logits)


def test_root_proximity_counts_walks_and_their_probabilities_in_each_graph():
    """Against dense matrix powers of each graph alone: the batch's other graphs do not leak in, parallel
    and reversed edges count as facts between the roots, and a root without edges reads 0."""
    batch = _toy_graphs(num_graphs=3, num_nodes=6, num_edges=5, seed=3)
    isolated = Data(x=torch.zeros(2, 5), edge_index=torch.zeros(2, 0, dtype=torch.long),
                    edge_type=torch.zeros(0, dtype=torch.long), edge_attr=torch.zeros(0, 1), y=torch.tensor([0]))
    batch = Batch.from_data_list(batch.to_data_list() + [isolated])
    first = batch.ptr[:-1]
    head, tail = first, first + 1
    features = root_proximity(batch.edge_index, batch.num_nodes, head, tail)
    assert features.shape == (4, 3 * PROXIMITY_STEPS)
    for g in range(4):
        lo, hi = int(batch.ptr[g]), int(batch.ptr[g + 1])
        adjacency = torch.zeros(hi - lo, hi - lo)
        for s, d in batch.edge_index.t().tolist():
            if lo <= s < hi:
                adjacency[s - lo, d - lo] += 1
                adjacency[d - lo, s - lo] += 1
        walk = adjacency / adjacency.sum(1, keepdim=True).clamp(min=1)
        for k in range(1, PROXIMITY_STEPS + 1):
            counts, probabilities = torch.matrix_power(adjacency, k), torch.matrix_power(walk, k)
            expected = torch.stack([counts[0, 1].log1p(), probabilities[0, 1], probabilities[1, 0]])
            torch.testing.assert_close(features[g, 3 * (k - 1):3 * k], expected)
    assert features[3].eq(0).all()
    assert features[:3].gt(0).any()  # the toy graphs link their roots, so the comparison can fail


def _four_link_graphs(seed: int) -> tuple[Batch, torch.Tensor, dict[str, torch.Tensor]]:
    """Four toy graphs as link targets: each graph's first two nodes are its roots, relation 0."""
    batch = _toy_graphs(num_graphs=4, seed=seed)
    first = batch.ptr[:-1]
    torch.manual_seed(0)
    return batch, first, dict(head_index=first, tail_index=first + 1, relation=torch.zeros(4, dtype=torch.long))


def test_root_proximity_reaches_the_score_and_takes_no_gradient():
    batch, first, inputs = _four_link_graphs(seed=5)
    model = NSM(num_node_features=5, num_relations=4, hidden_dim=16, num_query_relations=4, root_proximity=True).eval()
    assert model.classifier[0].in_features == 5 * 16 + 3 * PROXIMITY_STEPS
    out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=4, **inputs)
    # Parallel copies of every edge change the walk counts and nothing else the model reads (mean aggregation).
    doubled = torch.cat([batch.edge_index, batch.edge_index], dim=1)
    again = model(batch.x, doubled, batch.edge_type.repeat(2), batch.edge_attr.repeat(2, 1), batch.batch, num_graphs=4,
                  **inputs)
    assert not torch.allclose(out.logits, again.logits)
    model.root_proximity = False
    model.classifier[0] = torch.nn.Linear(5 * 16, 16)
    plain = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=4, **inputs)
    plain_doubled = model(batch.x, doubled, batch.edge_type.repeat(2), batch.edge_attr.repeat(2, 1), batch.batch,
                          num_graphs=4, **inputs)
    torch.testing.assert_close(plain.logits, plain_doubled.logits)
    assert not root_proximity(batch.edge_index, batch.num_nodes, first, first + 1).requires_grad


def test_root_pagerank_reaches_the_score_and_is_required_when_read():
    batch, _, inputs = _four_link_graphs(seed=6)
    model = NSM(num_node_features=5, num_relations=4, hidden_dim=16, num_query_relations=4, root_pagerank=True).eval()
    assert model.classifier[0].in_features == 5 * 16 + 2
    graphs = (batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
    pagerank = torch.tensor([[0.5, 0.4], [3.0, 2.0], [0.0, 0.0], [1.0, 1.0]])
    out = model(*graphs, num_graphs=4, root_pagerank=pagerank, **inputs)
    changed = pagerank.clone()
    changed[1] = 0.0
    again = model(*graphs, num_graphs=4, root_pagerank=changed, **inputs)
    # Graph 1's input alone changed, and so does its score alone: the input is per graph.
    moved = ~torch.isclose(out.logits, again.logits).all(dim=1)
    assert moved.tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="root_pagerank"):
        model(*graphs, num_graphs=4, **inputs)
