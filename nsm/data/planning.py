"""Planning domain: is a robot's plan executable?

Each graph is one planning problem: a robot standing at a location of a small map, the capabilities
it holds, objects lying at locations, a root goal that decomposes into sub-goals, and a library of
actions. Sub-goals are ``achieved_by`` the actions of the plan ("in-plan" actions); the remaining
actions of the library are alternatives the planner did not pick ("off-plan"). Every action requires
one capability and is performed at one location; actions are ordered by ``precedes``.

The plan is executable (``y = 1``) when all of these hold:

1. every in-plan action requires a capability the robot holds;
2. every in-plan action is performed within the robot's reach: at its own location or one
   ``connected`` to it (the robot's reach radius is one hop);
3. every action that must precede an in-plan action is itself in the plan (no precondition is left
   to an action nobody executes).

Off-plan actions may violate any of these freely; they are the distractors that make the rules
about *which* action is concerned, not about whether an unheld capability or a far location exists.

How negatives are made (``y = 0``): a positive is generated, then exactly one rule is broken by a
double-edge swap inside one relation: two edges ``a -> b`` and ``c -> d`` of the same relation become
``a -> d`` and ``c -> b``. Rule 1 swaps the ``requires`` targets of an in-plan action (held
capability) and an off-plan action (unheld capability); rule 2 does the same with ``performed_at``
(reachable / far location); rule 3 swaps the targets of ``precedes`` edges ``p -> q`` (both in-plan)
and ``p' -> q'`` (``p'`` off-plan), so ``q`` now waits for an off-plan action. A swap keeps the in- and
out-degree of every node in every relation, so node count, edge count, per-relation edge counts,
per-type node counts and all degree statistics have exactly the same distribution in both classes;
only which typed neighbours meet differs. Each violation is a two-hop typed motif (e.g. an unheld
capability, one with no incoming ``has_capability``, required by an action that some goal is
``achieved_by``), so a relational message-passing network can see it.
"""

from __future__ import annotations

import random

from torch_geometric.data import Data

from nsm.data._graph import GraphBuilder, balanced_labels

VERSION = 1

RELATIONS: tuple[str, ...] = (
    "has_capability",  # robot -> capability: the robot holds this capability
    "at",  # robot -> location: where the robot stands
    "connected",  # location -> location: directly traversable (either direction)
    "located_at",  # object -> location
    "decomposes_to",  # goal -> goal: sub-goal
    "achieved_by",  # goal -> action: the action is part of the plan for this goal
    "requires",  # action -> capability
    "performed_at",  # action -> location
    "manipulates",  # action -> object
    "precedes",  # action -> action: the first must happen before the second
)

NODE_FEATURES: tuple[str, ...] = (
    "robot",
    "location",
    "object",
    "action",
    "goal",
    "capability",
    "root_goal",  # role: the goal the whole plan is for
)

_R = {name: i for i, name in enumerate(RELATIONS)}
_F = {name: i for i, name in enumerate(NODE_FEATURES)}

_NUM_LOCATIONS = 6
_NUM_CAPABILITIES = 5
_NUM_HELD = 3
_NUM_OBJECTS = 4
_NUM_SUBGOALS = 3


