"""Tests of nsm.data.grail: files (local copy, download, checksums), GraIL's protocol, enclosing
subgraphs (against a plain-Python reference), the cache, bad input, and a real split end to end."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

import nsm
from nsm.data import _subgraph, grail
from nsm.data._subgraph import extract
from nsm.data.grail import GrailProtocol, canonical_split, grail_protocol, load_grail
from tests.nsm.grail_tiny import SPLIT, reference_subgraph, tiny_triples, write_tiny

SMALL = dict(num_candidates=8, val_queries=6)  # the tiny graphs have 40 and 30 entities


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def tiny_copy(tmp_path, monkeypatch):
    """The tiny split as a local copy in $NSM_GRAIL_DIR, its checksums registered for this test only."""
    copy = tmp_path / "copy"
    for rel, digest in write_tiny(copy).items():
        monkeypatch.setitem(grail._SHA256, rel, digest)
    monkeypatch.setenv(grail.ENV_DIR, str(copy))
    return copy


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A real HTTP server on localhost standing in for raw.githubusercontent.com (no network here)."""
    served = tmp_path / "served"
    for rel, digest in write_tiny(served).items():
        monkeypatch.setitem(grail._SHA256, rel, digest)
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv(grail.ENV_DIR, raising=False)
    monkeypatch.setattr(grail, "URL", f"http://127.0.0.1:{httpd.server_address[1]}/{{path}}")
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The tiny split loaded once (hops 2, a cap the hub subgraphs hit), for the protocol checks."""
    folder = tmp_path_factory.mktemp("tiny")
    copy = folder / "copy"
    sums = write_tiny(copy)
    with pytest.MonkeyPatch.context() as mp:
        for rel, digest in sums.items():
            mp.setitem(grail._SHA256, rel, digest)
        mp.setenv(grail.ENV_DIR, str(copy))
        return load_grail(SPLIT, folder / "root", hops=2, max_nodes=12, **SMALL)


# ----------------------------------------------------------------------------------------- names


def test_split_names_are_case_insensitive_and_listed():
    assert len(grail.SPLITS) == 12 and len(grail._SHA256) == 72
    assert canonical_split("wn18rr_v1") == "WN18RR_v1"
    assert canonical_split("FB237_V4") == "fb237_v4"
    assert canonical_split("NELL_v2") == "nell_v2"
    assert grail.resolve("GraIL") == grail.SPLITS
    assert grail.resolve("nell_V3") == ("nell_v3",)
    assert grail.is_split("wn18rr_v2") and not grail.is_split("kg")


def test_unknown_split_is_one_line_listing_the_valid_ones(tmp_path):
    with pytest.raises(nsm.ConfigError) as err:
        load_grail("WN18RR_v9", tmp_path / "root")
    message = str(err.value)
    assert "\n" not in message and "WN18RR_v9" in message
    assert all(name in message for name in grail.SPLITS)
    assert _files_under(tmp_path / "root") == []


# ----------------------------------------------------------------------------------------- files


def test_local_copy_is_read_in_place_and_verified(tiny_copy, tmp_path):
    paths = grail.raw_files(SPLIT, tmp_path / "root")
    assert sorted(paths) == sorted(tiny_triples())
    assert all(path.parent.parent == tiny_copy for path in paths.values())
    assert _files_under(tmp_path / "root") == []  # nothing copied


def test_checksum_mismatch_in_local_copy(tiny_copy, tmp_path):
    path = tiny_copy / f"{SPLIT}_ind" / "test.txt"
    path.write_text(path.read_text() + "n1\tr0\tn2\n")
    with pytest.raises(nsm.ConfigError) as err:
        load_grail(SPLIT, tmp_path / "root", **SMALL)
    assert "\n" not in str(err.value) and "sha256" in str(err.value) and "test.txt" in str(err.value)
    assert _files_under(tmp_path / "root") == []


def test_missing_file_in_local_copy(tiny_copy, tmp_path):
    (tiny_copy / f"{SPLIT}_ind" / "valid.txt").unlink()
    with pytest.raises(nsm.ConfigError) as err:
        load_grail(SPLIT, tmp_path / "root", **SMALL)
    message = str(err.value)
    assert "\n" not in message and f"{SPLIT}_ind/valid.txt" in message and "missing" in message
    assert _files_under(tmp_path / "root") == []


def test_local_copy_that_is_not_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(grail.ENV_DIR, str(tmp_path / "nowhere"))
    with pytest.raises(nsm.ConfigError, match="NSM_GRAIL_DIR"):
        grail.raw_files("nell_v1", tmp_path / "root")


def test_no_copy_and_no_network(tmp_path, monkeypatch):
    monkeypatch.delenv(grail.ENV_DIR, raising=False)
    monkeypatch.setattr(grail, "URL", f"http://127.0.0.1:{_closed_port()}/{{commit}}/data/{{path}}")
    with pytest.raises(nsm.ConfigError) as err:
        load_grail("WN18RR_v1", tmp_path / "root")
    message = str(err.value)
    assert "\n" not in message
    assert f"/{grail.COMMIT}/data/WN18RR_v1/" in message and "$NSM_GRAIL_DIR" in message
    assert _files_under(tmp_path / "root") == []


def test_download_verifies_and_caches_then_works_offline(server, tmp_path):
    root = tmp_path / "root"
    paths = grail.raw_files(SPLIT, root)
    assert all(path.is_file() and path.is_relative_to(root / "grail" / "raw") for path in paths.values())
    assert [p.name for p in (root / "grail" / "raw").iterdir() if p.name.startswith(".")] == []  # no staging left
    for rel, triples in tiny_triples().items():
        assert (root / "grail" / "raw" / rel).read_text().count("\n") == len(triples)
    # The server's copy changes; the cached, verified files are used without asking it again.
    (server / f"{SPLIT}/train.txt").write_text("garbage\n")
    assert grail.raw_files(SPLIT, root) == paths


def test_download_that_fails_its_checksum_leaves_nothing(server, tmp_path):
    (server / f"{SPLIT}_ind/test.txt").write_text("n1\tr0\tn2\n")
    root = tmp_path / "root"
    with pytest.raises(nsm.ConfigError) as err:
        load_grail(SPLIT, root, **SMALL)
    message = str(err.value)
    assert "\n" not in message and "sha256" in message and f"{SPLIT}_ind/test.txt" in message
    assert _files_under(root) == []


def test_download_of_a_missing_file_leaves_nothing(server, tmp_path):
    (server / f"{SPLIT}/valid.txt").unlink()
    root = tmp_path / "root"
    with pytest.raises(nsm.ConfigError) as err:
        grail.raw_files(SPLIT, root)
    assert "\n" not in str(err.value) and f"{SPLIT}/valid.txt" in str(err.value)
    assert _files_under(root) == []


def test_a_corrupt_cached_file_is_downloaded_again(server, tmp_path):
    root = tmp_path / "root"
    grail.raw_files(SPLIT, root)
    cached = root / "grail" / "raw" / f"{SPLIT}/test.txt"
    cached.write_text("tampered\n")
    grail.raw_files(SPLIT, root)
    assert cached.read_text().count("\n") == len(tiny_triples()[f"{SPLIT}/test.txt"])


def test_malformed_line_is_one_line_error(tiny_copy, tmp_path, monkeypatch):
    path = tiny_copy / f"{SPLIT}/valid.txt"
    path.write_text(path.read_text() + "e1\tr0\n")
    monkeypatch.setitem(grail._SHA256, f"{SPLIT}/valid.txt", grail._sha256(path))
    with pytest.raises(nsm.ConfigError, match=r"valid.txt:17: expected"):
        grail_protocol(SPLIT, tmp_path / "root", **SMALL)


def test_bad_arguments(tmp_path):
    for kwargs in ({"hops": 0}, {"max_nodes": 1}, {"num_candidates": 1}, {"val_queries": 0}, {"seed": 1.5}, {"seed": -1}, {"hops": True}):
        with pytest.raises(nsm.ConfigError):
            load_grail("WN18RR_v1", tmp_path / "root", **kwargs)
    (tmp_path / "file").write_text("")
    with pytest.raises(nsm.ConfigError, match="not a directory"):
        load_grail("WN18RR_v1", tmp_path / "file")


# ----------------------------------------------------------------------------------------- protocol


def _names(protocol: GrailProtocol, side: str, triples: torch.Tensor) -> set[tuple[str, str, str]]:
    entities = protocol.train_entities if side == "train" else protocol.test_entities
    return {(entities[h], protocol.relation_names[r], entities[t]) for h, r, t in triples.reshape(-1, 3).tolist()}


def _true(side: str) -> set[tuple[str, str, str]]:
    files = tiny_triples()
    parts = ("train", "valid") if side == "train" else ("train", "valid", "test")
    folder = SPLIT if side == "train" else f"{SPLIT}_ind"
    return {t for part in parts for t in files[f"{folder}/{part}.txt"]}


def test_relations_and_unseen_relations(tiny_data):
    p = tiny_data.protocol
    assert p.relation_names == ("r0", "r1", "r2", "r3")
    assert p.dropped == {f"{SPLIT}_ind/train.txt": 1, f"{SPLIT}_ind/test.txt": 1}
    assert "r_unseen" not in {r for _, r, _ in _names(p, "test", p.test_graph)}


def test_graphs_and_targets_are_the_files(tiny_data):
    p, files = tiny_data.protocol, tiny_triples()
    assert _names(p, "train", p.train_graph) == set(files[f"{SPLIT}/train.txt"])
    assert _names(p, "test", p.test_graph) == {t for t in files[f"{SPLIT}_ind/train.txt"] if t[1] != "r_unseen"}
    half = p.train_targets.shape[0] // 2
    assert torch.equal(p.train_targets[:half], p.train_graph)
    assert _names(p, "train", p.valid_auc[: p.valid_auc.shape[0] // 2]) == set(files[f"{SPLIT}/valid.txt"])
    assert _names(p, "test", p.test_auc[: p.test_auc.shape[0] // 2]) == {
        t for t in files[f"{SPLIT}_ind/test.txt"] if t[1] != "r_unseen"
    }
    assert set(p.train_entities).isdisjoint(p.test_entities)  # inductive


@pytest.mark.parametrize("part, side, known", [("train_targets", "train", "graph"), ("valid_auc", "train", "filtered"), ("test_auc", "test", "filtered")])
def test_each_corruption_changes_one_end_and_is_not_true(tiny_data, part, side, known):
    p = tiny_data.protocol
    triples = getattr(p, part)
    half = triples.shape[0] // 2
    pos, neg = triples[:half], triples[half:]
    assert torch.equal(pos[:, 1], neg[:, 1])
    changed = (pos[:, 0] != neg[:, 0]).long() + (pos[:, 2] != neg[:, 2]).long()
    assert bool((changed == 1).all())
    assert bool((neg[:, 0] != neg[:, 2]).all())
    true = set(tiny_triples()[f"{SPLIT}/train.txt"]) if known == "graph" else _true(side)
    assert _names(p, side, neg).isdisjoint(true)
    # Both ends get corrupted somewhere (probability 1/2 each).
    assert bool((pos[:, 0] != neg[:, 0]).any()) and bool((pos[:, 2] != neg[:, 2]).any())


@pytest.mark.parametrize("part, side", [("valid_ranking", "train"), ("test_ranking", "test")])
def test_no_candidate_in_a_ranking_list_is_a_true_triple(tiny_data, part, side):
    p = tiny_data.protocol
    ranking = getattr(p, part)
    c = SMALL["num_candidates"]
    assert ranking.shape[0] == 2 and ranking.shape[2] == p.num_candidates == c
    entities = p.train_entities if side == "train" else p.test_entities
    true = _true(side)
    for replaced in (0, 1):  # head replaced, tail replaced
        for query in ranking[replaced].tolist():
            (h, r, t), rest = query[0], query[1:]
            rel = p.relation_names[r]
            assert (entities[h], rel, entities[t]) in true
            if replaced == 0:
                assert all(c_r == r and c_t == t for _, c_r, c_t in rest)
                drawn = [c_h for c_h, _, _ in rest]
                valid = {i for i, e in enumerate(entities) if i != t and (e, rel, entities[t]) not in true}
            else:
                assert all(c_h == h and c_r == r for c_h, c_r, _ in rest)
                drawn = [c_t for _, _, c_t in rest]
                valid = {i for i, e in enumerate(entities) if i != h and (entities[h], rel, e) not in true}
            assert set(drawn) <= valid  # never a true triple, never a self-loop
            # Distinct whenever enough corruptions exist; otherwise every one of them is used.
            assert len(set(drawn)) == min(c - 1, len(valid))


def test_lists_too_short_are_padded_and_counted(tiny_data):
    p = tiny_data.protocol
    assert p.padded_lists["test_head"] >= 1  # (?, r3, n0): n0 is the tail of r3 for 24 of 30 entities
    assert p.padded_lists["valid_head"] == p.padded_lists["valid_tail"] == 0


def test_validation_ranks_a_fixed_subset(tiny_data):
    p = tiny_data.protocol
    assert p.valid_ranking.shape[1] == SMALL["val_queries"]
    valid = p.valid_auc[: p.valid_auc.shape[0] // 2]
    assert {tuple(t) for t in p.valid_ranking[0, :, 0].tolist()} <= {tuple(t) for t in valid.tolist()}


def test_protocol_is_deterministic_in_the_seed(tiny_copy, tmp_path):
    a = grail_protocol(SPLIT, tmp_path, seed=3, **SMALL)
    b = grail_protocol(SPLIT, tmp_path, seed=3, **SMALL)
    c = grail_protocol(SPLIT, tmp_path, seed=4, **SMALL)
    for key in ("train_targets", "valid_auc", "valid_ranking", "test_auc", "test_ranking"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert not torch.equal(a.test_ranking, c.test_ranking)
    # The test candidates do not depend on how many validation queries are ranked.
    d = grail_protocol(SPLIT, tmp_path, seed=3, num_candidates=8, val_queries=None)
    assert torch.equal(a.test_ranking, d.test_ranking) and d.valid_ranking.shape[1] == 16


# ----------------------------------------------------------------------------------------- subgraphs


def _check_against_reference(protocol_graph: torch.Tensor, targets: torch.Tensor, hops: int, max_nodes: int, packed, entity) -> None:
    """Every subgraph equals the plain-Python reference: node order, labels, edges and types."""
    node_ptr, edge_ptr = packed.node_ptr.tolist(), packed.edge_ptr.tolist()
    x = packed.x.long()
    for i, target in enumerate(targets.tolist()):
        nodes, labels, edges = reference_subgraph(protocol_graph, tuple(target), hops, max_nodes)
        n0, n1, e0, e1 = node_ptr[i], node_ptr[i + 1], edge_ptr[i], edge_ptr[i + 1]
        got_nodes = entity[n0:n1].tolist()
        assert got_nodes == nodes, f"target {i}"
        got_labels = [(int(row[: hops + 1].argmax()), int(row[hops + 1 :].argmax())) for row in x[n0:n1]]
        assert got_labels == labels
        assert bool((x[n0:n1].sum(1) == 2).all())
        src, dst = packed.edge_index[:, e0:e1].long()
        got_edges = Counter(zip([got_nodes[s] for s in src.tolist()], packed.edge_type[e0:e1].tolist(), [got_nodes[d] for d in dst.tolist()]))
        assert got_edges == edges, f"target {i}"
        assert int(packed.graph_attrs["relation"][i]) == target[1]


@pytest.mark.parametrize("hops, max_nodes", [(1, 200), (2, 200), (3, 200), (2, 6), (3, 3)])
def test_subgraphs_match_the_reference_on_the_tiny_graph(tiny_copy, tmp_path, hops, max_nodes):
    p = grail_protocol(SPLIT, tmp_path, **SMALL)
    for graph, n, targets in (
        (p.train_graph, len(p.train_entities), p.train_targets),
        (p.train_graph, len(p.train_entities), p.valid_ranking.reshape(-1, 3)),
        (p.test_graph, len(p.test_entities), torch.cat([p.test_auc, p.test_ranking.reshape(-1, 3)])),
    ):
        labels = torch.zeros(targets.shape[0], dtype=torch.long)
        packed, _ = grail._pack(graph, n, targets, labels, p.num_relations, hops, max_nodes)
        entity = _entities(graph, n, targets, hops, max_nodes)
        _check_against_reference(graph, targets, hops, max_nodes, packed, entity)


@pytest.mark.parametrize("ratio", [0, 10**12], ids=["gather-only", "sparse-product-only"])
def test_both_breadth_first_step_kinds_match_the_reference(tiny_copy, tmp_path, monkeypatch, ratio):
    """A step either gathers neighbour lists or multiplies by the adjacency, by cost; force each."""
    monkeypatch.setattr(_subgraph, "_DENSE_RATIO", ratio)
    p = grail_protocol(SPLIT, tmp_path, **SMALL)
    targets = torch.cat([p.test_auc, p.test_ranking.reshape(-1, 3)])
    graph, n = p.test_graph, len(p.test_entities)
    packed, _ = grail._pack(graph, n, targets, torch.zeros(len(targets), dtype=torch.long), p.num_relations, 3, 10)
    _check_against_reference(graph, targets, 3, 10, packed, _entities(graph, n, targets, 3, 10))


def _entities(graph, n, targets, hops, max_nodes):
    keys = {tuple(f): i for i, f in enumerate(graph.tolist())}
    target_fact = torch.tensor([keys.get(tuple(t), -1) for t in targets.tolist()])
    return extract(graph, n, targets, target_fact, hops, max_nodes).entity


def test_the_target_fact_is_absent_from_its_own_subgraph(tiny_data):
    train = tiny_data.train
    half = len(train) // 2
    b = train.batch(range(half))  # the positives: each is a fact of the training graph
    head = b.head_index[b.batch[b.edge_index[0]]]
    tail = b.tail_index[b.batch[b.edge_index[0]]]
    query = b.relation[b.batch[b.edge_index[0]]]
    is_target = (b.edge_index[0] == head) & (b.edge_index[1] == tail) & (b.edge_type == query)
    assert not bool(is_target.any())
    # ...while the other facts between the same two entities stay: (e0, r0, e1) keeps (e0, r1, e1) and (e1, r2, e0).
    p = tiny_data.protocol
    e0, e1 = p.train_entities.index("e0"), p.train_entities.index("e1")
    r0 = p.relation_names.index("r0")
    i = [tuple(t) for t in p.train_targets.tolist()].index((e0, r0, e1))
    g = train[i]
    pairs = {(s, int(r), d) for s, d, r in zip(*g.edge_index.tolist(), g.edge_type)}
    assert pairs & {(0, 1, 1), (1, 2, 0)} == {(0, 1, 1), (1, 2, 0)} and (0, r0, 1) not in pairs


def test_node_features_are_distance_labels_only(tiny_data):
    assert tiny_data.num_node_features == len(tiny_data.node_feature_names) == 6
    for part in ("train", "valid", "valid_ranking", "test", "test_ranking"):
        packed = getattr(tiny_data, part)
        assert packed.x.dtype == torch.uint8 and set(packed.x.unique().tolist()) <= {0, 1}
        first = packed.node_ptr[:-1]
        assert bool((packed.x[first].long() == torch.tensor([1, 0, 0, 0, 1, 0])).all())  # head (0, 1)
        assert bool((packed.x[first + 1].long() == torch.tensor([0, 1, 0, 1, 0, 0])).all())  # tail (1, 0)
        assert int(packed.num_nodes.max()) <= tiny_data.max_nodes
        assert bool((packed.y == torch.where(_is_true(part, packed), 1, 0)).all())


def _is_true(part, packed):
    if part.endswith("ranking"):
        c = SMALL["num_candidates"]
        return torch.arange(len(packed)) % c == 0
    return torch.arange(len(packed)) < len(packed) // 2


def test_batches_carry_roots_and_query_relation(tiny_data):
    b = tiny_data.test_ranking.batch([0, 5, 9])
    assert torch.equal(b.head_index, b.ptr[:-1]) and torch.equal(b.tail_index, b.ptr[:-1] + 1)
    expected = tiny_data.protocol.test_ranking.reshape(-1, 3)[[0, 5, 9], 1]
    assert torch.equal(b.relation, expected)
    assert b.x.dtype == torch.float32 and b.edge_attr.dtype == torch.float32 and b.edge_index.dtype == torch.long


def _brute_force_context(facts, target, num_relations, left_out):
    """The roots' relation counts by definition: every fact but ``left_out`` (a fact, or None)."""
    h, _, t = target
    counts = [0] * (4 * num_relations)
    for a, rel, b in facts:
        if (a, rel, b) == left_out:
            continue
        for block, (end, entity) in enumerate(((a, h), (b, h), (a, t), (b, t))):
            counts[block * num_relations + rel] += end == entity
    return counts


