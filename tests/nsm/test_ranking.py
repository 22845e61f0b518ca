"""Tests of nsm.ranking: AUC-PR equals sklearn's average precision; ranks never break ties optimistically."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from nsm.ranking import auc_pr, candidate_ranks, hits_at_k, mrr


@pytest.mark.parametrize("seed", range(6))
def test_auc_pr_equals_sklearn_average_precision(seed):
    rng = np.random.default_rng(seed)
    n_pos, n_neg = rng.integers(1, 40), rng.integers(0, 40)
    # Few distinct values, so many ties between and within the classes.
    pos = rng.integers(0, 6, n_pos).astype(float)
    neg = rng.integers(0, 6, n_neg).astype(float)
    expected = average_precision_score(np.r_[np.ones(n_pos), np.zeros(n_neg)], np.r_[pos, neg])
    assert auc_pr(torch.tensor(pos), torch.tensor(neg)) == pytest.approx(expected, abs=1e-12)


def test_auc_pr_continuous_scores_and_extremes():
    rng = np.random.default_rng(7)
    pos, neg = rng.normal(1, 1, 300), rng.normal(0, 1, 500)
    expected = average_precision_score(np.r_[np.ones(300), np.zeros(500)], np.r_[pos, neg])
    assert auc_pr(torch.tensor(pos), torch.tensor(neg)) == pytest.approx(expected, abs=1e-12)
    assert auc_pr(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    # All tied: precision is the positive fraction at the only threshold.
    assert auc_pr(torch.zeros(3), torch.zeros(1)) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        auc_pr(torch.tensor([]), torch.tensor([1.0]))


def test_auc_pr_nan_scores_count_against_the_model():
    assert auc_pr(torch.tensor([float("nan"), 1.0]), torch.tensor([0.5])) == pytest.approx(
        average_precision_score([1, 1, 0], [1.0, -1e9, 0.5])  # NaN positive ranks below everything
    )
    worst = auc_pr(torch.tensor([1.0]), torch.tensor([float("nan")]))
    assert worst == pytest.approx(0.5)


def test_ranks_with_ties_mean_and_pessimistic():
    # The true candidate (column 0) scores 1.0; one negative above, two tied, one below.
    scores = torch.tensor([[1.0, 2.0, 1.0, 1.0, 0.0]])
    assert candidate_ranks(scores, ties="mean").tolist() == [3.0]  # 1 + 1 + 2/2
    assert candidate_ranks(scores, ties="pessimistic").tolist() == [4.0]
    with pytest.raises(ValueError):
        candidate_ranks(scores, ties="optimistic")


def test_all_tied_is_not_a_hit():
    scores = torch.zeros(4, 50)  # e.g. PPR 0 for a disconnected true triple and every candidate
    assert candidate_ranks(scores).tolist() == [25.5] * 4
    assert hits_at_k(scores, 10) == 0.0
    assert hits_at_k(scores, 10, ties="pessimistic") == 0.0
    assert mrr(scores) == pytest.approx(1 / 25.5)


def test_hits_and_mrr_by_hand():
    scores = torch.tensor(
        [
            [9.0, 1.0, 2.0, 3.0],  # rank 1
            [1.0, 2.0, 3.0, 0.0],  # rank 3
            [0.0, 1.0, 2.0, 3.0],  # rank 4
        ]
    )
    assert hits_at_k(scores, 1) == pytest.approx(1 / 3)
    assert hits_at_k(scores, 3) == pytest.approx(2 / 3)
    assert mrr(scores) == pytest.approx((1 + 1 / 3 + 1 / 4) / 3)
    # The true candidate may sit in another column.
    assert candidate_ranks(scores, true_index=3).tolist() == [2.0, 4.0, 1.0]


def test_nan_scores_rank_last():
    scores = torch.tensor([[float("nan"), 1.0, 2.0], [5.0, float("nan"), 1.0]])
    assert candidate_ranks(scores).tolist() == [3.0, 2.0]
    assert not math.isnan(mrr(scores))


def test_bad_shapes():
    with pytest.raises(ValueError):
        hits_at_k(torch.zeros(5), 1)
    with pytest.raises(ValueError):
        hits_at_k(torch.zeros(3, 4), 0)
    with pytest.raises(ValueError):
        candidate_ranks(torch.zeros(2, 3), true_index=3)
