"""The Personalized PageRank shortcut on GraIL's splits (Shomer, Revolinsky and Tang 2024, arXiv 2406.11898).

A triple is scored by how much random-walk mass flows between its head and tail on the graph it is
scored against (the training graph for validation, the ``<split>_ind/train.txt`` graph for the
test), ignoring relation types and edge directions. No learning, no relation information: a method
whose ranking is not clearly above this one has not shown that it uses relations.

Personalized PageRank from a source ``s``, restart probability ``alpha`` (0.15, the paper's code):
``pi_s = alpha * e_s + (1 - alpha) * pi_s @ P`` with ``P = D^-1 W``, where ``W[u, v]`` counts the facts
between ``u`` and ``v`` in either direction (a multigraph, as in the paper's NBFNet-based code) and
``D`` is its row sum. Solved by power iteration in float64 to ``tol`` (exact up to that, where the
paper's code used a push approximation with ``eps = 1e-6``). A source without facts keeps its mass
``alpha`` on itself and scores 0 everywhere else.

Scores, on exactly the candidates of ``nsm.data.grail.GrailProtocol``:

- Ranking lists: the source is the entity the query keeps, as in the paper's ``run_ppr.py``; a
  head-replaced candidate ``(h', r, t)`` scores ``pi_t(h')``, a tail-replaced ``(h, r, t')`` scores
  ``pi_h(t')``.
- AUC-PR pairs: a triple on its own has no query side, so it scores ``(pi_h(t) + pi_t(h)) / 2``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor

from nsm._threads import one_thread
from nsm.data.grail import DEFAULT_NUM_CANDIDATES, GrailProtocol, grail_protocol
from nsm.ranking import Ties, auc_pr, hits_at_k, mrr

DEFAULT_ALPHA = 0.15
_SOURCES_PER_BLOCK = 512
_CHECK_EVERY = 10  # iterations between convergence checks (a check costs about one iteration)


def personalized_pagerank(
    facts: Tensor,
    num_entities: int,
    sources: Tensor,
    alpha: float = DEFAULT_ALPHA,
    tol: float = 1e-12,
    max_iter: int = 10_000,
) -> Tensor:
    """``[len(sources), num_entities]`` float64 PPR vectors of ``sources`` on the undirected,
    relation-free multigraph of ``facts`` (``[E, 3]`` rows ``(head, relation, tail)``)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = num_entities
    src, dst = facts[:, 0], facts[:, 2]
    weights = torch.sparse_coo_tensor(
        torch.stack([torch.cat([src, dst]), torch.cat([dst, src])]),
        torch.ones(2 * src.numel(), dtype=torch.float64),
        (n, n),
        check_invariants=True,
    ).coalesce()
    degree = torch.zeros(n, dtype=torch.float64).index_add_(0, weights.indices()[0], weights.values())
    inverse_degree = torch.where(degree > 0, 1.0 / degree.clamp(min=1.0), 0.0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": sparse @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        weights = weights.to_sparse_csr()
    out = torch.empty(sources.numel(), n, dtype=torch.float64)
    for start in range(0, sources.numel(), _SOURCES_PER_BLOCK):
        block = sources[start : start + _SOURCES_PER_BLOCK]
        restart = torch.zeros(n, block.numel(), dtype=torch.float64)
        restart[block, torch.arange(block.numel())] = alpha
        pi = restart.clone()
        for iteration in range(1, max_iter + 1):
            # pi @ P for every column: W is symmetric, so (D^-1 W)^T pi = W (D^-1 pi).
            updated = torch.addmm(restart, weights, inverse_degree[:, None] * pi, alpha=1.0 - alpha)
            if iteration % _CHECK_EVERY == 0 and float((updated - pi).abs().sum(0).max()) < tol:
                pi = updated
                break
            pi = updated
        out[start : start + block.numel()] = pi.t()
    return out


def pagerank_matrix(facts: Tensor, num_entities: int, alpha: float = DEFAULT_ALPHA) -> Tensor:
    r"""``[num_entities, num_entities]`` float64: row ``s`` is the PPR vector of ``s``
    (:func:`personalized_pagerank` from every entity), as :math:`\alpha (I - (1 - \alpha) P)^{-1}`.

    One dense inverse: exact, and on GraIL's graphs (at most about 5,000 entities) several times faster
    than power iteration from every source."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = num_entities
    ends = (torch.cat([facts[:, 0], facts[:, 2]]), torch.cat([facts[:, 2], facts[:, 0]]))
    system = torch.zeros(n, n, dtype=torch.float64).index_put_(
        ends, torch.ones(2 * facts.shape[0], dtype=torch.float64), accumulate=True
    )
    system.div_(system.sum(1, keepdim=True).clamp(min=1.0)).mul_(alpha - 1.0)  # -(1 - alpha) P, in place
    system.diagonal().add_(1.0)
    return torch.linalg.inv(system).mul_(alpha)


def root_pagerank(
    facts: Tensor, num_entities: int, targets: Tensor, left_out: Tensor, alpha: float = DEFAULT_ALPHA,
    matrix: Tensor | None = None,
) -> Tensor:
    r"""``[T, 2]`` float64: :math:`(\pi_h(t), \pi_t(h))` of each target ``(h, r, t)`` on the graph of
    ``facts`` without the fact ``left_out[i]`` (a row of ``facts``, or -1 for none).

    A training fact is scored as a test triple is, in a graph that lacks it: with the fact in the
    graph, its two roots are neighbours and PageRank says so. Removing the fact :math:`(a, b)` changes
    rows :math:`a` and :math:`b` of :math:`P` only, a rank-2 update :math:`P' = P + e_a u + e_b v`, so
    by Woodbury, with :math:`\Pi` the PPR matrix of the whole graph (``matrix``, computed when not
    given), :math:`K = \tfrac{1 - \alpha}{\alpha} \Pi [e_a, e_b]` and :math:`R = [u; v]`:

    .. math::
        \Pi' = \Pi + K (I_2 - R K)^{-1} R \Pi

    and each entry needs only entries of :math:`\Pi`, as :math:`P \Pi = (\Pi - \alpha I) / (1 - \alpha)`
    gives every product with a row of :math:`P`: O(1) per target after one :func:`pagerank_matrix`.
    Targets are never self loops; a left-out self loop is not removed.
    """
    pi = pagerank_matrix(facts, num_entities, alpha) if matrix is None else matrix
    head, tail = targets[:, 0], targets[:, 2]
    scores = torch.stack([pi[head, tail], pi[tail, head]], dim=1)
    rows = torch.nonzero(left_out >= 0).view(-1)
    if not rows.numel():
        return scores
    a, b = facts[left_out[rows], 0], facts[left_out[rows], 2]
    removable = a != b
    rows, a, b = rows[removable], a[removable], b[removable]
    degree = torch.bincount(torch.cat([facts[:, 0], facts[:, 2]]), minlength=num_entities).double()

    def changed_row_dot(end: Tensor, other: Tensor, column: Tensor) -> Tensor:
        # (P'[end] - P[end]) . pi[:, column], where `end` loses one fact to `other`
        restart = (end == column).to(torch.float64) * alpha  # alpha * bool would be float32
        walk = (pi[end, column] - restart) / (1.0 - alpha)  # (P pi)[end, column]
        return torch.where(
            degree[end] > 1, (walk - pi[other, column]) / (degree[end] - 1.0).clamp(min=1.0), -pi[other, column]
        )

    def r_dot(column: Tensor) -> Tensor:  # R pi[:, column], [n, 2]
        return torch.stack([changed_row_dot(a, b, column), changed_row_dot(b, a, column)], dim=1)

    scale = (1.0 - alpha) / alpha
    rk = scale * torch.stack([r_dot(a), r_dot(b)], dim=2)  # [n, 2 (u, v), 2 (columns a, b)]
    capacitance = torch.eye(2, dtype=torch.float64) - rk
    h, t = head[rows], tail[rows]
    for column, (source, target) in enumerate(((h, t), (t, h))):
        k = scale * torch.stack([pi[source, a], pi[source, b]], dim=1)  # K[source, :]
        update = torch.linalg.solve(capacitance, r_dot(target).unsqueeze(2)).squeeze(2)
        scores[rows, column] += (k * update).sum(1)
    return scores.clamp_(min=0.0)  # an update that cancels the whole score leaves rounding either side of 0


class _Table:
    """PPR rows of a set of sources, looked up by entity."""

    def __init__(self, facts: Tensor, num_entities: int, sources: Tensor, alpha: float) -> None:
        unique = torch.unique(sources)
        self.row = torch.full((num_entities,), -1, dtype=torch.long)
        self.row[unique] = torch.arange(unique.numel())
        with one_thread():
            self.values = personalized_pagerank(facts, num_entities, unique, alpha)

    def __call__(self, source: Tensor, target: Tensor) -> Tensor:
        return self.values[self.row[source], target]


def _ranking_sources(ranking: Tensor) -> Tensor:
    return torch.cat([ranking[0, :, :, 2].reshape(-1), ranking[1, :, :, 0].reshape(-1)])


def _ranking_scores(table: _Table, ranking: Tensor) -> Tensor:
    head_replaced = table(ranking[0, :, :, 2], ranking[0, :, :, 0])  # pi_t(h'): the list keeps t
    tail_replaced = table(ranking[1, :, :, 0], ranking[1, :, :, 2])  # pi_h(t'): the list keeps h
    return torch.cat([head_replaced, tail_replaced])


def _triple_scores(table: _Table, triples: Tensor) -> Tensor:
    heads, tails = triples[:, 0], triples[:, 2]
    return 0.5 * (table(heads, tails) + table(tails, heads))


def ranking_scores(facts: Tensor, num_entities: int, ranking: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    """``[2 * Q, C]`` PPR scores of a ``[2, Q, C, 3]`` ranking tensor (head-replaced lists first),
    each from the entity its query keeps."""
    return _ranking_scores(_Table(facts, num_entities, _ranking_sources(ranking), alpha), ranking)


def triple_scores(facts: Tensor, num_entities: int, triples: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    """``[P]`` symmetric PPR score ``(pi_h(t) + pi_t(h)) / 2`` of each triple (for AUC-PR)."""
    table = _Table(facts, num_entities, torch.cat([triples[:, 0], triples[:, 2]]), alpha)
    return _triple_scores(table, triples)


def scores(protocol: GrailProtocol, part: str = "test", alpha: float = DEFAULT_ALPHA) -> tuple[Tensor, Tensor]:
    """PPR scores of ``part`` ("test" or "valid") of ``protocol``: ``[2 * P]`` for its AUC pairs
    (true triples first) and ``[2 * Q, C]`` for its ranking lists (true triple in column 0)."""
    if part == "test":
        facts, n, auc, ranking = protocol.test_graph, len(protocol.test_entities), protocol.test_auc, protocol.test_ranking
    elif part == "valid":
        facts, n, auc, ranking = protocol.train_graph, len(protocol.train_entities), protocol.valid_auc, protocol.valid_ranking
    else:
        raise ValueError(f"part must be 'test' or 'valid', got {part!r}")
    table = _Table(facts, n, torch.cat([auc[:, 0], auc[:, 2], _ranking_sources(ranking)]), alpha)
    return _triple_scores(table, auc), _ranking_scores(table, ranking)


def metrics(pair_scores: Tensor, list_scores: Tensor, prefix: str = "test", ties: Ties = "mean") -> dict[str, float]:
    """``{<prefix>_auc_pr, <prefix>_hits_at_10, <prefix>_mrr}`` from scores laid out as ``scores`` returns them."""
    half = pair_scores.shape[0] // 2
    return {
        f"{prefix}_auc_pr": auc_pr(pair_scores[:half], pair_scores[half:]),
        f"{prefix}_hits_at_10": hits_at_k(list_scores, 10, ties=ties),
        f"{prefix}_mrr": mrr(list_scores, ties=ties),
    }


def evaluate(
    protocol: GrailProtocol, part: str = "test", alpha: float = DEFAULT_ALPHA, ties: Ties = "mean"
) -> dict[str, float]:
    """The PPR shortcut's AUC-PR, Hits@10 and MRR on ``part`` ("test" or "valid") of ``protocol``:
    its AUC pairs and ranking lists, scored on the matching graph. Keys are prefixed ``test_`` or
    ``val_`` like the trainer's metrics."""
    pair, lists = scores(protocol, part, alpha)
    return metrics(pair, lists, "test" if part == "test" else "val", ties)


def ppr_shortcut(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    num_candidates: int = DEFAULT_NUM_CANDIDATES,
    alpha: float = DEFAULT_ALPHA,
    ties: Ties = "mean",
) -> dict[str, float]:
    """Test AUC-PR, Hits@10 and MRR of the PPR shortcut on GraIL split ``name``, on the same
    candidates as ``nsm.data.grail.load_grail(name, root, seed=seed, num_candidates=num_candidates)``."""
    return evaluate(grail_protocol(name, root, seed=seed, num_candidates=num_candidates), "test", alpha, ties)


__all__ = [
    "DEFAULT_ALPHA",
    "evaluate",
    "metrics",
    "pagerank_matrix",
    "personalized_pagerank",
    "ppr_shortcut",
    "ranking_scores",
    "root_pagerank",
    "scores",
    "triple_scores",
]