@pytest.mark.parametrize("part, graph_key", [("train", "train_graph"), ("valid", "train_graph"),
                                             ("test", "test_graph"), ("test_ranking", "test_graph")])
def test_root_relations_count_every_fact_of_a_root_but_the_one_the_target_came_from(tiny_data, part, graph_key):
    p = tiny_data.protocol
    packed = getattr(tiny_data, part)
    targets = {"train": p.train_targets, "valid": p.valid_auc, "test": p.test_auc,
               "test_ranking": p.test_ranking.reshape(-1, 3)}[part]
    facts = [tuple(f) for f in getattr(p, graph_key).tolist()]
    context = packed.graph_attrs["root_relations"]
    assert context.dtype == torch.uint8 and context.shape == (len(packed), 4 * p.num_relations)
    half = len(packed) // 2
    for i, target in enumerate(map(tuple, targets.tolist())):
        # A training target (a fact, then its corruption) leaves out the fact it came from; the other
        # parts' triples are not in their graph, so nothing is left out.
        left_out = facts[i % half] if part == "train" else None
        assert context[i].tolist() == _brute_force_context(facts, target, p.num_relations, left_out), i
    if part == "train":
        # A corruption keeps one root of its fact, and that root looks the same in both: the root it
        # shares cannot tell the true triple from its corruption.
        R = p.num_relations
        for i in range(half):
            same_head = bool(p.train_targets[i, 0] == p.train_targets[half + i, 0])
            kept = slice(0, 2 * R) if same_head else slice(2 * R, 4 * R)
            assert torch.equal(context[i, kept], context[half + i, kept]), i
        h, r, t = facts[0]  # and a positive's own fact is not counted
        full = _brute_force_context(facts, (h, r, t), R, None)
        assert context[0, r] == full[r] - 1 and context[0, 3 * R + r] == full[3 * R + r] - 1


