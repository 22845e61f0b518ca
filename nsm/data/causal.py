"""Causal domain: does the treatment causally affect the outcome, or are they only confounded?

Each graph is a small causal model of a clinical question: one treatment, one outcome, candidate
mediators (physiological variables), confounders (background factors such as age or diet) and
symptoms (observed manifestations). Directed ``causes`` / ``inhibits`` edges are causal effects
(positive / negative); ``indicates`` links a variable to a symptom it manifests in; ``correlates_with``
is an observed association without a causal direction and never transmits an effect.

Label: ``y = 1`` when the treatment has a directed causal path (``causes`` / ``inhibits`` edges only)
to the outcome; ``y = 0`` when every association between them runs through a confounder (the
back-door path ``treatment <- confounder -> outcome``, present in every graph of both classes) or
through ``correlates_with``. Positives have exactly one such path, of length 1 to 3, so it is a short
path anchored at the two marked nodes and visible to three rounds of message passing. Both classes
also carry dead-end effects of the treatment (treatment -> mediator -> ... that never reach the
outcome) and other causes of the outcome (confounder -> mediator -> outcome), so neither "the
treatment has effects" nor "the outcome has causes" says anything about the label.

How negatives are made (``y = 0``): a positive is generated, then one edge of its causal path,
``u -> v``, is swapped with another edge of the same relation, ``a -> b``, giving ``u -> b`` and
``a -> v``; the swap is accepted only if afterwards no directed causal path from the treatment to
the outcome exists, the causal edges stay acyclic, and no self-loop or duplicate edge appears. A
double-edge swap keeps the in- and out-degree of every node in every relation, so node count,
edge count, per-relation edge counts, per-type node counts and all degree statistics have exactly
the same distribution in both classes; only where the treatment's effects lead differs.
"""

from __future__ import annotations

import random

from torch_geometric.data import Data

from nsm.data._graph import GraphBuilder, balanced_labels

VERSION = 1

RELATIONS: tuple[str, ...] = (
    "causes",  # variable -> variable: direct causal effect, increasing
    "inhibits",  # variable -> variable: direct causal effect, decreasing
    "indicates",  # variable -> symptom: the symptom manifests the variable
    "correlates_with",  # variable/symptom -> variable/symptom: association, no causal direction
)

NODE_FEATURES: tuple[str, ...] = (
    "treatment",  # role: the intervention asked about (exactly one per graph)
    "outcome",  # role: the outcome asked about (exactly one per graph)
    "mediator",
    "confounder",
    "symptom",
)

_R = {name: i for i, name in enumerate(RELATIONS)}
_F = {name: i for i, name in enumerate(NODE_FEATURES)}
_CAUSAL = (_R["causes"], _R["inhibits"])


def _effect(rng: random.Random) -> int:
    return _R["causes"] if rng.random() < 0.65 else _R["inhibits"]


