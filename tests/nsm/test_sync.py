"""Host-device synchronisation points: the counter itself, and the model's budget (issue #15).

The training step may wait for the device at most 4 times and an evaluation batch at most 2 times;
the model's share is its one read of the pooled sizes.
"""

import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader

from nsm._sync import SyncCounter
from nsm.data import load_domain
from nsm.model import NSM, cycle_loss
from tests.nsm import reference_model

MODEL_SYNCS_PER_STEP = 1  # NSM.forward reads the sizes of levels 2 and 3 once; backward reads nothing


def test_counter_sees_each_kind_of_wait_and_nothing_else():
    t = torch.arange(6.0)
    mask = t > 2
    waits = {
        "item": lambda: t.sum().item(),
        "int": lambda: int(t.max()),
        "bool": lambda: bool((t > 3).any()),
        "nonzero": lambda: mask.nonzero(),
        "boolean-mask indexing": lambda: t[mask],
        "boolean-mask assignment": lambda: t.clone().__setitem__(mask, 0.0),
        "masked_select": lambda: t.masked_select(mask),
        "tolist": lambda: t.tolist(),
        "cpu()": lambda: t.cpu(),
        "numpy()": lambda: t.numpy(),
        "equal": lambda: torch.equal(t, t),
        "unique": lambda: t.unique(),
        "bincount": lambda: torch.bincount(t.long()),
        "repeat_interleave without output_size": lambda: torch.repeat_interleave(torch.tensor([1, 2])),
    }
    for name, wait in waits.items():
        with SyncCounter(cpu_is_device=True) as syncs:
            wait()
        assert syncs.count == 1, f"{name}: {syncs.describe()}"

    index = torch.tensor([0, 2])
    free = {
        "index_select": lambda: t.index_select(0, index),
        "integer indexing": lambda: t[index],
        "sort": lambda: torch.sort(t),
        "searchsorted": lambda: torch.searchsorted(t, t),
        "count_nonzero": lambda: mask.count_nonzero(),
        "repeat_interleave with output_size": lambda: torch.repeat_interleave(torch.arange(2), torch.tensor([1, 2]), output_size=3),
        "where": lambda: torch.where(mask, t, 0.0),
    }
    for name, op in free.items():
        with SyncCounter(cpu_is_device=True) as syncs:
            op()
        assert syncs.count == 0, f"{name}: {syncs.describe()}"
        assert syncs.ops >= 1


def test_counter_skips_host_tensors_beside_a_gpu_and_the_optimiser_step_counters():
    t = torch.arange(4.0)
    with SyncCounter(cpu_is_device=False) as syncs:
        t.sum().item(), t.tolist(), t[t > 1]
    assert syncs.count == 0

    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([parameter])
    parameter.grad = torch.ones(3)
    with SyncCounter(cpu_is_device=True) as syncs:
        optimizer.step()
    assert syncs.count == 0 and len(syncs.ignored) >= 1  # Adam reads its CPU step counter with .item()
    with SyncCounter(cpu_is_device=True, ignore=()) as syncs:
        optimizer.step()
    assert syncs.count >= 1


def _model_and_batch(domain="planning"):
    data = load_domain(domain, num_graphs=200, seed=2)
    torch.manual_seed(0)
    model = NSM(data.num_node_features, data.num_relations)
    batch = next(iter(DataLoader(data.train, batch_size=64)))
    return model, batch


def test_model_training_step_waits_once():
    model, batch = _model_and_batch()
    with SyncCounter(cpu_is_device=True) as syncs:
        out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=batch.num_graphs)
        loss = F.cross_entropy(out.logits, batch.y.view(-1)) + 0.01 * cycle_loss(out.reconstruction, batch.x)
        loss.backward()
    assert syncs.count == MODEL_SYNCS_PER_STEP, syncs.describe()
    assert "nsm/model.py" in syncs.events[0].where


def test_model_evaluation_batch_waits_at_most_twice():
    model, batch = _model_and_batch("kg")
    model.eval()
    with torch.no_grad(), SyncCounter(cpu_is_device=True) as syncs:
        model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=batch.num_graphs)
    assert syncs.count <= 2, syncs.describe()
    assert syncs.count == MODEL_SYNCS_PER_STEP


def test_the_reference_model_breaks_the_budget():
    # The counter finds the waits the rewrite removed: the test above can fail.
    data = load_domain("planning", num_graphs=200, seed=2)
    model = reference_model.NSM(data.num_node_features, data.num_relations)
    batch = next(iter(DataLoader(data.train, batch_size=64)))
    with SyncCounter(cpu_is_device=True) as syncs:
        out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
        out.logits.sum().backward()
    reasons = {event.reason for event in syncs.events}
    assert syncs.count > 4
    assert "boolean-mask indexing" in reasons and "scalar read (item/int/float/bool of a tensor)" in reasons


def test_a_training_epoch_and_an_evaluation_pass_of_the_trainer_stay_within_budget():
    # The whole trainer, not just the model: batching, the loss, the running sums and the optimiser.
    from nsm.config import TrainConfig
    from nsm.train import _GraphWorkload, _Run, _train_epoch

    config = TrainConfig(domain="planning", num_graphs=400, hidden_dim=16, batch_size=32, epochs=2, grad_clip=1.0)
    device = torch.device("cpu")
    work = _GraphWorkload(config, device)
    run = _Run.start(config, work, device, None)
    steps = -(-len(work.data.train) // config.batch_size)
    with SyncCounter(cpu_is_device=True) as syncs:
        sums = _train_epoch(run, work, 1, device, progress=False)
    assert sums.graphs == len(work.data.train) and not sums.diverged
    # Per step: the model's read and the divergence check. Per pass: the sizes, the order, the sums.
    assert syncs.count <= 2 * steps + 4, syncs.describe()

    eval_batches = -(-len(work.data.val) // 256)
    with SyncCounter(cpu_is_device=True) as syncs:
        metrics = work.evaluate(run.model, "val", device)
    assert 0.0 <= metrics["acc"] <= 1.0
    # Per batch: the model's read. Per pass: the sizes, the sums, the per-class counts, the scores.
    assert syncs.count <= MODEL_SYNCS_PER_STEP * eval_batches + 6, syncs.describe()