@pytest.mark.parametrize("part", ["train", "valid", "valid_ranking", "test", "test_ranking"])
def test_root_pagerank_is_the_shortcut_on_the_graph_the_target_is_scored_on(tiny_data, part):
    from nsm import ppr

    p = tiny_data.protocol
    packed = getattr(tiny_data, part)
    targets = {"train": p.train_targets, "valid": p.valid_auc, "valid_ranking": p.valid_ranking.reshape(-1, 3),
               "test": p.test_auc, "test_ranking": p.test_ranking.reshape(-1, 3)}[part]
    graph, n = (p.test_graph, len(p.test_entities)) if part.startswith("test") else (p.train_graph, len(p.train_entities))
    got = packed.graph_attrs["root_pagerank"]
    assert got.dtype == torch.float32 and got.shape == (len(packed), 2)
    if part == "train":  # each fact and its corruption on the graph without that fact
        facts = torch.arange(graph.shape[0])
        expected = ppr.root_pagerank(graph, n, targets, torch.cat([facts, facts]))
        heads, tails = targets[:, 0], targets[:, 2]
        with_fact = ppr.pagerank_matrix(graph, n)
        assert (got[: len(facts), 0] < n * with_fact[heads, tails][: len(facts)]).all()
    else:  # the triples are not in their graph: PageRank on the whole of it, from either root
        rows = torch.arange(len(targets))
        from_head = ppr.personalized_pagerank(graph, n, targets[:, 0])[rows, targets[:, 2]]
        from_tail = ppr.personalized_pagerank(graph, n, targets[:, 2])[rows, targets[:, 0]]
        expected = torch.stack([from_head, from_tail], dim=1)
    assert torch.allclose(got.double(), n * expected, rtol=1e-5, atol=1e-7)


