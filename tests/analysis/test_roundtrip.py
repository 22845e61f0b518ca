"""Export round trip: best_config.yaml trains with nsm.train and seeds a new search with --warm-start."""

from __future__ import annotations

import json
import math
import runpy
import sys

import pytest
import yaml
from ray.tune import ExperimentAnalysis

from tests.analysis.conftest import run_search


@pytest.mark.filterwarnings("ignore:'nsm.train' found in sys.modules:RuntimeWarning")
def test_best_config_trains_directly_with_nsm_train(exported, tmp_path, monkeypatch, capsys):
    # Exactly `python -m nsm.train --config best_config.yaml --out DIR`, run in this process (saves the imports).
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["nsm.train", "--config", str(exported / "best_config.yaml"), "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("nsm.train", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 0, capsys.readouterr().err[-2000:]
    results = json.loads((out / "final_results.json").read_text())
    exported_config = yaml.safe_load((exported / "best_config.yaml").read_text())
    assert {**results["config"], "device": "auto"} == exported_config
    assert results["epochs_run"] == exported_config["epochs"]


def test_best_config_warm_starts_a_new_search(exported, small_space, tmp_path):
    experiment = run_search(tmp_path, "warm", small_space, "--warm-start", str(exported / "best_config.yaml"),
                            num_samples=2, max_epochs=1)
    exported_config = yaml.safe_load((exported / "best_config.yaml").read_text())
    configs = ExperimentAnalysis(str(experiment)).get_all_configs().values()

    def same(config):
        return all(math.isclose(float(config[key]), float(exported_config[key]), rel_tol=1e-9)
                   for key in ("lr", "cycle_weight", "batch_size"))

    assert any(same(config) for config in configs), list(configs)
