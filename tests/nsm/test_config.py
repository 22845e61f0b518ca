"""nsm.config without torch, and checkpoints that rebuild their model from the stored model_args."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from nsm import ConfigError
from nsm.checkpoint import load_checkpoint, load_model
from nsm.config import (
    BASELINE,
    MAX_TRAIN_CORRUPTIONS,
    TrainConfig,
    baseline_values,
    holds_values,
    load_config_file,
    save_config_file,
)
from nsm.train import train

SMALL = dict(num_graphs=120, hidden_dim=16, num_bases=4, epochs=1, batch_size=32, lr=3e-3)


def test_config_and_domain_names_import_without_torch():
    code = ("import sys, nsm.config, nsm.domains, nsm.metrics; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torch_geometric')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_save_config_file_round_trips_as_yaml_and_json(tmp_path):
    config = TrainConfig(domain="kg", dropout=0.3, data_root=None)
    for name in ("config.yaml", "config.json"):
        path = save_config_file(config, tmp_path / name)
        assert load_config_file(path) == config
    assert list(yaml.safe_load((tmp_path / "config.yaml").read_text())) == list(config.to_dict())  # field order
    assert json.loads((tmp_path / "config.json").read_text()) == config.to_dict()
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_holds_values_finds_the_baseline_in_a_config_read_back_from_json():
    baseline = baseline_values(["lr", "cycle_weight", "batch_size"])
    read_back = json.loads(json.dumps({**baseline, "lr": baseline["lr"] * (1 + 1e-12), "seed": 3}))
    assert holds_values(read_back, baseline)
    assert not holds_values({**read_back, "lr": baseline["lr"] * 1.01}, baseline)
    assert not holds_values({k: v for k, v in read_back.items() if k != "batch_size"}, baseline)
    assert not holds_values({**read_back, "batch_size": "64"}, baseline)


def test_switch_keys_take_booleans_only():
    assert TrainConfig.from_dict({"root_context": False, "train_pathless_facts": True}).root_context is False
    assert TrainConfig.from_dict({"root_proximity": True}).root_proximity is True
    assert TrainConfig.from_dict({"root_pagerank": True}).root_pagerank is True
    for value in (0, 1, "false", None):
        for key in ("root_context", "train_pathless_facts", "root_proximity", "root_pagerank"):
            with pytest.raises(ConfigError, match=f"{key} must be bool"):
                TrainConfig.from_dict({key: value})


def test_train_corruptions_is_a_small_positive_integer():
    assert TrainConfig().train_corruptions == 1  # one corruption per fact: the earlier runs' training set
    assert TrainConfig.from_dict({"train_corruptions": 4}).train_corruptions == 4
    for value, message in ((0, "must be in"), (MAX_TRAIN_CORRUPTIONS + 1, "must be in"), (True, "must be int"), (2.5, "must be int")):
        with pytest.raises(ConfigError, match=f"train_corruptions {message}"):
            TrainConfig.from_dict({"train_corruptions": value})


def test_train_graph_keep_is_a_fraction():
    assert TrainConfig().train_graph_keep == 1.0  # the whole training graph: the earlier runs' training set
    assert TrainConfig.from_dict({"train_graph_keep": 0.7}).train_graph_keep == 0.7
    for value, message in ((0, "must be in"), (1.5, "must be in"), (-0.1, "must be in"), (True, "must be float")):
        with pytest.raises(ConfigError, match=f"train_graph_keep {message}"):
            TrainConfig.from_dict({"train_graph_keep": value})


def test_baseline_values_use_the_research_defaults_and_the_config_defaults():
    assert baseline_values(["lr", "dropout"]) == {"lr": BASELINE["lr"], "dropout": TrainConfig().dropout}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(**SMALL, dropout=0.2), out)
    return load_checkpoint(out / "best_model.pt")


def test_checkpoint_stores_the_model_arguments(checkpoint):
    from nsm.data import planning

    assert checkpoint["model_args"] == {"num_node_features": len(planning.NODE_FEATURES),
                                        "num_relations": len(planning.RELATIONS), "hidden_dim": 16, "num_bases": 4,
                                        "pool_ratio": 0.5, "dropout": 0.2}


def test_load_model_rebuilds_from_model_args_not_from_the_config(checkpoint):
    # A config that disagrees with the weights: model_args alone decide the architecture.
    altered = {**checkpoint, "config": {**checkpoint["config"], "hidden_dim": 32}}
    model, config = load_model(altered)
    assert config.hidden_dim == 32 and model.embed.out_features == 16
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint["model"][name])


def test_checkpoint_written_before_model_args_still_loads(checkpoint, tmp_path):
    legacy = {key: value for key, value in checkpoint.items() if key != "model_args"}
    torch.save(legacy, tmp_path / "legacy.pt")
    model, _ = load_model(tmp_path / "legacy.pt")
    assert all(torch.equal(tensor, checkpoint["model"][name]) for name, tensor in model.state_dict().items())
    foreign = {**legacy, "model": {"weight": torch.zeros(2)}}
    with pytest.raises(ConfigError, match="no model_args"):
        load_model(foreign)
