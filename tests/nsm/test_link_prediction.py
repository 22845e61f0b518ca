"""Link prediction on GraIL's splits through nsm.train: a tiny knowledge graph written in GraIL's file
layout (train, resume, files, metrics, CLI), the real WN18RR_v1 end to end, entity renaming, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nsm import ConfigError
from nsm import train as nsm_train
from nsm.checkpoint import load_model, model_args
from nsm.config import TrainConfig
from nsm.data import grail
from nsm.metrics import TASKS, LINK_PREDICTION
from nsm.model import NSM
from nsm.train import link_scores, main, train
from tests.nsm.grail_tiny import install_tiny_as, tiny_triples

REPO = Path(__file__).resolve().parents[2]
TINY = dict(epochs=2, hidden_dim=16, num_bases=4, batch_size=32, save_every=1)


@pytest.fixture
def tiny_split(tmp_path, monkeypatch):
    """The tiny graph installed as WN18RR_v1 (the name a domain must have), with a fresh data root."""
    install_tiny_as("WN18RR_v1", tmp_path / "grail", monkeypatch)
    return str(tmp_path / "data")


def test_train_writes_ranking_metrics_and_the_shortcut(tiny_split, tmp_path):
    config = TrainConfig(domain="wn18rr_v1", data_root=tiny_split, **TINY)
    results = train(config, tmp_path / "run")
    task = TASKS[LINK_PREDICTION]
    history = json.loads((tmp_path / "run" / "training_history.json").read_text())
    assert [list(row) for row in history] == [list(task.epoch_metrics)] * 2
    for row in history:
        assert 0 < row["val_mrr"] <= 1 and 0 <= row["val_hits_at_10"] <= 1 and 0 < row["val_auc_pr"] <= 1
    assert set(results["test_metrics"]) == set(task.test_metrics)
    assert set(results["shortcut_metrics"]) == {"test_auc_pr", "test_hits_at_10", "test_mrr"}
    assert results["config"]["domain"] == "WN18RR_v1"  # canonical spelling
    on_disk = json.loads((tmp_path / "run" / "final_results.json").read_text())
    assert on_disk["test_metrics"] == pytest.approx(results["test_metrics"])
    for name in ("best_model.pt", "checkpoint_epoch_1.pt", "checkpoint_epoch_2.pt"):
        assert (tmp_path / "run" / name).is_file()
    best = torch.load(tmp_path / "run" / "best_model.pt", weights_only=True)
    assert best["best_metric"] == "val_mrr" and best["best_value"] == max(row["val_mrr"] for row in history)
    assert best["model_args"]["num_query_relations"] == 4
    assert best["model_args"]["num_root_features"] == 8  # per root: 4 relations out, 4 in
    assert "root_proximity" not in best["model_args"]  # off by default, and absent as in earlier checkpoints
    assert "root_pagerank" not in best["model_args"]


def test_scores_read_the_roots_relation_context(tiny_split):
    """The roots' relation counts reach the score; a checkpoint of the earlier head (no root context)
    still loads and scores the same data."""
    data = nsm_train.load_link_data("WN18RR_v1", tiny_split)
    batch = data.test_ranking.batch(range(16))
    torch.manual_seed(0)
    config = TrainConfig(domain="WN18RR_v1", hidden_dim=16, num_bases=4)
    model = NSM(**model_args(config, data.num_node_features, data.num_relations, link_prediction=True)).eval()
    with torch.no_grad():
        scores = link_scores(nsm_train.forward(model, batch).logits)
        batch.root_relations = torch.roll(batch.root_relations, 1, dims=0)
        moved = link_scores(nsm_train.forward(model, batch).logits)
        assert not torch.allclose(scores, moved)
        del batch.root_relations
        with pytest.raises(ValueError, match="root_relations"):
            model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch, num_graphs=batch.num_graphs,
                  head_index=batch.head_index, tail_index=batch.tail_index, relation=batch.relation)
    earlier = {k: v for k, v in model_args(config, data.num_node_features, data.num_relations, True).items()
               if k != "num_root_features"}
    checkpoint = {"config": config.to_dict(), "model_args": earlier, "model": NSM(**earlier).state_dict()}
    old_model, _ = load_model(checkpoint)
    assert old_model.num_root_features == 0
    with torch.no_grad():
        assert link_scores(nsm_train.forward(old_model, data.test_ranking.batch(range(16))).logits).shape == (16,)


def test_pathless_pairs_leave_training_together(tiny_split):
    """A fact with an empty enclosing subgraph leaves with its own corruption; every other pair stays."""
    data = nsm_train.load_link_data("WN18RR_v1", tiny_split)
    facts = data.protocol.train_graph.shape[0]
    has_path = data.train.num_edges[:facts] > 0
    assert 0 < int(has_path.sum()) < facts  # the tiny graph has both kinds, so the test can fail
    kept = data.training_pairs_with_paths()
    half = len(kept) // 2
    assert len(kept) == 2 * int(has_path.sum())
    assert kept.y[:half].eq(1).all() and kept.y[half:].eq(0).all()
    assert (kept.num_edges[:half] > 0).all()
    # A corruption keeps its fact's relation and one of its roots: the pairs are still aligned.
    targets = data.protocol.train_targets
    positives, corruptions = targets[:facts][has_path], targets[facts:][has_path]
    assert torch.equal(kept.graph_attrs["relation"][:half], positives[:, 1])
    assert torch.equal(kept.graph_attrs["relation"][half:], corruptions[:, 1])
    assert ((positives[:, 0] == corruptions[:, 0]) | (positives[:, 2] == corruptions[:, 2])).all()


@pytest.mark.parametrize("pathless_facts", [True, False])
def test_each_epoch_pairs_every_fact_with_its_next_corruption(tiny_split, pathless_facts):
    """``train_corruptions=3``: epoch e trains on every fact and its corruption of block (e - 1) mod 3, once
    each, at the cost of one block; the order is the epoch's. One corruption: every graph, as before."""
    cpu = torch.device("cpu")
    config = TrainConfig(domain="WN18RR_v1", data_root=tiny_split, batch_size=16, train_corruptions=3,
                         train_pathless_facts=pathless_facts)
    work = nsm_train._LinkWorkload(config, cpu)
    data = work.data
    train = data.train if pathless_facts else data.training_pairs_with_paths()
    facts = len(train) // 4
    assert work._train.num_graphs == 4 * facts and facts > 0
    for epoch, block in zip(range(1, 6), (1, 2, 3, 1, 2)):
        pairs = work.epoch_pairs(epoch)
        assert torch.equal(pairs, torch.cat([torch.arange(facts), torch.arange(block * facts, (block + 1) * facts)]))
        batches = list(work.train_batches(torch.Generator().manual_seed(epoch), epoch))
        assert sum(batch.num_graphs for batch in batches) == 2 * facts
        seen = torch.cat([batch.root_pagerank for batch in batches])
        wanted = train.graph_attrs["root_pagerank"][pairs]
        assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, wanted.tolist()))
        assert torch.cat([batch.y for batch in batches]).sum() == facts
        # a corruption keeps its fact's relation and one root: the pairs are aligned
        relation = train.graph_attrs["relation"]
        assert torch.equal(relation[:facts], relation[block * facts:(block + 1) * facts])
    single = nsm_train._LinkWorkload(TrainConfig(domain="WN18RR_v1", data_root=tiny_split), cpu)
    thinned = nsm_train._LinkWorkload(TrainConfig(domain="WN18RR_v1", data_root=tiny_split, train_graph_keep=0.5), cpu)
    assert thinned.data is not single.data and thinned.data.train.num_edges.sum() < single.data.train.num_edges.sum()
    assert all(torch.equal(single.epoch_pairs(epoch), torch.arange(len(single._train))) for epoch in (1, 2, 7))


