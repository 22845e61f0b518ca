"""spaces.load_space: the default file, per-domain overrides, and one-line errors naming file and key."""

from __future__ import annotations

import textwrap

import pytest
from ray import tune

from spaces import DEFAULT_SPACE, SpaceError, load_space, searched_keys


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("domain", ["planning", "causal", "kg"])
def test_default_space_has_the_issue_distributions(domain):
    space = load_space(DEFAULT_SPACE, domain)
    assert space["domain"] == domain
    assert searched_keys(space) == ["lr", "cycle_weight", "batch_size"]
    lr, cycle, batch = space["lr"], space["cycle_weight"], space["batch_size"]
    assert isinstance(lr, tune.search.sample.Float) and (lr.lower, lr.upper) == (1e-5, 1e-2)
    assert isinstance(lr.get_sampler(), tune.search.sample.LogUniform)
    assert (cycle.lower, cycle.upper) == (1e-3, 0.3)
    assert isinstance(cycle.get_sampler(), tune.search.sample.LogUniform)
    assert list(batch.categories) == [16, 32, 64, 128]
    # Fixed keys pass through to the trainer unchanged.
    assert space["hidden_dim"] == 64 and space["pool_ratio"] == 0.5


def test_default_space_searches_the_grail_switches_on_splits_only():
    for split in ("WN18RR_v1", "nell_v4"):
        space = load_space(DEFAULT_SPACE, split)
        assert searched_keys(space) == ["lr", "cycle_weight", "batch_size", "root_context", "train_pathless_facts",
                                        "root_proximity", "root_pagerank"]
        assert sorted(space["root_context"].categories) == [False, True]
    assert "root_context" not in load_space(DEFAULT_SPACE, "kg")


def test_domain_override_replaces_the_default_key(tmp_path):
    path = write(tmp_path, """
        default:
          lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
          hidden_dim: 32
          num_bases: {type: uniform, low: 2, high: 8}
        domains:
          kg:
            hidden_dim: 128
            lr: {type: choice, values: [0.001, 0.003]}
    """)
    planning, kg = load_space(path, "planning"), load_space(path, "kg")
    assert planning["hidden_dim"] == 32 and kg["hidden_dim"] == 128
    assert isinstance(planning["lr"], tune.search.sample.Float)
    assert list(kg["lr"].categories) == [0.001, 0.003]
    # An int key's inclusive [low, high] becomes Ray's exclusive upper bound.
    assert isinstance(planning["num_bases"], tune.search.sample.Integer)
    assert (planning["num_bases"].lower, planning["num_bases"].upper) == (2, 9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default:\n  lrr: 0.1\n", "default.lrr: unknown key"),
        ("default:\n  lr: {type: loguniform, low: 0.01, high: 0.001}\n", "default.lr: low must be < high"),
        ("default:\n  lr: {type: loguniform, low: 0.01, high: 0.01}\n", "default.lr: low must be < high"),
        ("default:\n  lr: {type: loguniform, low: 0, high: 0.1}\n", "default.lr: loguniform bounds must be > 0"),
        ("default:\n  cycle_weight: {type: loguniform, low: -1, high: 0.1}\n", "default.cycle_weight: loguniform bounds must be > 0"),
        ("default:\n  batch_size: {type: choice, values: []}\n", "default.batch_size: choice needs at least one value"),
        ("default:\n  batch_size: {type: choice, values: [16, 'big']}\n", "default.batch_size: choice value 'big' is not int"),
        ("default:\n  lr: {type: loguniform, low: small, high: 0.1}\n", "default.lr: low must be a number"),
        ("default:\n  hidden_dim: wide\n", "default.hidden_dim: hidden_dim must be int"),
        ("default:\n  root_context: {type: choice, values: [true, 'no']}\n", "default.root_context: choice value 'no' is not bool"),
        ("default:\n  train_pathless_facts: 0\n", "default.train_pathless_facts: train_pathless_facts must be bool"),
        ("default:\n  pool_ratio: {type: uniform, low: 0.5, high: 1.5}\n", "default.pool_ratio: pool_ratio must be in (0, 1]"),
        ("default:\n  lr: {type: normal, low: 0.1, high: 0.2}\n", "default.lr: type must be one of"),
        ("default:\n  domain: kg\n", "default.domain: not allowed"),
        ("domains:\n  chess: {}\n", "domains.chess: unknown domain"),
        ("domains:\n  kg:\n    dropoutt: 0.1\n", "domains.kg.dropoutt: unknown key"),
        ("defaults:\n  lr: 0.1\n", "unknown top-level key 'defaults'"),
        ("- lr\n", "must hold a mapping"),
        ("default: [\n", "not valid YAML"),
    ],
)
def test_bad_space_is_one_line_naming_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as error:
        load_space(path, "planning")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message


def test_missing_file_and_unknown_domain(tmp_path):
    with pytest.raises(SpaceError, match="space file not found"):
        load_space(tmp_path / "nope.yaml", "planning")
    with pytest.raises(SpaceError, match="unknown domain 'chess'"):
        load_space(DEFAULT_SPACE, "chess")
