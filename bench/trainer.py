"""Trainer throughput and accuracy per domain: ``python bench/trainer.py``.

Throughput: training graphs/s and nodes/s at hidden 64, 3 levels, batch 64, 2000 graphs, on the CPU
threads available (or the GPU), printed as a ratio to the research code's 3-level model on a 2-core
machine (222 graphs/s: 9.0 s per epoch over 2000 planning graphs of about 30 nodes and 63 edges).

Accuracy: test accuracy after ``--epochs`` (default 30) at the research code's default config
(lr 1e-4, cycle_weight 0.01, batch 64) and at a config found by hand, beside the count-only shortcut's
accuracy on the same split (a gradient-boosted classifier that sees only node, edge, relation and degree
counts), which must stay at or below 0.65.

    python bench/trainer.py                      # everything (about 10 minutes on 2 cores)
    python bench/trainer.py --skip-accuracy      # throughput only (about 1 minute)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nsm.data import DOMAINS, load_domain
from nsm.data.shortcut import count_features
from nsm.config import BASELINE, TrainConfig
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


def throughput(domain: str, epochs: int = 3) -> dict[str, float]:
    data = load_domain(domain, num_graphs=2000, seed=0)
    graphs = list(data.train) + list(data.val) + list(data.test)
    mean_nodes = float(np.mean([g.num_nodes for g in graphs]))
    mean_edges = float(np.mean([g.num_edges for g in graphs]))
    config = TrainConfig(domain=domain, epochs=epochs, batch_size=64, hidden_dim=64, num_graphs=2000,
                         save_every=0, eval_every=epochs)
    measured = []
    train(config, on_epoch=lambda end: measured.append(end.metrics["graphs_per_s"]))
    graphs_per_s = float(np.median(measured[1:] if len(measured) > 1 else measured))  # epoch 1 warms up
    return {"graphs_per_s": graphs_per_s, "nodes_per_s": graphs_per_s * mean_nodes,
            "mean_nodes": mean_nodes, "mean_edges": mean_edges}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    parser.add_argument("--epochs", type=int, default=30, help="epochs for the accuracy table")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# throughput on {device}, hidden 64, 3 levels, batch 64, 2000 graphs")
    print(f"{'domain':<10}{'graphs/s':>10}{'nodes/s':>11}{'nodes/graph':>13}{'edges/graph':>13}{'vs research code':>18}")
    for domain in args.domains:
        t = throughput(domain)
        print(f"{domain:<10}{t['graphs_per_s']:>10.0f}{t['nodes_per_s']:>11.0f}{t['mean_nodes']:>13.1f}"
              f"{t['mean_edges']:>13.1f}{t['graphs_per_s'] / RESEARCH_CODE_GRAPHS_PER_S:>17.2f}x")
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
