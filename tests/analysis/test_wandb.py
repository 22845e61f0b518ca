"""--wandb: an offline summary run in the experiment's group with the trials table and the best-config artifact."""

from __future__ import annotations

import json

import pytest

from analysis import best, evaluate


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # W&B stages artifact files under its data/cache dirs: keep them out of the home directory.
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    return tmp_path


def _runs(experiment_dir):
    return sorted((experiment_dir / "analysis" / "wandb").glob("offline-run-*"))


def test_best_logs_an_offline_summary_run(experiment_copy, wandb_env, capsys):
    assert best.main([str(experiment_copy), "--wandb", "offline"]) == 0
    assert "W&B summary run:" in capsys.readouterr().out
    (run,) = _runs(experiment_copy)
    tables = list(run.glob("files/media/table/trials_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    trial_ids = {row[table["columns"].index("trial_id")] for row in table["data"]}
    assert len(trial_ids) == 3
    assert json.loads((experiment_copy / "best" / "final_results.json").read_text())["source"]["trial_id"] in trial_ids
    (log,) = run.glob("run-*.wandb")
    data = log.read_bytes()
    assert b"exp-best-config" in data  # the artifact
    assert b"best_config.yaml" in data
    assert b"analysis" in data and b"exp" in data  # job type and group
    assert b"exp-evaluation" not in data  # the run is named after best.py's export


def test_evaluate_logs_the_figures(experiment_copy, wandb_env, capsys):
    assert evaluate.main([str(experiment_copy), "--wandb", "offline"]) == 0
    capsys.readouterr()
    (run,) = _runs(experiment_copy)
    images = {path.name.split("_")[0] for path in run.glob("files/media/images/**/*.png")}
    assert images, list(run.rglob("*"))
    (log,) = run.glob("run-*.wandb")
    assert b"exp-evaluation" in log.read_bytes()  # told apart from best.py's run in the group


def test_no_api_key_is_written(experiment_copy, wandb_env, capsys):
    assert best.main([str(experiment_copy), "--wandb", "offline"]) == 0
    capsys.readouterr()
    for path in [*experiment_copy.rglob("*"), *wandb_env.rglob("*")]:
        if path.is_file():
            text = path.read_bytes()
            assert b"WANDB_API_KEY" not in text, path
            assert b".netrc" not in text or path.suffix == ".log", path
    assert not (wandb_env / "wandb_config_dir" / "settings").exists() or b"api_key" not in (
        wandb_env / "wandb_config_dir" / "settings").read_bytes()
