"""Knowledge-graph domain: inductive link prediction as subgraph classification (as in GraIL).

Each graph starts from a small world of typed entities (people, cities, countries, organisations,
works) with base facts (``born_in``, ``lives_in``, ``located_in``, ``works_for``,
``headquartered_in``, ``has_branch_in``, ``created``, ``published_by``, ``spouse_of``) and some observed derived facts.
Derived relations follow composition rules:

- ``born_in(p, c) & located_in(c, k) => citizen_of(p, k)``
- ``works_for(p, o) & headquartered_in(o, c) => works_in_city(p, c)``
- ``created(p, w) & published_by(w, o) => affiliated_with(p, o)``
- ``headquartered_in(o, c) & located_in(c, k) => based_in(o, k)``

A query ``(head, relation, tail)`` asks for one derived relation. The graph is the enclosing
subgraph: every entity within two hops (edges taken in either direction) of the head or of either
candidate tail, with all the facts among them except the query edge itself (it is never added, and
neither is any other fact ``(head, relation, *)``). The head carries a ``head`` marker and a one-hot of
the query relation, the tail a ``tail`` marker. ``y = 1`` when the marked triple is entailed by the
rules, i.e. the rule's two-edge body connects head and tail.

How negatives are made (``y = 0``): each world yields two type-consistent candidate tails from the
same subgraph, the entailed one and a corrupted one that the rules do not entail; the corrupted tail
is, when the world has one, a near miss reached from the head by a different relation composition
(e.g. the country of the city the person *lives* in, not the one they were *born* in). The subgraph
is cut around the head and both candidates before the label is drawn, so a positive and a negative
of the same world are the same graph and differ only in which candidate carries the ``tail`` marker:
node count, edge count, per-relation edge counts, per-type node counts and all degree statistics
have exactly the same distribution in both classes.
"""

from __future__ import annotations

import random

from torch_geometric.data import Data

from nsm.data._graph import GraphBuilder, balanced_labels

VERSION = 1

RELATIONS: tuple[str, ...] = (
    "born_in",  # person -> city
    "lives_in",  # person -> city
    "located_in",  # city -> country
    "works_for",  # person -> organisation
    "headquartered_in",  # organisation -> city
    "has_branch_in",  # organisation -> city
    "created",  # person -> work
    "published_by",  # work -> organisation
    "spouse_of",  # person -> person
    "citizen_of",  # person -> country      (derived: born_in + located_in)
    "works_in_city",  # person -> city      (derived: works_for + headquartered_in)
    "affiliated_with",  # person -> organisation (derived: created + published_by)
    "based_in",  # organisation -> country  (derived: headquartered_in + located_in)
)

_TYPES = ("person", "city", "country", "organisation", "work")
_RULES = {  # derived relation -> (body relation 1, body relation 2, head type, tail type)
    "citizen_of": ("born_in", "located_in", "person", "country"),
    "works_in_city": ("works_for", "headquartered_in", "person", "city"),
    "affiliated_with": ("created", "published_by", "person", "organisation"),
    "based_in": ("headquartered_in", "located_in", "organisation", "country"),
}
QUERY_RELATIONS: tuple[str, ...] = tuple(_RULES)

NODE_FEATURES: tuple[str, ...] = (
    *_TYPES,  # entity type, one-hot
    "head",  # role: the query's head entity
    "tail",  # role: the candidate tail entity
    *(f"query_{r}" for r in QUERY_RELATIONS),  # on the head only: which relation is asked
)

_R = {name: i for i, name in enumerate(RELATIONS)}
_F = {name: i for i, name in enumerate(NODE_FEATURES)}
_HOPS = 2


class _World:
    """Entities (by type) and facts of one small world."""

    def __init__(self, rng: random.Random) -> None:
        self.types: list[str] = []
        self.facts: set[tuple[int, str, int]] = set()
        # Indexes kept next to the fact set, so rule look-ups don't scan every fact.
        self.out: dict[int, list[tuple[str, int]]] = {}
        self.into: dict[int, list[tuple[str, int]]] = {}
        countries = self._add("country", 3)
        cities = self._add("city", rng.randint(6, 7))
        orgs = self._add("organisation", 4)
        people = self._add("person", rng.randint(8, 10))
        works = self._add("work", rng.randint(3, 5))
        self.by_type = {"country": countries, "city": cities, "organisation": orgs, "person": people, "work": works}
        for i, c in enumerate(cities):
            self.add((c, "located_in", countries[i] if i < len(countries) else rng.choice(countries)))
        for o in orgs:
            hq = rng.choice(cities)
            self.add((o, "headquartered_in", hq))
            for c in rng.sample([c for c in cities if c != hq], rng.randint(0, 2)):
                self.add((o, "has_branch_in", c))
        for p in people:
            self.add((p, "born_in", rng.choice(cities)))
            if rng.random() < 0.8:
                self.add((p, "lives_in", rng.choice(cities)))
            if rng.random() < 0.7:
                self.add((p, "works_for", rng.choice(orgs)))
        for w in works:
            self.add((rng.choice(people), "created", w))
            self.add((w, "published_by", rng.choice(orgs)))
        for _ in range(rng.randint(1, 2)):
            a, b = rng.sample(people, 2)
            self.add((a, "spouse_of", b))

    def add(self, fact: tuple[int, str, int]) -> None:
        if fact not in self.facts:
            self.facts.add(fact)
            s, r, d = fact
            self.out.setdefault(s, []).append((r, d))
            self.into.setdefault(d, []).append((r, s))

    def _add(self, kind: str, n: int) -> list[int]:
        start = len(self.types)
        self.types.extend([kind] * n)
        return list(range(start, start + n))

    def entailed(self, head: int, relation: str) -> set[int]:
        r1, r2, _, _ = _RULES[relation]
        mids = {d for r, d in self.out.get(head, ()) if r == r1}
        return {d for m in mids for r, d in self.out.get(m, ()) if r == r2}

    def near_misses(self, head: int, relation: str) -> set[int]:
        """Entities of the query's tail type exactly two hops from the head (edges either way)."""
        tail_type = _RULES[relation][3]
        first = self._neighbours(head)
        second = {v for m in first for v in self._neighbours(m)} - first - {head}
        return {v for v in second if self.types[v] == tail_type}

    def _neighbours(self, v: int) -> set[int]:
        return {d for _, d in self.out.get(v, ())} | {s for _, s in self.into.get(v, ())}