def test_more_training_corruptions_are_more_blocks_drawn_like_the_first(tiny_copy, tmp_path, tiny_data):
    """``train_corruptions=3``: the facts, then three blocks of one corruption of each fact. The first block
    is the one of a single corruption; validation and test do not change; every training graph leaves
    out the fact it was made from, as a test triple is scored without its fact; its own cache file."""
    from nsm import ppr

    root = tmp_path / "root"
    data = load_grail(SPLIT, root, hops=2, max_nodes=12, train_corruptions=3, **SMALL)
    p, one = data.protocol, tiny_data.protocol
    facts = p.train_graph.shape[0]
    assert p.train_corruptions == data.train_corruptions == 3
    assert p.train_targets.shape == (4 * facts, 3) and len(data.train) == 4 * facts
    assert torch.equal(p.train_targets[: 2 * facts], one.train_targets)
    assert torch.equal(data.train.y, torch.cat([torch.ones(facts), torch.zeros(3 * facts)]).long())
    for part in ("valid_auc", "valid_ranking", "test_auc", "test_ranking"):
        assert torch.equal(getattr(p, part), getattr(one, part)), part
    for part in ("valid", "valid_ranking", "test", "test_ranking"):
        assert torch.equal(getattr(data, part).x, getattr(tiny_data, part).x), part
    true = set(tiny_triples()[f"{SPLIT}/train.txt"])
    blocks = p.train_targets[facts:].view(3, facts, 3)
    for block in blocks:
        assert torch.equal(block[:, 1], p.train_graph[:, 1])
        changed = (block[:, 0] != p.train_graph[:, 0]).long() + (block[:, 2] != p.train_graph[:, 2]).long()
        assert bool((changed == 1).all()) and bool((block[:, 0] != block[:, 2]).all())
        assert _names(p, "train", block).isdisjoint(true)
    assert not torch.equal(blocks[1], blocks[0]) and not torch.equal(blocks[2], blocks[1])  # drawn anew
    n = len(p.train_entities)
    expected = ppr.root_pagerank(p.train_graph, n, p.train_targets, torch.arange(facts).repeat(4))
    assert torch.allclose(data.train.graph_attrs["root_pagerank"].double(), n * expected, rtol=1e-5, atol=1e-7)
    names = sorted(path.name for path in (root / "grail" / "processed").iterdir())
    assert len(names) == 1 and "-n3-" in names[0]
    again = load_grail(SPLIT, root, hops=2, max_nodes=12, train_corruptions=3, **SMALL)
    assert again.train_corruptions == 3 and torch.equal(again.protocol.train_targets, p.train_targets)
    with pytest.raises(nsm.ConfigError, match="train_corruptions"):
        load_grail(SPLIT, root, train_corruptions=0)


