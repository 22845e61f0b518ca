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


def _score_table(facts: Tensor, num_entities: int, sources: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """PPR rows of the unique ``sources``, and for each entity its row in that table (-1 if absent)."""
    unique = torch.unique(sources)
    row = torch.full((num_entities,), -1, dtype=torch.long)
    row[unique] = torch.arange(unique.numel())
    return personalized_pagerank(facts, num_entities, unique, alpha), row


def ranking_scores(facts: Tensor, num_entities: int, ranking: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    """``[2 * Q, C]`` PPR scores of a ``[2, Q, C, 3]`` ranking tensor (head-replaced lists first),
    each from the entity its query keeps."""
    heads_kept = ranking[1, :, :, 0]  # tail-replaced lists keep the head
    tails_kept = ranking[0, :, :, 2]
    table, row = _score_table(facts, num_entities, torch.cat([heads_kept.reshape(-1), tails_kept.reshape(-1)]), alpha)
    head_replaced = table[row[tails_kept], ranking[0, :, :, 0]]
    tail_replaced = table[row[heads_kept], ranking[1, :, :, 2]]
    return torch.cat([head_replaced, tail_replaced])


def triple_scores(facts: Tensor, num_entities: int, triples: Tensor, alpha: float = DEFAULT_ALPHA) -> Tensor:
    """``[P]`` symmetric PPR score ``(pi_h(t) + pi_t(h)) / 2`` of each triple (for AUC-PR)."""
    heads, tails = triples[:, 0], triples[:, 2]
    table, row = _score_table(facts, num_entities, torch.cat([heads, tails]), alpha)
    return 0.5 * (table[row[heads], tails] + table[row[tails], heads])


def evaluate(
    protocol: GrailProtocol, part: str = "test", alpha: float = DEFAULT_ALPHA, ties: Ties = "mean"
) -> dict[str, float]:
    """``{<part>_auc_pr, <part>_hits_at_10, <part>_mrr}`` of the PPR shortcut on ``part`` ("test" or
    "valid") of ``protocol``: its AUC pairs and ranking lists, scored on the matching graph."""
    if part == "test":
        facts, n, auc, ranking, prefix = protocol.test_graph, len(protocol.test_entities), protocol.test_auc, protocol.test_ranking, "test"
    elif part == "valid":
        facts, n, auc, ranking, prefix = protocol.train_graph, len(protocol.train_entities), protocol.valid_auc, protocol.valid_ranking, "val"
    else:
        raise ValueError(f"part must be 'test' or 'valid', got {part!r}")
    with one_thread():
        pair = triple_scores(facts, n, auc, alpha)
        lists = ranking_scores(facts, n, ranking, alpha)
    half = auc.shape[0] // 2
    return {
        f"{prefix}_auc_pr": auc_pr(pair[:half], pair[half:]),
        f"{prefix}_hits_at_10": hits_at_k(lists, 10, ties=ties),
        f"{prefix}_mrr": mrr(lists, ties=ties),
    }


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


__all__ = ["DEFAULT_ALPHA", "evaluate", "personalized_pagerank", "ppr_shortcut", "ranking_scores", "triple_scores"]
