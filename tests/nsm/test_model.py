import torch
from torch_geometric.data import Batch, Data

from nsm.model import NSM, Level, RelationalConv, count_parameters, cycle_loss, unpool


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

    assert torch.allclose(conv(x, edge_index, edge_type, weight), expected, atol=1e-5)


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
    out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
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