def test_switch_keys_reach_the_model_and_the_training_set(tiny_split, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NSM_DATA_DIR": tiny_split}
    data = nsm_train.load_link_data("WN18RR_v1", tiny_split)  # the tiny copy's checksums live in this process
    done = subprocess.run(
        [sys.executable, "-m", "nsm.train", "--domain", "WN18RR_v1", "--epochs", "1", "--hidden-dim", "16",
         "--root-context", "false", "--train-pathless-facts", "False", "--root-proximity", "true",
         "--root-pagerank", "true", "--out", str(tmp_path / "cli")],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "root_context False, train_pathless_facts False" in done.stdout
    best = torch.load(tmp_path / "cli" / "best_model.pt", weights_only=True)
    assert best["model_args"]["num_root_features"] == 0
    assert not any(name.startswith("root_encoder") for name in best["model"])
    assert best["model_args"]["root_proximity"] is True
    assert best["model_args"]["root_pagerank"] is True
    # readout, roots, relation, 3 x 3 walks, PageRank either way
    assert load_model(best)[0].classifier[0].in_features == 5 * 16 + 9 + 2
    config = TrainConfig.from_dict({**best["config"], "data_root": tiny_split})
    assert len(nsm_train._LinkWorkload(config, torch.device("cpu"))._train) == len(data.training_pairs_with_paths())
    assert len(nsm_train._LinkWorkload(TrainConfig(domain="WN18RR_v1", data_root=tiny_split), torch.device("cpu"))._train) \
        == len(data.train)
    bad = subprocess.run([sys.executable, "-m", "nsm.train", "--domain", "WN18RR_v1", "--root-context", "maybe"],
                         env=env, capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "argument --root-context: invalid boolean value: 'maybe'" in bad.stderr


@pytest.mark.parametrize("train_corruptions", [1, 2])
def test_resume_replays_the_uninterrupted_run(tiny_split, tmp_path, train_corruptions):
    config = TrainConfig(domain="WN18RR_v1", data_root=tiny_split, train_corruptions=train_corruptions,
                         **{**TINY, "epochs": 3})
    whole = train(config, tmp_path / "whole")
    first = train(TrainConfig(**{**config.to_dict(), "epochs": 3}), tmp_path / "part", on_epoch=lambda end: end.metrics["epoch"] >= 1)
    assert first["status"] == "stopped"
    resumed = train(config, tmp_path / "part", resume=tmp_path / "part" / "checkpoint_epoch_1.pt")
    drop = ("epoch_time_s", "graphs_per_s")
    strip = lambda rows: [{k: v for k, v in row.items() if k not in drop} for row in rows]  # noqa: E731
    whole_history = json.loads((tmp_path / "whole" / "training_history.json").read_text())
    resumed_history = json.loads((tmp_path / "part" / "training_history.json").read_text())
    assert strip(resumed_history) == strip(whole_history)
    assert resumed["test_metrics"] == whole["test_metrics"] and resumed["best_epoch"] == whole["best_epoch"]


def test_cli_default_config_runs_a_split(tiny_split, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NSM_DATA_DIR": tiny_split}
    # The checksums of the tiny copy live in this process only: build the cache here, the CLI reads it.
    nsm_train.load_link_data("WN18RR_v1", tiny_split)
    done = subprocess.run(
        [sys.executable, "-m", "nsm.train", "--domain", "wn18rr_v1", "--epochs", "1", "--hidden-dim", "16",
         "--out", str(tmp_path / "cli")],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "best val_mrr" in done.stdout and "test_hits_at_10" in done.stdout and "PPR shortcut" in done.stdout
    assert (tmp_path / "cli" / "final_results.json").is_file()


@pytest.mark.parametrize("argv", [["--domain", "WN18RR_v9"], ["--domain", "grail"], ["--domain", "nell"]])
def test_unknown_split_is_a_one_line_error(argv, capsys):
    assert main([*argv, "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "WN18RR_v1" in err


def test_missing_split_file_is_a_one_line_error(tiny_split, capsys):
    (Path(os.environ[grail.ENV_DIR]) / "WN18RR_v1_ind" / "test.txt").unlink()
    assert main(["--domain", "WN18RR_v1", "--epochs", "1", "--data-root", tiny_split]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "WN18RR_v1_ind/test.txt" in err


def test_renaming_every_entity_leaves_each_score_unchanged(tmp_path, monkeypatch):
    """Same files with new entity names and shuffled lines: every triple scores the same (the model sees
    no entity identity). pool_ratio 1 keeps every node, so no top-k tie between structurally different
    nodes can be broken differently by the new node order; the default ratio is checked for agreement
    of all but a few ties."""
    names = {e: f"x{(i * 37) % 101}_{e[::-1]}" for i, e in
             enumerate(sorted({e for ts in tiny_triples().values() for h, _, t in ts for e in (h, t)}))}
    protocols = {}
    for tag, rename, shuffle in (("a", None, None), ("b", names, 1)):
        with monkeypatch.context() as mp:
            install_tiny_as("WN18RR_v1", tmp_path / tag, mp, rename=rename, shuffle_seed=shuffle)
            protocols[tag] = grail.grail_protocol("WN18RR_v1", tmp_path / f"root-{tag}", num_candidates=8, val_queries=6)
    a, b = protocols["a"], protocols["b"]
    assert a.test_entities != b.test_entities
    index_b = {name: i for i, name in enumerate(b.test_entities)}
    to_b = torch.tensor([index_b[names[name]] for name in a.test_entities])
    targets_a = torch.cat([a.test_auc, a.test_ranking.reshape(-1, 3)])
    targets_b = targets_a.clone()
    targets_b[:, 0], targets_b[:, 2] = to_b[targets_a[:, 0]], to_b[targets_a[:, 2]]
    labels = torch.zeros(len(targets_a), dtype=torch.long)
    packed_a, _ = grail._pack(a.test_graph, len(a.test_entities), targets_a, labels, a.num_relations, 3, 200)
    packed_b, _ = grail._pack(b.test_graph, len(b.test_entities), targets_b, labels, b.num_relations, 3, 200)
    for pool_ratio in (1.0, 0.5):
        torch.manual_seed(0)
        config = TrainConfig(domain="WN18RR_v1", hidden_dim=16, num_bases=4, pool_ratio=pool_ratio, root_proximity=True,
                             root_pagerank=True)
        model = NSM(**model_args(config, 8, a.num_relations, link_prediction=True)).eval()
        with torch.no_grad():
            scores = [link_scores(nsm_train.forward(model, p.batch(range(len(p)))).logits) for p in (packed_a, packed_b)]
        same = torch.isclose(scores[0], scores[1], rtol=1e-4, atol=1e-5)
        if pool_ratio == 1.0:
            assert bool(same.all())
        else:
            assert float(same.double().mean()) > 0.9


def _shared_copy() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data" / "grail"
        if (candidate / "WN18RR_v1" / "train.txt").is_file():
            return candidate
    return None


def test_real_wn18rr_v1_end_to_end(tmp_path, monkeypatch):
    """One epoch on the real split, scored by GraIL's protocol beside the PPR shortcut."""
    copy = os.environ.get(grail.ENV_DIR) or _shared_copy()
    if copy:
        monkeypatch.setenv(grail.ENV_DIR, str(copy))
    else:
        monkeypatch.delenv(grail.ENV_DIR, raising=False)
    monkeypatch.setattr(nsm_train, "_LINK_DATA", {})
    try:
        results = train(TrainConfig(domain="WN18RR_v1", epochs=1, save_every=0, data_root=str(tmp_path / "data")),
                        tmp_path / "run")
    except ConfigError as exc:
        if copy or "could not download" not in str(exc):
            raise
        pytest.skip(f"no local copy of GraIL's data (../shared/data/grail or $NSM_GRAIL_DIR) and no network: {exc}")
    tested, shortcut = results["test_metrics"], results["shortcut_metrics"]
    assert 0 < tested["test_mrr"] <= 1 and 0 <= tested["test_hits_at_10"] <= 1 and 0 < tested["test_auc_pr"] <= 1
    assert shortcut["test_hits_at_10"] == pytest.approx(0.8936, abs=5e-4)  # measured earlier, same candidates
    assert results["best_metrics"]["val_mrr"] > 0.3  # one epoch already ranks far above chance (about 0.09)
