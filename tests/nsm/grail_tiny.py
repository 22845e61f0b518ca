"""A tiny knowledge graph in GraIL's file layout, and a plain-Python reference of the enclosing subgraph.

``write_tiny(folder)`` writes ``tiny_v1/{train,valid,test}.txt`` and ``tiny_v1_ind/{...}`` and returns
the sha256 of each file, keyed like ``nsm.data.grail``'s table. The graph has a multi-edge pair (two
relations and a reverse fact between the same entities), a training fact with no other path between
its entities, a hub that leaves some ranking queries fewer corruptions than the candidate lists
need, and one triple with a relation unseen in training in ``tiny_v1_ind/train.txt`` and in
``tiny_v1_ind/test.txt``.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

import torch

SPLIT = "tiny_v1"
RELATIONS = ("r0", "r1", "r2", "r3")


def _random_triples(rng: random.Random, entities: list[str], count: int, taken: set) -> list[tuple[str, str, str]]:
    out = []
    while len(out) < count:
        h, t = rng.sample(entities, 2)
        triple = (h, rng.choice(RELATIONS), t)
        if triple not in taken:
            taken.add(triple)
            out.append(triple)
    return out


def tiny_triples(seed: int = 0) -> dict[str, list[tuple[str, str, str]]]:
    """The six files' triples, ``"<folder>/<file>" -> triples``."""
    rng = random.Random(seed)
    train_entities = [f"e{i}" for i in range(40)]
    test_entities = [f"n{i}" for i in range(30)]
    taken: set = set()
    multi = [("e0", "r0", "e1"), ("e0", "r1", "e1"), ("e1", "r2", "e0")]
    taken.update(multi)
    # A pathless fact: e40 and e41 touch nothing else, so its enclosing subgraph is empty.
    pathless = [("e40", "r2", "e41")]
    taken.update(pathless)
    train = multi + _random_triples(rng, train_entities, 110, taken) + pathless
    valid = _random_triples(rng, train_entities, 16, taken)
    test = _random_triples(rng, train_entities, 10, taken)
    # Inductive side: a hub n0, the tail of r3 from n1..n24, so queries (?, r3, n0) have few corruptions.
    hub = [(f"n{i}", "r3", "n0") for i in range(1, 25)]
    taken.update(hub)
    ind_train = hub[:20] + _random_triples(rng, test_entities, 70, taken) + [("n5", "r_unseen", "n6")]
    ind_valid = hub[20:22] + _random_triples(rng, test_entities, 6, taken)
    ind_test = hub[22:] + _random_triples(rng, test_entities, 12, taken) + [("n7", "r_unseen", "n8")]
    return {
        f"{SPLIT}/train.txt": train,
        f"{SPLIT}/valid.txt": valid,
        f"{SPLIT}/test.txt": test,
        f"{SPLIT}_ind/train.txt": ind_train,
        f"{SPLIT}_ind/valid.txt": ind_valid,
        f"{SPLIT}_ind/test.txt": ind_test,
    }


def write_tiny(folder: Path, rename: dict[str, str] | None = None, shuffle_seed: int | None = None) -> dict[str, str]:
    """Writes the tiny split under ``folder`` (optionally with every entity renamed and the lines
    of each file shuffled); returns ``"<folder>/<file>" -> sha256``."""
    sums = {}
    for rel, triples in tiny_triples().items():
        lines = [f"{(rename or {}).get(h, h)}\t{r}\t{(rename or {}).get(t, t)}\n" for h, r, t in triples]
        if shuffle_seed is not None:
            random.Random(f"{shuffle_seed}-{rel}").shuffle(lines)
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
        sums[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def reference_subgraph(facts: torch.Tensor, target: tuple[int, int, int], hops: int, max_nodes: int):
    """The enclosing subgraph by the documented rule, one target at a time in plain Python.

    Returns ``(nodes, labels, edges)``: entities in subgraph order, ``(d_head, d_tail)`` per node,
    and a Counter of ``(src entity, relation, dst entity)`` facts.
    """
    h, r, t = target
    triples = [tuple(f) for f in facts.tolist()]
    neighbours: dict[int, set[int]] = {}
    for a, _, b in triples:
        if a != b:
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)

    def bfs(source: int, blocked: int) -> dict[int, int]:
        dist, frontier = {source: 0}, [source]
        for step in range(1, hops + 1):
            nxt = []
            for u in frontier:
                for v in neighbours.get(u, ()):
                    if v != blocked and v not in dist:
                        dist[v] = step
                        nxt.append(v)
            frontier = nxt
        return dist

    d_head, d_tail = bfs(h, t), bfs(t, h)
    labels = {v: (d_head[v], d_tail[v]) for v in d_head if v in d_tail}
    labels[h], labels[t] = (0, 1), (1, 0)

    def key(v: int):
        if v == h:
            return (0, 0, 0, v)
        if v == t:
            return (1, 0, 0, v)
        dh, dt = labels[v]
        return (2, dh + dt, max(dh, dt), v)

    nodes = sorted(labels, key=key)[:max_nodes]
    kept = set(nodes)
    edges = Counter((a, rel, b) for a, rel, b in triples if a in kept and b in kept)
    if edges[(h, r, t)]:
        edges[(h, r, t)] -= 1
        edges += Counter()  # drop zero counts
    return nodes, [labels[v] for v in nodes], edges


def install_tiny_as(split: str, folder: Path, monkeypatch, rename: dict[str, str] | None = None,
                    shuffle_seed: int | None = None) -> Path:
    """The tiny graph as a local copy of GraIL split ``split`` (its folders named ``split`` and
    ``split_ind``), its checksums registered for this test only, ``$NSM_GRAIL_DIR`` pointing at it,
    and the trainer's per-process data cache cleared; returns the copy's folder."""
    from nsm import train as nsm_train
    from nsm.data import grail

    staging = folder / "staging"
    sums = write_tiny(staging, rename=rename, shuffle_seed=shuffle_seed)
    copy = folder / "copy"
    for rel, digest in sums.items():
        target = copy / rel.replace(SPLIT, split, 1)
        target.parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).replace(target)
        monkeypatch.setitem(grail._SHA256, rel.replace(SPLIT, split, 1), digest)
    monkeypatch.setenv(grail.ENV_DIR, str(copy))
    monkeypatch.setattr(nsm_train, "_LINK_DATA", {})
    return copy
