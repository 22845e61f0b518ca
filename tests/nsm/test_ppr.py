"""Tests of nsm.ppr: PageRank against its closed form, scoring on the protocol's own candidates,
invariance to renaming entities, and the shortcut on a real split."""

from __future__ import annotations

import os

import pytest
import torch

import nsm
from nsm import ppr
from nsm.data import grail
from nsm.data.grail import grail_protocol
from nsm.ranking import auc_pr, hits_at_k, mrr
from tests.nsm.grail_tiny import SPLIT, tiny_triples, write_tiny
from tests.nsm.test_grail import SMALL, _shared_copy


def _closed_form(facts: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    w = torch.zeros(n, n, dtype=torch.float64)
    for h, _, t in facts.tolist():
        w[h, t] += 1
        w[t, h] += 1
    degree = w.sum(1)
    p = torch.where(degree[:, None] > 0, w / degree.clamp(min=1)[:, None], 0.0)
    return alpha * torch.linalg.inv(torch.eye(n, dtype=torch.float64) - (1 - alpha) * p)


def test_pagerank_equals_its_closed_form():
    g = torch.Generator().manual_seed(0)
    n = 30
    facts = torch.stack([torch.randint(0, 25, (80,), generator=g), torch.randint(0, 4, (80,), generator=g), torch.randint(0, 25, (80,), generator=g)], 1)
    facts = torch.cat([facts, torch.tensor([[3, 1, 4], [3, 2, 4], [4, 0, 3]])])  # multi-edges count
    sources = torch.tensor([0, 3, 4, 27, 29, 3])  # 25..29 have no facts
    got = ppr.personalized_pagerank(facts, n, sources, alpha=0.15)
    expected = _closed_form(facts, n, 0.15)[sources]
    assert torch.allclose(got, expected, atol=1e-10)
    assert torch.allclose(ppr.pagerank_matrix(facts, n, alpha=0.15), _closed_form(facts, n, 0.15), atol=1e-12)
    assert got[3, 27] == pytest.approx(0.15) and float(got[3].sum()) == pytest.approx(0.15)  # isolated source
    # Reversibility of the walk on an undirected graph: d_s pi_s(t) = d_t pi_t(s).
    degree = torch.bincount(torch.cat([facts[:, 0], facts[:, 2]]), minlength=n).double()
    assert float(degree[0] * got[0, 4]) == pytest.approx(float(degree[4] * got[2, 0]), rel=1e-8)


def test_root_pagerank_is_pagerank_on_the_graph_without_the_left_out_fact():
    g = torch.Generator().manual_seed(1)
    n = 24
    facts = torch.stack([torch.randint(0, 18, (40,), generator=g), torch.randint(0, 3, (40,), generator=g),
                         torch.randint(0, 18, (40,), generator=g)], 1)
    facts = facts[facts[:, 0] != facts[:, 2]]
    special = torch.tensor([
        [18, 0, 19],  # a fact alone: both ends lose their only neighbour
        [20, 1, 5],  # a leaf: 20 loses its only neighbour
        [21, 0, 22], [22, 2, 21],  # two facts between the same pair, either way: one stays
    ])
    facts = torch.cat([facts, special])
    m = facts.shape[0]
    # every fact, then a corruption of it that keeps the head, each leaving that fact out; then two
    # triples scored on the whole graph
    corruptions = facts.clone()
    corruptions[:, 2] = (facts[:, 2] + 7) % n
    targets = torch.cat([facts, corruptions, torch.tensor([[0, 0, 23], [21, 1, 22]])])
    left_out = torch.cat([torch.arange(m), torch.arange(m), torch.tensor([-1, -1])])
    got = ppr.root_pagerank(facts, n, targets, left_out)
    assert got.shape == (2 * m + 2, 2) and got.dtype == torch.float64
    whole = _closed_form(facts, n, ppr.DEFAULT_ALPHA)
    for i, (h, _, t) in enumerate(targets.tolist()):
        if left_out[i] >= 0:
            keep = torch.arange(m) != left_out[i]
            pi = _closed_form(facts[keep], n, ppr.DEFAULT_ALPHA)
        else:
            pi = whole
        assert got[i].tolist() == pytest.approx([float(pi[h, t]), float(pi[t, h])], abs=1e-10), i
    # Left out, a fact's two ends read as a test triple's do: far less linked than with the fact.
    assert (got[:m, 0] < whole[facts[:, 0], facts[:, 2]]).all()
    assert got[m - 4].tolist() == pytest.approx([0.0, 0.0], abs=1e-10) and (got >= 0).all()  # the lone fact: nothing links its ends without it


@pytest.fixture
def tiny_protocol(tmp_path, monkeypatch):
    for rel, digest in write_tiny(tmp_path / "copy").items():
        monkeypatch.setitem(grail._SHA256, rel, digest)
    monkeypatch.setenv(grail.ENV_DIR, str(tmp_path / "copy"))
    return grail_protocol(SPLIT, tmp_path / "root", **SMALL)


def test_lists_are_scored_from_the_entity_the_query_keeps(tiny_protocol):
    p = tiny_protocol
    n = len(p.test_entities)
    full = _closed_form(p.test_graph, n, ppr.DEFAULT_ALPHA)
    scores = ppr.ranking_scores(p.test_graph, n, p.test_ranking)
    q = p.test_ranking.shape[1]
    assert scores.shape == (2 * q, p.num_candidates)
    heads, tails = p.test_ranking[..., 0], p.test_ranking[..., 2]
    assert torch.allclose(scores[:q], full[tails[0], heads[0]], atol=1e-10)  # pi_t(h')
    assert torch.allclose(scores[q:], full[heads[1], tails[1]], atol=1e-10)  # pi_h(t')
    pairs = ppr.triple_scores(p.test_graph, n, p.test_auc)
    h, t = p.test_auc[:, 0], p.test_auc[:, 2]
    assert torch.allclose(pairs, 0.5 * (full[h, t] + full[t, h]), atol=1e-10)


def test_evaluate_scores_the_protocols_pairs_and_lists(tiny_protocol):
    p = tiny_protocol
    n = len(p.test_entities)
    result = ppr.evaluate(p, "test")
    lists = ppr.ranking_scores(p.test_graph, n, p.test_ranking)
    pairs = ppr.triple_scores(p.test_graph, n, p.test_auc)
    half = pairs.shape[0] // 2
    assert result == {
        "test_auc_pr": auc_pr(pairs[:half], pairs[half:]),
        "test_hits_at_10": hits_at_k(lists, 10),
        "test_mrr": mrr(lists),
    }
    valid = ppr.evaluate(p, "valid", ties="pessimistic")
    assert set(valid) == {"val_auc_pr", "val_hits_at_10", "val_mrr"}
    assert all(0.0 <= v <= 1.0 for v in valid.values())
    with pytest.raises(ValueError):
        ppr.evaluate(p, "train")


def test_renaming_every_entity_leaves_each_score_unchanged(tmp_path, monkeypatch):
    entities = sorted({e for ts in tiny_triples().values() for h, _, t in ts for e in (h, t)})
    names = {e: f"q{(i * 53) % 97}-{e}" for i, e in enumerate(entities)}
    protocols = {}
    for tag, rename in (("a", None), ("b", names)):
        sums = write_tiny(tmp_path / tag, rename=rename, shuffle_seed=None if rename is None else 2)
        with monkeypatch.context() as mp:
            for rel, digest in sums.items():
                mp.setitem(grail._SHA256, rel, digest)
            mp.setenv(grail.ENV_DIR, str(tmp_path / tag))
            protocols[tag] = grail_protocol(SPLIT, tmp_path / f"root-{tag}", **SMALL)
    a, b = protocols["a"], protocols["b"]
    index_b = {name: i for i, name in enumerate(b.test_entities)}
    to_b = torch.tensor([index_b[names[name]] for name in a.test_entities])
    assert not torch.equal(to_b, torch.arange(len(to_b)))
    mapped = a.test_ranking.clone()
    mapped[..., 0], mapped[..., 2] = to_b[a.test_ranking[..., 0]], to_b[a.test_ranking[..., 2]]
    n = len(a.test_entities)
    assert torch.allclose(ppr.ranking_scores(a.test_graph, n, a.test_ranking), ppr.ranking_scores(b.test_graph, n, mapped), atol=1e-12)
    mapped_auc = a.test_auc.clone()
    mapped_auc[:, 0], mapped_auc[:, 2] = to_b[a.test_auc[:, 0]], to_b[a.test_auc[:, 2]]
    assert torch.allclose(ppr.triple_scores(a.test_graph, n, a.test_auc), ppr.triple_scores(b.test_graph, n, mapped_auc), atol=1e-12)


def test_shortcut_on_a_real_split(tmp_path, monkeypatch):
    copy = os.environ.get(grail.ENV_DIR) or _shared_copy()
    if copy:
        monkeypatch.setenv(grail.ENV_DIR, str(copy))
    else:
        monkeypatch.delenv(grail.ENV_DIR, raising=False)
    try:
        result = ppr.ppr_shortcut("WN18RR_v1", tmp_path)
    except nsm.ConfigError as exc:
        if copy or "could not download" not in str(exc):
            raise
        pytest.skip(f"no local copy of GraIL's data (../shared/data/grail or $NSM_GRAIL_DIR) and no network: {exc}")
    # The same candidates as the subgraph datasets: the protocol is shared, not re-drawn.
    assert result == ppr.evaluate(grail_protocol("WN18RR_v1", tmp_path, val_queries=None), "test")
    # Shomer et al.'s point: on WN18RR_v1 the shortcut alone ranks most true triples in the top 10.
    assert 0.8 < result["test_hits_at_10"] < 1.0 and 0.8 < result["test_auc_pr"] <= 1.0
