"""Real searches in one shared Ray session: every domain end to end, ASHA -> PRUNED, W&B, GPU packing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from optuna.trial import TrialState
from ray import tune

from analysis import wandb_workspace as wandb_workspace_cli
from search.wandb_offline import read_wandb_records
from search.wandb_workspace import SPEC_FILE, referenced_names
from search.run import main
from search.study import load_study
from search.trainable import HOLD_ENV, TRIAL_INFO_FILE, train_nsm

from .conftest import start_test_ray, wait_until

BASELINE = {"lr": 1e-4, "cycle_weight": 0.01, "batch_size": 64}


def search(tmp_path, tiny_space, *args: str) -> int:
    return main(["--space", str(tiny_space), "--storage-path", str(tmp_path), "--cpus-per-trial", "1",
                 "--gpus-per-trial", "0", "--seed", "0", *args])


def result_grid(experiment_dir: Path) -> tune.ResultGrid:
    return tune.Tuner.restore(str(experiment_dir), trainable=train_nsm).get_results()


def test_every_domain_end_to_end(tmp_path, tiny_space, ray_session, capsys):
    code = search(tmp_path, tiny_space, "--domain", "all", "--name", "e2e", "--num-samples", "3",
                  "--max-epochs", "2", "--wandb", "disabled")
    assert code == 0
    out = capsys.readouterr().out
    assert "cross-domain summary" in out
    for domain in ("planning", "causal", "kg"):
        experiment_dir = tmp_path / f"e2e-{domain}"
        summary = json.loads((experiment_dir / "summary.json").read_text())
        assert summary["domain"] == domain and summary["num_trials"] == 3

        # summary.json agrees with Ray's ResultGrid, trial by trial.
        grid = result_grid(experiment_dir)
        assert len(grid) == 3 and grid.num_errors == 0
        best_per_trial = {r.metrics["trial_id"]: r.metrics_dataframe["val_acc"].max() for r in grid}
        rows = {row["trial_id"]: row for row in summary["trials"]}
        assert set(rows) == set(best_per_trial)
        for trial_id, best in best_per_trial.items():
            assert rows[trial_id]["val_acc"] == pytest.approx(best)
            assert rows[trial_id]["epochs"] >= 1
        ranked = [row["val_acc"] for row in summary["trials"]]
        assert ranked == sorted(ranked, reverse=True)
        best = grid.get_best_result("val_acc", "max", scope="all")
        assert summary["best"]["val_acc"] == pytest.approx(best.metrics_dataframe["val_acc"].max())

        # The research default ran first and is reported.
        assert {k: summary["baseline"][k] for k in BASELINE} == BASELINE
        first = load_study(experiment_dir).trials[0]
        assert first.params == BASELINE and first.user_attrs["ray_trial_id"] == summary["baseline"]["trial_id"]
        assert Path(summary["best_checkpoint"]).is_file()
        # Ray's JSON and CSV result files, which ResultGrid reads; no TensorBoard files (see search.tuner).
        for row in summary["trials"]:
            written = {path.name for path in Path(row["trial_dir"]).iterdir()}
            assert {"result.json", "progress.csv"} <= written
            assert not any(name.startswith("events.out.tfevents") for name in written)
        assert Path(summary["best_checkpoint"]).name == "checkpoint.pt"
        # The ranked table printed the same best trial.
        assert f"(trial {summary['best']['trial_id']})" in out
        # Each finished trial's nsm run files are in its trial directory.
        for row in summary["trials"]:
            if row["status"] == "completed":
                assert (Path(row["trial_dir"]) / "final_results.json").is_file()


def test_asha_stopped_trials_are_pruned_and_wandb_offline_holds_each_trial(tmp_path, tiny_space, ray_session, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    # val_loss is continuous, so ASHA's cut-offs separate trials even on tiny data.
    code = search(tmp_path, tiny_space, "--domain", "planning", "--name", "asha", "--num-samples", "6",
                  "--max-epochs", "3", "--metric", "val_loss", "--wandb", "offline", "--wandb-project", "nsm-test")
    assert code == 0
    experiment_dir = tmp_path / "asha"
    summary = json.loads((experiment_dir / "summary.json").read_text())
    study = load_study(experiment_dir)
    assert study.study_name == "asha"
    by_ray_id = {t.user_attrs.get("ray_trial_id"): t for t in study.trials}
    outcomes = {row["trial_id"]: row for row in summary["trials"]}
    assert set(outcomes) <= set(by_ray_id)
    for trial_id, row in outcomes.items():
        trial = by_ray_id[trial_id]
        if row["epochs"] < 3:
            assert row["status"] == "pruned"
            assert trial.state == TrialState.PRUNED
            assert sorted(trial.intermediate_values) == list(range(1, row["epochs"] + 1))
        else:
            assert row["status"] == "completed"
            assert trial.state == TrialState.COMPLETE
            assert trial.value == pytest.approx(row["val_loss"])
    states = {t.state for t in study.trials}
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states

    # W&B offline: one run per trial under the experiment's wandb dir with its config and metrics.
    runs = {path.name.rsplit("-", 1)[-1]: path for path in (experiment_dir / "wandb").glob("offline-run-*")}
    assert set(outcomes) <= set(runs)
    baselines = []
    seen = {"config": set(), "summary": set(), "history": set()}  # every run field, for the workspace below
    for trial_id, row in outcomes.items():
        records = read_wandb_records(next(runs[trial_id].glob("run-*.wandb")))
        config, run_summary, tags, names = {}, {}, set(), set()
        for record in records:
            if record.WhichOneof("record_type") == "run":
                config.update({item_key(item): json.loads(item.value_json) for item in record.run.config.update})
                assert record.run.run_group == "asha" and record.run.project == "nsm-test"
                tags |= set(record.run.tags)
                names.add(record.run.display_name)
            elif record.WhichOneof("record_type") == "config":
                config.update({item_key(item): json.loads(item.value_json) for item in record.config.update})
            elif record.WhichOneof("record_type") == "summary":
                run_summary.update({item_key(item): json.loads(item.value_json) for item in record.summary.update})
        assert config["lr"] == pytest.approx(row["lr"]) and config["batch_size"] == row["batch_size"]
        logged = [json.loads(item.value_json) for record in records if record.WhichOneof("record_type") == "history"
                  for item in record.history.item if item_key(item) == "val_loss"]
        assert len(logged) == row["epochs"]
        assert min(logged) == pytest.approx(row["val_loss"])
        # The summary holds the best of the history in the metric's direction (min for a loss), not the last epoch.
        assert run_summary["val_loss"]["min"] == pytest.approx(min(logged))
        assert run_summary["best_val_loss"] == pytest.approx(min(logged))
        assert run_summary["best_epoch"] == logged.index(min(logged)) + 1
        assert run_summary["final_status"] == row["status"] and row["status"] in tags
        assert run_summary["domain"] == "planning" and run_summary["searched_keys"] == ["lr", "cycle_weight", "batch_size"]
        assert {"planning", "tpe"} <= tags
        assert f"planning-{trial_id} lr=" in " ".join(names)
        if run_summary["is_baseline"]:
            baselines.append(trial_id)
            assert "baseline" in tags
        seen["config"] |= set(config)
        seen["summary"] |= set(run_summary)
        seen["history"] |= {item_key(item) for record in records if record.WhichOneof("record_type") == "history"
                            for item in record.history.item}
    assert baselines == [summary["baseline"]["trial_id"]]

    # The W&B workspace's specification, saved by the search: its panels name only fields the runs have.
    spec = json.loads((experiment_dir / SPEC_FILE).read_text())
    assert spec["group"] == "asha" and spec["runset"]["filter"] == "Metric('Group') == 'asha'"
    assert spec["runset"]["order"] == [{"summary": "best_val_loss", "ascending": True}]  # a loss: lowest first
    assert [panel["type"] for panel in spec["sections"][0]["panels"]] == [
        "parallel_coordinates", "line", "scatter", "parameter_importance"]
    for section, names in referenced_names(spec).items():
        assert names and names <= seen[section], (section, names - seen[section])
    assert referenced_names(spec)["config"] == {"lr", "cycle_weight", "batch_size"}
    assert wandb_workspace_cli.main([str(experiment_dir), "--wandb", "offline"]) == 0
    assert json.loads((experiment_dir / SPEC_FILE).read_text()) == spec
    # One summary run in the experiment's group (the one analysis/best.py --wandb logs): the trials table
    # and the best trial of summary.json.
    (summary_run,) = (experiment_dir / "analysis" / "wandb").glob("offline-run-*")
    (table_file,) = summary_run.glob("files/media/table/trials_*.table.json")
    table = json.loads(table_file.read_text())
    assert {row[table["columns"].index("trial_id")] for row in table["data"]} == set(outcomes)
    summary_values, groups = {}, set()
    for record in read_wandb_records(next(summary_run.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "run":
            groups.add((record.run.run_group, record.run.job_type, record.run.project))
        elif record.WhichOneof("record_type") == "summary":
            summary_values.update({item_key(item): json.loads(item.value_json) for item in record.summary.update})
    assert groups == {("asha", "analysis", "nsm-test")}
    assert summary_values["best_trial"] == summary["best"]["trial_id"]
    assert summary_values["best_val_loss"] == pytest.approx(summary["best"]["val_loss"])
    assert summary_values["num_trials"] == len(outcomes)
    # No credentials end up in the results.
    assert "WANDB_API_KEY" not in (experiment_dir / "search.json").read_text()


def test_fractional_gpus_pack_four_trials_on_one_logical_gpu(tmp_path, tiny_space, ray_session, monkeypatch):
    """Four trials of a quarter GPU each run at once on one logical GPU. Shown by an event, not by timing:
    every trial holds at its first epoch until all four are held together, then all are released."""
    import ray

    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "passed").touch()  # no trial is let through first: each one holds
    ray.shutdown()
    monkeypatch.setenv(HOLD_ENV, f"1:{hold}")  # trial workers inherit it from the Ray session started here
    start_test_ray()
    held_together: list[int] = []

    def release_when_four_are_held() -> None:
        try:
            wait_until(lambda: len(list(hold.glob("held-*"))) >= 4 or None, None, "four trials held at once", timeout=300)
        finally:  # a failure must not leave the trials held for ever
            held_together.append(len(list(hold.glob("held-*"))))
            (hold / "release").touch()

    watcher = threading.Thread(target=release_when_four_are_held, daemon=True)
    watcher.start()
    try:
        code = main(["--space", str(tiny_space), "--storage-path", str(tmp_path), "--domain", "planning",
                     "--name", "packed", "--num-samples", "4", "--max-epochs", "2", "--scheduler", "none",
                     "--cpus-per-trial", "1", "--gpus-per-trial", "0.25", "--wandb", "disabled"])
        watcher.join(timeout=60)
    finally:
        (hold / "release").touch()
        ray.shutdown()
        monkeypatch.delenv(HOLD_ENV)
        start_test_ray()
    assert code == 0
    assert held_together == [4]  # all four trials alive at the same moment, a quarter GPU each
    infos = [json.loads(path.read_text()) for path in (tmp_path / "packed").glob(f"trial_*/{TRIAL_INFO_FILE}")]
    assert len(infos) == 4
    # Ray assigned each a quarter of the logical GPU; without CUDA they trained on CPU.
    assert all(info["gpus"] == 0.25 and info["device"] == "cpu" for info in infos)


def test_more_cpus_per_trial_than_a_node_has(tmp_path, tiny_space, ray_session, capsys):
    # (More GPUs than a node has cannot be asked for any more: --gpus-per-trial stops at 1.)
    code = main(["--space", str(tiny_space), "--storage-path", str(tmp_path), "--domain", "planning",
                 "--cpus-per-trial", "8", "--gpus-per-trial", "0", "--num-samples", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --cpus-per-trial 8 is more than any node has") and "\n" not in err
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)