def test_a_thinned_training_graph_feeds_the_training_targets_only(tiny_copy, tmp_path, tiny_data):
    """``train_graph_keep=0.5``: the training targets' subgraphs and root inputs come from a seeded half of
    the training graph, each leaving out its own fact where that half holds it; the targets themselves,
    validation and test are those of the whole graph."""
    from nsm import ppr

    root = tmp_path / "root"
    data = load_grail(SPLIT, root, hops=2, max_nodes=12, train_graph_keep=0.5, **SMALL)
    p, whole = data.protocol, tiny_data.protocol
    thin, row = grail.thinned_training_graph(p, 0.5)
    facts = p.train_graph.shape[0]
    assert 0.3 * facts < thin.shape[0] < 0.7 * facts
    assert torch.equal(thin, p.train_graph[row >= 0]) and torch.equal(row[row >= 0], torch.arange(thin.shape[0]))
    assert torch.equal(grail.thinned_training_graph(p, 0.5)[0], thin)  # seeded
    assert torch.equal(grail.thinned_training_graph(p, 1.0)[0], p.train_graph)
    assert torch.equal(p.train_targets, whole.train_targets)
    for part in ("valid", "valid_ranking", "test", "test_ranking"):
        for key in ("x", "edge_index", "edge_type"):
            assert torch.equal(getattr(data, part).to_dict()[key], getattr(tiny_data, part).to_dict()[key]), (part, key)
    n, num_relations = len(p.train_entities), p.num_relations
    left_out = row.repeat(2)  # a fact, then its corruption: both leave out the fact, if it was kept
    expected = ppr.root_pagerank(thin, n, p.train_targets, left_out)
    assert torch.allclose(data.train.graph_attrs["root_pagerank"].double(), n * expected, rtol=1e-5, atol=1e-7)
    thin_facts = [tuple(f) for f in thin.tolist()]
    context = data.train.graph_attrs["root_relations"]
    for i, target in enumerate(map(tuple, p.train_targets.tolist())):
        left = thin_facts[left_out[i]] if left_out[i] >= 0 else None
        assert context[i].tolist() == _brute_force_context(thin_facts, target, num_relations, left), i
    assert data.train.num_edges.sum() < tiny_data.train.num_edges.sum()
    assert [path.name for path in (root / "grail" / "processed").iterdir()][0].count("-g0.5-") == 1
    for bad in (0, 1.5, True, "half"):
        with pytest.raises(nsm.ConfigError, match="train_graph_keep"):
            load_grail(SPLIT, root, train_graph_keep=bad)


