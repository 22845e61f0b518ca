"""Trainer throughput and accuracy per domain: ``python bench/trainer.py``.

Throughput: training graphs/s and nodes/s at hidden 64, 3 levels, batch 64, 2000 graphs, on the CPU
threads available (or the GPU), printed as a ratio to the research code's 3-level model on a 2-core
machine (222 graphs/s: 9.0 s per epoch over 2000 planning graphs of about 30 nodes and 63 edges).
Each domain trains ``--epochs-timed`` + 2 epochs through ``nsm.train.train``: the first warms up (and
evaluates), the last evaluates, the ones between are timed, with the device synchronised before each
clock reading. The median and the range over those epochs are printed, and on CPU also graphs per
CPU-second, which a busy machine disturbs less than wall time.

With ``--sync-check`` (CUDA only) it also counts the host-device waits of a training step and of an
evaluation batch of the model, and of one epoch of ``train``, two ways: by operation
(``nsm._sync.SyncCounter``) and by the CUDA runtime (``torch.cuda.set_sync_debug_mode``).

Accuracy: test accuracy after ``--epochs`` (default 30) at the research code's default config
(lr 1e-4, cycle_weight 0.01, batch 64) and at a config found by hand, beside the count-only shortcut's
accuracy on the same split (a gradient-boosted classifier that sees only node, edge, relation and degree
counts), which must stay at or below 0.65.

    python bench/trainer.py                      # everything (about 10 minutes on 2 cores)
    python bench/trainer.py --skip-accuracy      # throughput only (about 1 minute)
    python bench/trainer.py --skip-accuracy --threads 1 --domains planning
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader

from nsm._sync import SyncCounter
from nsm.data import load_domain
from nsm.domains import SYNTHETIC
from nsm.data.shortcut import count_features
from nsm.checkpoint import model_args
from nsm.config import BASELINE, TrainConfig
from nsm.model import NSM, cycle_loss
from nsm.train import train

RESEARCH_CODE_GRAPHS_PER_S = 222.0
TUNED = {"lr": 3e-3, "cycle_weight": 0.01, "batch_size": 32}
"""The better config found by hand (a search finds better ones; this is the bench's fixed reference)."""


def count_shortcut_accuracy(domain: str, num_graphs: int = 2000, seed: int = 0) -> float:
    """Test accuracy of a classifier that sees only counts (needs scikit-learn, the dev extra)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    data = load_domain(domain, num_graphs=num_graphs, seed=seed)

    def table(graphs):
        return count_features(graphs, data.num_relations), np.array([int(g.y) for g in graphs])

    x_train, y_train = table(list(data.train) + list(data.val))
    x_test, y_test = table(data.test)
    model = HistGradientBoostingClassifier(random_state=0).fit(x_train, y_train)
    return float((model.predict(x_test) == y_test).mean())


def throughput(domain: str, epochs_timed: int = 3) -> dict[str, float]:
    data = load_domain(domain, num_graphs=2000, seed=0)
    graphs = list(data.train) + list(data.val) + list(data.test)
    epochs = epochs_timed + 2
    config = TrainConfig(domain=domain, epochs=epochs, batch_size=64, hidden_dim=64, num_graphs=2000,
                         save_every=0, eval_every=epochs)
    clock: list[tuple[float, float]] = []

    def on_epoch(end) -> None:
        _synchronize()  # the epoch's queued kernels count in its time
        clock.append((time.perf_counter(), time.process_time()))

    train(config, on_epoch=on_epoch)
    # clock[i] follows epoch i + 1: epochs 2 .. epochs-1 only train (epoch 1 also warms up and
    # evaluates, the last evaluates).
    walls = [len(data.train) / (clock[i + 1][0] - clock[i][0]) for i in range(epochs_timed)]
    cpus = [len(data.train) / (clock[i + 1][1] - clock[i][1]) for i in range(epochs_timed)]
    graphs_per_s = statistics.median(walls)
    mean_nodes = float(np.mean([g.num_nodes for g in graphs]))
    return {"graphs_per_s": graphs_per_s, "low": min(walls), "high": max(walls),
            "graphs_per_cpu_s": statistics.median(cpus), "nodes_per_s": graphs_per_s * mean_nodes,
            "mean_nodes": mean_nodes, "mean_edges": float(np.mean([g.num_edges for g in graphs]))}


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def sync_check(domain: str, steps: int = 10) -> None:
    """Host-device waits per training step and evaluation batch on CUDA, counted two ways."""
    device = torch.device("cuda")
    data = load_domain(domain, num_graphs=2000, seed=0)
    torch.manual_seed(0)
    model = NSM(**model_args(TrainConfig(domain=domain), data.num_node_features, data.num_relations)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_batches = [b.to(device) for b in DataLoader(data.train, batch_size=64)][: steps + 2]
    eval_batches = [b.to(device) for b in DataLoader(data.val, batch_size=256)]

    def forward(batch):
        return model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=batch.num_graphs)

    def step(batch) -> None:
        out = forward(batch)
        loss = F.cross_entropy(out.logits, batch.y.view(-1)) + 0.01 * cycle_loss(out.reconstruction, batch.x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def count(run, batches) -> tuple[float, float]:
        with _cuda_sync_warnings() as warned, SyncCounter() as counter:
            for batch in batches:
                run(batch)
        torch.cuda.synchronize()
        return counter.count / len(batches), _waits(warned) / len(batches)

    model.train()
    for batch in train_batches[:2]:
        step(batch)  # warm-up: cuBLAS handles, allocator growth
    train_counts = count(step, train_batches[2:])
    model.eval()
    with torch.no_grad():
        eval_counts = count(forward, eval_batches)
    with _cuda_sync_warnings() as warned:
        train(TrainConfig(domain=domain, epochs=1, save_every=0))
    num_steps = -(-len(data.train) // 64)
    print(f"\n# host-device waits on {torch.cuda.get_device_name(0)} ({domain}; budget: 4 per step, 2 per eval batch)")
    print(f"{'':<34}{'by operation':>14}{'CUDA sync debug':>17}")
    print(f"{'model training step':<34}{train_counts[0]:>14.1f}{train_counts[1]:>17.1f}")
    print(f"{'model evaluation batch':<34}{eval_counts[0]:>14.1f}{eval_counts[1]:>17.1f}")
    print(f"{'train(), 1 epoch, per train step':<34}{'-':>14}{_waits(warned) / num_steps:>17.1f}  "
          f"(includes its val and test evaluation: {_waits(warned)} waits, {num_steps} steps)")


@contextlib.contextmanager
def _cuda_sync_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record the warnings of ``torch.cuda.set_sync_debug_mode("warn")``, one per synchronising call."""
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield recorded
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _waits(recorded: list[warnings.WarningMessage]) -> int:
    return sum("synchroniz" in str(warning.message) for warning in recorded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Graph classification only; GraIL's splits have their own bench (bench/grail.py).
    parser.add_argument("--domains", nargs="+", default=list(SYNTHETIC), choices=SYNTHETIC)
    parser.add_argument("--epochs", type=int, default=30, help="epochs for the accuracy table")
    parser.add_argument("--epochs-timed", type=int, default=3, help="timed epochs per domain (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--sync-check", action="store_true", help="count host-device waits on CUDA (needs a GPU)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    on_gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if on_gpu else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# throughput on {device}, hidden 64, 3 levels, batch 64, 2000 graphs; "
          f"median [range] of {args.epochs_timed} epochs after a warm-up")
    print(f"{'domain':<10}{'graphs/s':>10}{'range':>14}{'graphs/CPU-s':>14}{'nodes/s':>10}{'nodes/graph':>13}"
          f"{'edges/graph':>13}{'vs research code':>18}")
    for domain in args.domains:
        t = throughput(domain, args.epochs_timed)
        per_cpu_s = "-" if on_gpu else f"{t['graphs_per_cpu_s']:.0f}"
        spread = f"[{t['low']:.0f}-{t['high']:.0f}]"
        print(f"{domain:<10}{t['graphs_per_s']:>10.0f}{spread:>14}{per_cpu_s:>14}"
              f"{t['nodes_per_s']:>10.0f}{t['mean_nodes']:>13.1f}{t['mean_edges']:>13.1f}"
              f"{t['graphs_per_s'] / RESEARCH_CODE_GRAPHS_PER_S:>17.2f}x")
    if args.sync_check:
        if on_gpu:
            sync_check(args.domains[0])
        else:
            print("\n--sync-check needs a CUDA GPU (none visible here); skipped.")
    if args.skip_accuracy:
        return

    print(f"\n# test accuracy after {args.epochs} epochs (2000 graphs, seed 0)")
    print(f"baseline = research defaults {BASELINE}; tuned = {TUNED}")
    print(f"{'domain':<10}{'baseline':>10}{'tuned':>8}{'count-only':>12}{'time (s)':>10}")
    for domain in args.domains:
        started = time.perf_counter()
        row = []
        for values in (BASELINE, TUNED):
            config = TrainConfig(domain=domain, epochs=args.epochs, save_every=0, **values)
            row.append(train(config)["test_metrics"]["test_acc"])
        shortcut = count_shortcut_accuracy(domain)
        print(f"{domain:<10}{row[0]:>10.3f}{row[1]:>8.3f}{shortcut:>12.3f}{time.perf_counter() - started:>10.0f}")


if __name__ == "__main__":
    main()
