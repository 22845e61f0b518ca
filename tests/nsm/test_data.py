"""Tests of nsm.data: the three synthetic domains, their split, their cache, and the count-shortcut bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

import nsm
import nsm.data
from nsm.data import DOMAINS, _cache, causal, kg, load_domain, planning
from nsm.data.shortcut import count_features

# Number of leading x columns that one-hot encode the entity type (the rest are role markers).
TYPE_COLUMNS = {"planning": 6, "causal": 5, "kg": 5}
LABEL_RULES = {"planning": planning.is_executable, "causal": causal.has_causal_path, "kg": kg.is_entailed}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Each domain at the size the shortcut bound is stated for (2000 graphs), generated once."""
    root = tmp_path_factory.mktemp("data")
    return {name: load_domain(name, num_graphs=2000, seed=0, root=root) for name in DOMAINS}


def _all(d):
    return d.train + d.val + d.test


def test_domains_value():
    assert DOMAINS == ("planning", "causal", "kg")


@pytest.mark.parametrize("name", DOMAINS)
def test_fields(full, name):
    d = full[name]
    assert d.name == name
    assert d.num_relations == len(d.relation_names) > 0
    assert d.num_node_features == len(d.node_feature_names) > 0
    for g in _all(d)[:300]:
        n, e = g.num_nodes, g.edge_index.shape[1]
        assert g.x.dtype == torch.float32 and g.x.shape == (n, d.num_node_features)
        assert g.edge_index.dtype == torch.long and g.edge_index.shape == (2, e) and e > 0
        assert int(g.edge_index.min()) >= 0 and int(g.edge_index.max()) < n
        assert g.edge_type.dtype == torch.long and g.edge_type.shape == (e,)
        assert int(g.edge_type.min()) >= 0 and int(g.edge_type.max()) < d.num_relations
        assert g.edge_attr.dtype == torch.float32 and g.edge_attr.shape == (e, 1)
        assert float(g.edge_attr.min()) > 0.5 and float(g.edge_attr.max()) <= 1.0
        assert g.y.dtype == torch.long and g.y.shape == (1,) and int(g.y) in (0, 1)
        assert not bool((g.edge_index[0] == g.edge_index[1]).any()), "self-loop"


@pytest.mark.parametrize("name", DOMAINS)
def test_features_describe_nodes(full, name):
    k = TYPE_COLUMNS[name]
    x = torch.cat([g.x for g in _all(full[name])[:300]])
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert bool((x[:, :k].sum(1) == 1).all()), "every node has exactly one entity type"


@pytest.mark.parametrize("name", DOMAINS)
def test_labels_follow_the_domain_rule(full, name):
    rule = LABEL_RULES[name]
    for g in _all(full[name])[:400]:
        assert rule(g) == bool(g.y), "label disagrees with the domain's rule"


@pytest.mark.parametrize("name", DOMAINS)
def test_split_sizes_and_balance(full, name):
    d = full[name]
    assert (len(d.train), len(d.val), len(d.test)) == (1400, 300, 300)
    for part in (d.train, d.val, d.test):
        frac = float(np.mean([int(g.y) for g in part]))
        assert 0.45 <= frac <= 0.55


@pytest.mark.parametrize("name", DOMAINS)
def test_graph_size(full, name):
    nodes = np.mean([g.num_nodes for g in _all(full[name])])
    edges = np.mean([g.num_edges for g in _all(full[name])])
    assert 15 <= nodes <= 40 and nodes <= edges <= 3 * nodes
    if name == "planning":  # comparable to the research code (~30 nodes, 63 edges) for the benchmark
        assert 27 <= nodes <= 33 and 50 <= edges <= 70