def test_root_relations_of_a_self_loop_fact_leave_it_out_of_all_four_blocks():
    facts = torch.tensor([[0, 1, 0], [0, 1, 2], [2, 0, 0], [1, 1, 0]])  # (0, r1, 0) is a self-loop fact
    targets = torch.tensor([[0, 1, 0], [2, 1, 1]])
    counts = grail.root_relation_counts(facts, 3, 2, targets, torch.tensor([0, -1]))
    as_tuples = [tuple(f) for f in facts.tolist()]
    for i, (target, left_out) in enumerate((((0, 1, 0), (0, 1, 0)), ((2, 1, 1), None))):
        assert counts[i].tolist() == _brute_force_context(as_tuples, target, 2, left_out)
    assert counts[0].tolist() == [0, 1, 1, 1] * 2  # out: (0,r1,2); in: (2,r0,0), (1,r1,0); the loop is gone


def test_root_relations_saturate_at_255():
    hub = torch.tensor([[0, 0, i] for i in range(1, 301)])
    counts = grail.root_relation_counts(hub, 301, 1, torch.tensor([[0, 0, 1]]), torch.tensor([0]))
    assert counts.tolist() == [[255, 0, 0, 0]]  # 299 out of the head once its own fact is left out


def test_renaming_every_entity_leaves_each_subgraph_unchanged(tmp_path, monkeypatch):
    """Same files with new entity names and shuffled lines: each triple's subgraph is the same up to node order."""
    original, renamed = tmp_path / "a", tmp_path / "b"
    names = {e: f"x{(i * 37) % 101}_{e[::-1]}" for i, e in enumerate(sorted({e for ts in tiny_triples().values() for h, _, t in ts for e in (h, t)}))}
    sums_a = write_tiny(original)
    sums_b = write_tiny(renamed, rename=names, shuffle_seed=1)
    hops, max_nodes = 2, 200
    results = {}
    for tag, folder, sums in (("a", original, sums_a), ("b", renamed, sums_b)):
        with monkeypatch.context() as mp:
            for rel, digest in sums.items():
                mp.setitem(grail._SHA256, rel, digest)
            mp.setenv(grail.ENV_DIR, str(folder))
            results[tag] = grail_protocol(SPLIT, tmp_path / f"root-{tag}", **SMALL)
    a, b = results["a"], results["b"]
    assert a.train_entities != b.train_entities  # the renaming and shuffling did change the ids
    for side, graph_key, parts in (
        ("train", "train_graph", ("train_targets", "valid_auc", "valid_ranking")),
        ("test", "test_graph", ("test_auc", "test_ranking")),
    ):
        ents_a = a.train_entities if side == "train" else a.test_entities
        ents_b = b.train_entities if side == "train" else b.test_entities
        index_b = {name: i for i, name in enumerate(ents_b)}
        to_b = torch.tensor([index_b[names[name]] for name in ents_a])
        back = {index_b[names[name]]: name for name in ents_a}
        targets_a = torch.cat([getattr(a, part).reshape(-1, 3) for part in parts])
        targets_b = targets_a.clone()
        targets_b[:, 0], targets_b[:, 2] = to_b[targets_a[:, 0]], to_b[targets_a[:, 2]]
        canon = []
        for p, targets, ents, rename in ((a, targets_a, ents_a, None), (b, targets_b, ents_b, back)):
            graph = getattr(p, graph_key)
            packed, _ = grail._pack(graph, len(ents), targets, torch.zeros(len(targets), dtype=torch.long), p.num_relations, hops, max_nodes)
            entity = _entities(graph, len(ents), targets, hops, max_nodes)
            canon.append(_canonical(packed, entity, (lambda e: ents[e]) if rename is None else (lambda e: rename[e])))
        assert canon[0] == canon[1]