class _Plan:
    """A positive planning graph plus the bookkeeping a corruption needs."""

    def __init__(self, rng: random.Random) -> None:
        g = GraphBuilder(len(NODE_FEATURES))
        self.g = g
        robot = g.add_node(_F["robot"])
        locs = [g.add_node(_F["location"]) for _ in range(_NUM_LOCATIONS)]
        reach, far = self._map(rng, locs, robot)
        caps = [g.add_node(_F["capability"]) for _ in range(_NUM_CAPABILITIES)]
        held = rng.sample(caps, _NUM_HELD)
        unheld = [c for c in caps if c not in held]
        for c in held:
            g.add_edge(robot, c, _R["has_capability"])
        objects = [g.add_node(_F["object"]) for _ in range(_NUM_OBJECTS)]
        for o in objects:
            g.add_edge(o, rng.choice(locs), _R["located_at"])

        root = g.add_node(_F["goal"], _F["root_goal"])
        subgoals = [g.add_node(_F["goal"]) for _ in range(_NUM_SUBGOALS)]
        for s in subgoals:
            g.add_edge(root, s, _R["decomposes_to"])
        n_in = rng.randint(6, 8)
        n_off = rng.randint(2, 4)
        self.in_plan = [g.add_node(_F["action"]) for _ in range(n_in)]
        self.off_plan = [g.add_node(_F["action"]) for _ in range(n_off)]
        owner = list(range(_NUM_SUBGOALS)) + [rng.randrange(_NUM_SUBGOALS) for _ in range(n_in - _NUM_SUBGOALS)]
        rng.shuffle(owner)
        for a, k in zip(self.in_plan, owner):
            g.add_edge(subgoals[k], a, _R["achieved_by"])

        # Each off-plan action gets a random capability / location, but one is guaranteed to need an
        # unheld capability and one to sit far away, so both swaps are always available.
        bad_cap_action = rng.choice(self.off_plan)
        far_action = rng.choice(self.off_plan)
        for a in self.in_plan:
            g.add_edge(a, rng.choice(held), _R["requires"])
            g.add_edge(a, rng.choice(reach), _R["performed_at"])
        for a in self.off_plan:
            g.add_edge(a, rng.choice(unheld) if a == bad_cap_action else rng.choice(caps), _R["requires"])
            g.add_edge(a, rng.choice(far) if a == far_action else rng.choice(locs), _R["performed_at"])
        for a in self.in_plan + self.off_plan:
            if rng.random() < 0.7:
                g.add_edge(a, rng.choice(objects), _R["manipulates"])

        # Precedence: a chain per sub-goal, sometimes one link between sub-goal chains (from a lower to
        # a higher sub-goal index, so the order stays acyclic), a chain over the off-plan actions and,
        # as a distractor, in-plan actions that precede off-plan ones (allowed).
        chains = [[a for a, k in zip(self.in_plan, owner) if k == s] for s in range(_NUM_SUBGOALS)]
        for chain in chains:
            for p, q in zip(chain, chain[1:]):
                g.add_edge(p, q, _R["precedes"])
        if rng.random() < 0.5:
            s1, s2 = sorted(rng.sample(range(_NUM_SUBGOALS), 2))
            g.add_edge(chains[s1][-1], chains[s2][0], _R["precedes"])
        for p, q in zip(self.off_plan, self.off_plan[1:]):
            g.add_edge(p, q, _R["precedes"])
        for _ in range(rng.randint(1, 3)):
            p, q = rng.choice(self.in_plan), rng.choice(self.off_plan)
            if not g.has_edge(p, q):
                g.add_edge(p, q, _R["precedes"])

    def _map(self, rng: random.Random, locs: list[int], robot: int) -> tuple[list[int], list[int]]:
        """A random connected map (a tree plus a chord); returns (reachable, far) locations."""
        g = self.g
        while True:
            pairs = [(rng.randrange(i), i) for i in range(1, len(locs))]
            i, j = rng.sample(range(len(locs)), 2)
            if (min(i, j), max(i, j)) not in pairs:
                pairs.append((i, j))
            nbrs: list[set[int]] = [set() for _ in locs]
            for i, j in pairs:
                nbrs[i].add(j)
                nbrs[j].add(i)
            starts = [i for i in range(len(locs)) if len(nbrs[i]) + 1 < len(locs)]
            if starts:
                break
        home = rng.choice(starts)
        for i, j in pairs:
            src, dst = (i, j) if rng.random() < 0.5 else (j, i)
            g.add_edge(locs[src], locs[dst], _R["connected"])
        g.add_edge(robot, locs[home], _R["at"])
        reach = [locs[i] for i in sorted(nbrs[home] | {home})]
        far = [locs[i] for i in range(len(locs)) if locs[i] not in reach]
        return reach, far

    def corrupt(self, rng: random.Random) -> None:
        """Breaks exactly one executability rule by a double-edge swap within one relation."""
        kinds = ["requires", "performed_at", "precedes"]
        rng.shuffle(kinds)
        for kind in kinds:
            if self._swap(kind, rng):
                return
        raise AssertionError("no corruption applies")  # pragma: no cover - every positive admits all three

    def _swap(self, kind: str, rng: random.Random) -> bool:
        edges = self.g.edges
        rel = _R[kind]
        in_plan, off_plan = set(self.in_plan), set(self.off_plan)
        if kind == "precedes":
            good = [e for e in edges if e[2] == rel and e[0] in in_plan and e[1] in in_plan]
            other = [e for e in edges if e[2] == rel and e[0] in off_plan]
        else:
            bad_targets = self._bad_targets(kind)
            good = [e for e in edges if e[2] == rel and e[0] in in_plan]
            other = [e for e in edges if e[2] == rel and e[0] in off_plan and e[1] in bad_targets]
        pairs = [(e, f) for e in good for f in other if e[1] != f[1]]
        rng.shuffle(pairs)
        for e, f in pairs:
            if kind == "precedes" and (self.g.has_edge(e[0], f[1]) or self.g.has_edge(f[0], e[1])):
                continue
            e[1], f[1] = f[1], e[1]
            return True
        return False

    def _bad_targets(self, kind: str) -> set[int]:
        """Capabilities the robot lacks, or locations out of its reach."""
        edges = self.g.edges
        if kind == "requires":
            held = {e[1] for e in edges if e[2] == _R["has_capability"]}
            return {e[1] for e in edges if e[2] == _R["requires"]} - held
        home = next(e[1] for e in edges if e[2] == _R["at"])
        reach = {home}
        for s, d, r in edges:
            if r == _R["connected"] and home in (s, d):
                reach |= {s, d}
        return {e[1] for e in edges if e[2] == _R["performed_at"]} - reach


def is_executable(data: Data) -> bool:
    """Checks the three rules directly on a graph (used by the tests to audit the labels)."""
    src, dst = data.edge_index.tolist()
    rel = data.edge_type.tolist()
    edges = list(zip(src, dst, rel))
    in_plan = {d for s, d, r in edges if r == _R["achieved_by"]}
    held = {d for s, d, r in edges if r == _R["has_capability"]}
    home = next(d for s, d, r in edges if r == _R["at"])
    reach = {home} | {s if d == home else d for s, d, r in edges if r == _R["connected"] and home in (s, d)}
    for s, d, r in edges:
        if s in in_plan and r == _R["requires"] and d not in held:
            return False
        if s in in_plan and r == _R["performed_at"] and d not in reach:
            return False
        if d in in_plan and r == _R["precedes"] and s not in in_plan:
            return False
    return True


def generate(num_graphs: int, seed: int) -> list[Data]:
    """``num_graphs`` planning graphs, half executable, deterministic in ``seed``."""
    rng = random.Random(f"planning-{seed}")
    graphs = []
    for label in balanced_labels(num_graphs, rng):
        plan = _Plan(rng)
        if label == 0:
            plan.corrupt(rng)
        graphs.append(plan.g.build(label, rng))
    return graphs