def _same(a, b):
    return all(
        torch.equal(g.x, h.x)
        and torch.equal(g.edge_index, h.edge_index)
        and torch.equal(g.edge_type, h.edge_type)
        and torch.equal(g.edge_attr, h.edge_attr)
        and torch.equal(g.y, h.y)
        for g, h in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", DOMAINS)
def test_deterministic(tmp_path, name):
    a = load_domain(name, num_graphs=60, seed=3, root=tmp_path / "a")
    b = load_domain(name, num_graphs=60, seed=3, root=tmp_path / "b")
    c = load_domain(name, num_graphs=60, seed=4, root=tmp_path / "a")
    assert _same(_all(a), _all(b))
    assert not _same(_all(a), _all(c))


@pytest.mark.parametrize("name", DOMAINS)
def test_cache_hit_does_not_generate(tmp_path, monkeypatch, name):
    first = load_domain(name, num_graphs=40, seed=1, root=tmp_path)
    files = list(tmp_path.glob(f"{name}-*.pt"))
    assert len(files) == 1
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"

    def boom(*args, **kwargs):
        raise AssertionError("generate called on a cache hit")

    monkeypatch.setattr(nsm.data._MODULES[name], "generate", boom)
    second = load_domain(name, num_graphs=40, seed=1, root=tmp_path)
    assert _same(_all(first), _all(second))
    payload = torch.load(files[0], weights_only=True)
    assert {"x", "edge_index", "edge_type", "edge_attr", "y", "node_ptr", "edge_ptr"} <= set(payload)


@pytest.mark.parametrize("garbage", [b"", b"not a torch file", None])
def test_corrupt_cache_is_regenerated(tmp_path, garbage):
    first = load_domain("causal", num_graphs=40, seed=2, root=tmp_path)
    (path,) = tmp_path.glob("causal-*.pt")
    if garbage is None:  # a truncated write
        garbage = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(garbage)
    again = load_domain("causal", num_graphs=40, seed=2, root=tmp_path)
    assert _same(_all(first), _all(again))
    assert _cache.load(path, {"domain": "causal", "version": causal.VERSION, "num_graphs": 40, "seed": 2}) is not None


def test_crash_while_writing_leaves_no_cache_file(tmp_path, monkeypatch):
    def crash(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(_cache.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        load_domain("planning", num_graphs=20, root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert len(load_domain("planning", num_graphs=20, root=tmp_path).train) == 14


def test_default_root_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NSM_DATA_DIR", str(tmp_path / "nsm"))
    assert _cache.default_root() == tmp_path / "nsm"
    monkeypatch.delenv("NSM_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.default_root() == tmp_path / "xdg" / "nsm-search"
    load_domain("kg", num_graphs=20, seed=0)
    assert list((tmp_path / "xdg" / "nsm-search").glob("kg-*.pt"))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "chess"}, "chess"),
        ({"name": "planning", "num_graphs": 19}, "19"),
        ({"name": "planning", "num_graphs": 0}, "0"),
        ({"name": "planning", "num_graphs": 100.0}, "100.0"),
        ({"name": "planning", "seed": "x"}, "x"),
    ],
)
def test_bad_input_raises_config_error(tmp_path, kwargs, needle):
    with pytest.raises(nsm.ConfigError, match=needle) as info:
        load_domain(root=tmp_path, **kwargs)
    assert "\n" not in str(info.value)


def test_root_that_is_a_file_raises_config_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(nsm.ConfigError, match="file"):
        load_domain("planning", num_graphs=20, root=path)


@pytest.mark.parametrize("name", DOMAINS)
def test_count_only_classifier_is_near_chance(full, name):
    d = full[name]
    x_train = count_features(d.train + d.val, d.num_relations)
    y_train = np.asarray([int(g.y) for g in d.train + d.val])
    x_test = count_features(d.test, d.num_relations)
    y_test = np.asarray([int(g.y) for g in d.test])
    # One OpenMP thread: on a busy 2-core machine more threads spin-wait and take minutes, not seconds.
    with threadpool_limits(limits=1):
        clf = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x_train, y_train)
        accuracy = clf.score(x_test, y_test)
    assert accuracy <= 0.65