def _canonical(packed, entity, name):
    """Per graph: {entity name: label row} and the multiset of (src name, relation, dst name)."""
    out = []
    for i in range(len(packed)):
        n0, n1 = int(packed.node_ptr[i]), int(packed.node_ptr[i + 1])
        e0, e1 = int(packed.edge_ptr[i]), int(packed.edge_ptr[i + 1])
        nodes = [name(e) for e in entity[n0:n1].tolist()]
        labels = {nodes[j]: tuple(packed.x[n0 + j].tolist()) for j in range(n1 - n0)}
        src, dst = packed.edge_index[:, e0:e1].long().tolist()
        edges = Counter(zip([nodes[s] for s in src], packed.edge_type[e0:e1].tolist(), [nodes[d] for d in dst]))
        out.append((nodes[0], nodes[1], labels, edges))
    return out


# ----------------------------------------------------------------------------------------- cache


def test_second_load_comes_from_the_cache(tiny_copy, tmp_path):
    root = tmp_path / "root"
    first = load_grail(SPLIT, root, hops=2, **SMALL)
    files = list((root / "grail" / "processed").iterdir())
    assert len(files) == 1 and files[0].name.startswith(f"{SPLIT}-f") and "-k2-m200-c8-v6-n1-g1-s0" in files[0].name
    # The cache alone is enough now: the source files are gone.
    for path in tiny_copy.rglob("*.txt"):
        path.unlink()
    second = load_grail(SPLIT, root, hops=2, **SMALL)
    for part in ("train", "valid", "valid_ranking", "test", "test_ranking"):
        a, b = getattr(first, part).to_dict(), getattr(second, part).to_dict()
        for key in ("x", "edge_index", "edge_type", "edge_attr", "node_ptr", "edge_ptr", "y"):
            assert torch.equal(a[key], b[key]), (part, key)
    assert torch.equal(first.protocol.test_ranking, second.protocol.test_ranking)
    assert second.protocol.dropped == first.protocol.dropped and second.stats == first.stats
    # Other settings are other cache entries (and need the files again).
    with pytest.raises(nsm.ConfigError, match="missing"):
        load_grail(SPLIT, root, hops=2, max_nodes=50, **SMALL)