def _query(world: _World, rng: random.Random) -> tuple[int, str, int, int] | None:
    """(head, relation, entailed tail, corrupted tail), or None if this world has no valid query.

    The corrupted tail is always a near miss: like the entailed tail it sits two hops from the head,
    so distance to the head says nothing and only the relations along the path decide. It is also,
    like the entailed tail, the target of some edge of the rule's second body relation (an HQ city,
    a publishing organisation), so "is a rule target at all" says nothing either.
    """
    relation = rng.choice(QUERY_RELATIONS)
    _, r2, head_type, _ = _RULES[relation]
    targets = {d for d, facts in world.into.items() if any(r == r2 for r, _ in facts)}
    heads = list(world.by_type[head_type])
    rng.shuffle(heads)
    for head in heads:
        positives = world.entailed(head, relation)
        if not positives:
            continue
        near = sorted((world.near_misses(head, relation) & targets) - positives)
        if near:
            return head, relation, rng.choice(sorted(positives)), rng.choice(near)
    return None


def _observed_derived(world: _World, head: int, relation: str, rng: random.Random) -> None:
    """Adds about half of the true derived facts, never any ``(head, relation, *)``."""
    for r, (_, _, head_type, _) in _RULES.items():
        for h in world.by_type[head_type]:
            if h == head and r == relation:
                continue
            for t in sorted(world.entailed(h, r)):
                if rng.random() < 0.5:
                    world.add((h, r, t))


def _subgraph(world: _World, seeds: list[int]) -> list[int]:
    nbrs: dict[int, set[int]] = {}
    for s, _, d in world.facts:
        nbrs.setdefault(s, set()).add(d)
        nbrs.setdefault(d, set()).add(s)
    keep, frontier = set(seeds), set(seeds)
    for _ in range(_HOPS):
        frontier = {v for u in frontier for v in nbrs.get(u, ())} - keep
        keep |= frontier
    return sorted(keep)


def _example(rng: random.Random, label: int) -> Data:
    while True:  # rejection only depends on the world, never on the label
        world = _World(rng)
        query = _query(world, rng)
        if query is not None:
            break
    head, relation, pos_tail, neg_tail = query
    _observed_derived(world, head, relation, rng)
    nodes = _subgraph(world, [head, pos_tail, neg_tail])
    tail = pos_tail if label == 1 else neg_tail
    g = GraphBuilder(len(NODE_FEATURES))
    index = {}
    for v in nodes:
        features = [_F[world.types[v]]]
        if v == head:
            features += [_F["head"], _F[f"query_{relation}"]]
        if v == tail:
            features.append(_F["tail"])
        index[v] = g.add_node(*features)
    for s, r, d in sorted(world.facts):
        if s in index and d in index:
            g.add_edge(index[s], index[d], _R[r])
    return g.build(label, rng)


def is_entailed(data: Data) -> bool:
    """Recomputes the label from a graph (used by the tests to audit the labels)."""
    head = int(data.x[:, _F["head"]].argmax())
    tail = int(data.x[:, _F["tail"]].argmax())
    query_cols = [_F[f"query_{r}"] for r in QUERY_RELATIONS]
    relation = QUERY_RELATIONS[int(data.x[head, query_cols].argmax())]
    r1, r2 = _R[_RULES[relation][0]], _R[_RULES[relation][1]]
    edges = list(zip(*data.edge_index.tolist(), data.edge_type.tolist()))
    mids = {d for s, d, r in edges if s == head and r == r1}
    return any(s in mids and d == tail and r == r2 for s, d, r in edges)


def generate(num_graphs: int, seed: int) -> list[Data]:
    """``num_graphs`` query subgraphs, half with an entailed marked triple, deterministic in ``seed``."""
    rng = random.Random(f"kg-{seed}")
    return [_example(rng, label) for label in balanced_labels(num_graphs, rng)]