class _Model:
    """A positive causal graph plus what a corruption needs."""

    def __init__(self, rng: random.Random) -> None:
        g = GraphBuilder(len(NODE_FEATURES))
        self.g = g
        self.t = g.add_node(_F["treatment"])
        self.o = g.add_node(_F["outcome"])
        mediators = [g.add_node(_F["mediator"]) for _ in range(rng.randint(7, 10))]
        confounders = [g.add_node(_F["confounder"]) for _ in range(rng.randint(2, 4))]
        symptoms = [g.add_node(_F["symptom"]) for _ in range(rng.randint(5, 8))]

        # Mediators fall into: on the path, downstream of the treatment only (T-side), upstream of
        # the outcome only (O-side), and free. Edges never go from the T-side to the O-side, so the
        # designed path is the only causal route from treatment to outcome.
        length = rng.choices((1, 2, 3), weights=(0.25, 0.45, 0.3))[0]
        rng.shuffle(mediators)
        path = mediators[: length - 1]
        rest = mediators[length - 1 :]
        n_t = rng.randint(1, max(1, len(rest) // 3))
        t_side, rest = rest[:n_t], rest[n_t:]
        n_o = rng.randint(1, max(1, len(rest) // 2))
        o_side, free = rest[:n_o], rest[n_o:]

        chain = [self.t] + path + [self.o]
        for u, v in zip(chain, chain[1:]):
            g.add_edge(u, v, _effect(rng))
        # T-side: effects of the treatment (or of its path mediators) that never reach the outcome.
        for i, m in enumerate(t_side):
            g.add_edge(rng.choice([self.t] + path + t_side[:i]), m, _effect(rng))
        # O-side: other causes of the outcome, fed by confounders and free mediators.
        for i, m in enumerate(o_side):
            g.add_edge(m, rng.choice([self.o] + o_side[:i]), _effect(rng))
        # The back-door: a confounder affecting both treatment and outcome, in every graph.
        g.add_edge(confounders[0], self.t, _effect(rng))
        g.add_edge(confounders[0], self.o, _effect(rng))
        for c in confounders[1:]:
            for target in rng.sample([self.t, self.o] + path + t_side + o_side + free, 2):
                g.add_edge(c, target, _effect(rng))
        for i, m in enumerate(free):
            targets = free[i + 1 :] + o_side + t_side
            for target in rng.sample(targets, min(len(targets), rng.randint(1, 2))):
                g.add_edge(m, target, _effect(rng))
        variables = [self.t, self.o] + mediators + confounders
        for s in symptoms:
            g.add_edge(rng.choice(variables), s, _R["indicates"])
        for _ in range(rng.randint(2, 4)):
            a, b = rng.sample(variables + symptoms, 2)
            if not g.has_edge(a, b) and not g.has_edge(b, a):
                g.add_edge(a, b, _R["correlates_with"])
        self.chain = chain

    def corrupt(self, rng: random.Random) -> tuple[list[int], list[int]] | None:
        """Cuts the causal path by one same-relation double-edge swap; returns the swapped edges."""
        edges = self.g.edges
        path = [e for e in edges if e[2] in _CAUSAL and any(e[0] == u and e[1] == v for u, v in zip(self.chain, self.chain[1:]))]
        rng.shuffle(path)
        for e in path:
            partners = [f for f in edges if f[2] == e[2] and f is not e and f[1] != e[1] and f[0] != e[0]]
            rng.shuffle(partners)
            for f in partners:
                if e[0] == f[1] or f[0] == e[1] or self.g.has_edge(e[0], f[1]) or self.g.has_edge(f[0], e[1]):
                    continue
                e[1], f[1] = f[1], e[1]
                if not _reaches(edges, self.t, self.o) and _acyclic(edges):
                    return e, f
                e[1], f[1] = f[1], e[1]
        return None


def _causal_children(edges: list[list[int]]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for s, d, r in edges:
        if r in _CAUSAL:
            children.setdefault(s, []).append(d)
    return children


def _reaches(edges: list[list[int]], src: int, dst: int) -> bool:
    children = _causal_children(edges)
    seen, stack = {src}, [src]
    while stack:
        for v in children.get(stack.pop(), ()):
            if v == dst:
                return True
            if v not in seen:
                seen.add(v)
                stack.append(v)
    return False


def _acyclic(edges: list[list[int]]) -> bool:
    children = _causal_children(edges)
    state: dict[int, int] = {}  # 1 = on the stack, 2 = done

    def visit(u: int) -> bool:
        state[u] = 1
        for v in children.get(u, ()):
            if state.get(v) == 1 or (v not in state and not visit(v)):
                return False
        state[u] = 2
        return True

    return all(state.get(u) == 2 or visit(u) for u in list(children))


def has_causal_path(data: Data) -> bool:
    """Recomputes the label from a graph (used by the tests to audit the labels)."""
    t = int(data.x[:, _F["treatment"]].argmax())
    o = int(data.x[:, _F["outcome"]].argmax())
    edges = [list(e) for e in zip(*data.edge_index.tolist(), data.edge_type.tolist())]
    return _reaches(edges, t, o)


def generate(num_graphs: int, seed: int) -> list[Data]:
    """``num_graphs`` causal graphs, half with a causal treatment -> outcome path, deterministic in ``seed``."""
    rng = random.Random(f"causal-{seed}")
    graphs = []
    for label in balanced_labels(num_graphs, rng):
        # Positives are drawn from the same pool as negatives (models that admit a cut), and the trial
        # cut of a positive is undone, so rejection never makes the classes differ in shape.
        while True:
            model = _Model(rng)
            swapped = model.corrupt(rng)
            if swapped is not None:
                break
        if label == 1:
            e, f = swapped
            e[1], f[1] = f[1], e[1]
        graphs.append(model.g.build(label, rng))
    return graphs