def test_a_corrupt_cache_file_is_rebuilt(tiny_copy, tmp_path):
    root = tmp_path / "root"
    first = load_grail(SPLIT, root, hops=2, **SMALL)
    (path,) = (root / "grail" / "processed").iterdir()
    path.write_bytes(path.read_bytes()[:1000])
    again = load_grail(SPLIT, root, hops=2, **SMALL)
    assert torch.equal(first.train.x, again.train.x)
    assert torch.load(path, weights_only=True)["split"] == SPLIT


# ----------------------------------------------------------------------------------------- a real split


def _shared_copy() -> Path | None:
    """``shared/data/grail`` next to the checkout or one of its parents (the project's layout)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "data" / "grail"
        if (candidate / "WN18RR_v1" / "train.txt").is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def real_split(tmp_path_factory):
    copy = os.environ.get(grail.ENV_DIR) or _shared_copy()
    root = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as mp:
        if copy:
            mp.setenv(grail.ENV_DIR, str(copy))
        else:
            mp.delenv(grail.ENV_DIR, raising=False)
        try:
            return load_grail("wn18rr_v1", root), root
        except nsm.ConfigError as exc:
            if copy or "could not download" not in str(exc):
                raise
            pytest.skip(f"no local copy of GraIL's data (../shared/data/grail or $NSM_GRAIL_DIR) and no network: {exc}")


def test_the_published_splits_verify_and_use_no_unseen_relation(monkeypatch, tmp_path):
    copy = os.environ.get(grail.ENV_DIR) or _shared_copy()
    if not copy:
        pytest.skip("no local copy of GraIL's data (../shared/data/grail or $NSM_GRAIL_DIR)")
    monkeypatch.setenv(grail.ENV_DIR, str(copy))
    for split in grail.SPLITS:
        paths = grail.raw_files(split, tmp_path)  # all 72 checksums
        train = {r for _, r, _ in grail._read_triples(paths[f"{split}/train.txt"])}
        for rel, path in paths.items():
            assert {r for _, r, _ in grail._read_triples(path)} <= train, rel


def test_real_split_end_to_end(real_split):
    data, _ = real_split
    p = data.protocol
    assert data.name == "WN18RR_v1" and p.num_relations == 9 and p.dropped == {}
    assert (len(p.train_entities), len(p.test_entities)) == (2746, 922)
    assert (p.train_graph.shape[0], p.test_graph.shape[0]) == (5410, 1618)
    assert (len(data.train), len(data.valid), len(data.test)) == (2 * 5410, 2 * 630, 2 * 188)
    assert p.test_ranking.shape == (2, 188, 50, 3) and len(data.test_ranking) == 2 * 188 * 50
    assert p.valid_ranking.shape == (2, 100, 50, 3) and len(data.valid_ranking) == 2 * 100 * 50
    assert data.stats["capped"] == 0  # WN18RR subgraphs stay whole under the default cap
    # Protocol checks on the real files.
    true_test = {tuple(t) for t in torch.cat([p.test_graph, p.test_auc[: p.test_auc.shape[0] // 2]]).tolist()}
    assert {tuple(t) for t in p.test_ranking[:, :, 1:].reshape(-1, 3).tolist()}.isdisjoint(true_test)
    assert {tuple(t) for t in p.test_auc[p.test_auc.shape[0] // 2 :].tolist()}.isdisjoint(true_test)
    b = data.train.batch(range(5410))
    src_root = b.batch[b.edge_index[0]]
    assert not bool(((b.edge_index[0] == b.head_index[src_root]) & (b.edge_index[1] == b.tail_index[src_root]) & (b.edge_type == b.relation[src_root])).any())


def test_real_subgraphs_match_the_reference(real_split):
    data, _ = real_split
    p = data.protocol
    g = torch.Generator().manual_seed(0)
    for graph, n, targets, hops, cap in (
        (p.train_graph, len(p.train_entities), p.train_targets, 3, 200),
        (p.test_graph, len(p.test_entities), p.test_ranking.reshape(-1, 3), 3, 200),
        (p.train_graph, len(p.train_entities), p.valid_auc, 3, 8),  # the cap at work
    ):
        sample = targets[torch.randperm(targets.shape[0], generator=g)[:150]]
        packed, _ = grail._pack(graph, n, sample, torch.zeros(150, dtype=torch.long), p.num_relations, hops, cap)
        _check_against_reference(graph, sample, hops, cap, packed, _entities(graph, n, sample, hops, cap))


def test_real_split_loads_from_cache(real_split, monkeypatch):
    data, root = real_split
    monkeypatch.setenv(grail.ENV_DIR, str(root / "nowhere"))  # the files are not consulted again
    again = load_grail("WN18RR_v1", root)
    assert torch.equal(again.test_ranking.edge_index, data.test_ranking.edge_index)
    assert torch.equal(again.protocol.test_ranking, data.protocol.test_ranking)
