"""Link-prediction metrics by GraIL's protocol: AUC-PR over (true, corrupted) pairs, Hits@k and MRR
over candidate groups.

Candidate groups are a ``[num_groups, num_candidates]`` score matrix whose column ``true_index``
(0 by default) holds the true triple and the other columns its corruptions (GraIL: 50 candidates,
one group with the head replaced and one with the tail replaced per test triple).

Ties. A tied score says nothing about which triple is better, so a tie must not help the true
triple. ``ties="mean"`` (default) gives the true triple the mean of its best and worst possible
rank, ``1 + #{negatives scoring higher} + #{negatives scoring equal} / 2`` (the expected rank
under random tie-breaking, sometimes called the realistic rank); ``ties="pessimistic"`` gives it
the worst, ``1 + #{negatives scoring higher or equal}``. Hits@k counts ``rank <= k``; MRR is the
mean of ``1 / rank``. There is no optimistic option. A score that is NaN is placed where it hurts:
a NaN true score ranks below everything, a NaN negative above the true triple.

AUC-PR is average precision exactly as ``sklearn.metrics.average_precision_score`` computes it
(GraIL's code calls that function): ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score
thresholds in decreasing order, tied scores forming one threshold. sklearn is not needed at run time.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Ties = Literal["mean", "pessimistic"]
TIE_RULES: tuple[str, ...] = ("mean", "pessimistic")


def auc_pr(pos_scores: Tensor, neg_scores: Tensor) -> float:
    """Average precision of ranking every positive above every negative (sklearn's definition).

    NaN scores count against the model: a NaN positive as ``-inf``, a NaN negative as ``+inf``.
    """
    pos = _as_1d(pos_scores)
    neg = _as_1d(neg_scores)
    if pos.numel() == 0:
        raise ValueError("auc_pr needs at least one positive score")
    pos = torch.nan_to_num(pos, nan=float("-inf"))
    neg = torch.nan_to_num(neg, nan=float("inf"))
    scores = torch.cat([pos, neg])
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
    order = torch.argsort(scores, descending=True, stable=True)
    scores, labels = scores[order], labels[order]
    tps = torch.cumsum(labels, 0)
    fps = torch.cumsum(1.0 - labels, 0)
    # One threshold per distinct score: the last position of each run of equal scores.
    last = torch.ones_like(scores, dtype=torch.bool)
    last[:-1] = scores[1:] != scores[:-1]
    tps, fps = tps[last], fps[last]
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    recall_step = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((recall_step * precision).sum())


def candidate_ranks(scores: Tensor, true_index: int = 0, ties: Ties = "mean") -> Tensor:
    """``[num_groups]`` float rank (1 = best) of the true candidate of each group (see the module docstring)."""
    s = _as_2d(scores)
    if not -s.shape[1] <= true_index < s.shape[1]:
        raise ValueError(f"true_index {true_index} is outside the {s.shape[1]} candidates")
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}, got {ties!r}")
    true = torch.nan_to_num(s[:, true_index : true_index + 1], nan=float("-inf"))
    others = torch.ones(s.shape[1], dtype=torch.bool, device=s.device)
    others[true_index] = False
    neg = torch.nan_to_num(s[:, others], nan=float("inf"))
    higher = (neg > true).sum(1).double()
    equal = (neg == true).sum(1).double()
    return 1.0 + higher + (equal / 2.0 if ties == "mean" else equal)


def hits_at_k(scores: Tensor, k: int = 10, true_index: int = 0, ties: Ties = "mean") -> float:
    """Fraction of groups whose true candidate ranks within the top ``k``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float((candidate_ranks(scores, true_index, ties) <= k).double().mean())


def mrr(scores: Tensor, true_index: int = 0, ties: Ties = "mean") -> float:
    """Mean reciprocal rank of the true candidate over the groups."""
    return float((1.0 / candidate_ranks(scores, true_index, ties)).mean())


def _as_1d(t: Tensor) -> Tensor:
    return torch.as_tensor(t).detach().reshape(-1).double()


def _as_2d(t: Tensor) -> Tensor:
    t = torch.as_tensor(t).detach()
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] < 2:
        raise ValueError(f"scores must be [num_groups >= 1, num_candidates >= 2], got {list(t.shape)}")
    return t.double()


__all__ = ["TIE_RULES", "auc_pr", "candidate_ranks", "hits_at_k", "mrr"]
