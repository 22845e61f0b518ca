"""The CLI itself: one-line errors with exit 2 and nothing created, GPU preflight, SIGKILL then --resume."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from analysis.audit import audit_experiment
from search.run import main
from search.study import load_study
from search.trainable import HOLD_ENV

from .conftest import REPO, cli, cli_env, kill_group, snapshot_statuses, wait_for_finished_trials, wait_until


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--domain", "chess"], "unknown domain 'chess'"),
        (["--domain", "planning", "--num-samples", "0"], "--num-samples must be >= 1"),
        (["--domain", "planning", "--max-epochs", "0"], "--max-epochs must be >= 1"),
        (["--domain", "planning", "--gpus-per-trial", "-0.5"], "--gpus-per-trial must be >= 0"),
        (["--domain", "planning", "--gpus-per-trial", "1.5"], "--gpus-per-trial must be at most 1"),
        (["--domain", "planning", "--max-concurrent", "0"], "--max-concurrent must be >= 1"),
        (["--domain", "planning", "--epoch-budget", "0"], "--epoch-budget must be >= 1"),
        (["--domain", "planning", "--grace-period", "0"], "--grace-period must be >= 1"),
        (["--domain", "planning", "--reduction-factor", "1"], "--reduction-factor must be >= 2"),
        (["--domain", "planning", "--metric", "accuracy"], "--metric must be one of"),
        (["--domain", "planning", "--address", "127.0.0.1:9"], "cannot reach a Ray cluster at 127.0.0.1:9"),
        (["--domain", "planning", "--address", "ray://127.0.0.1:9"], "cannot reach a Ray cluster"),
        (["--domain", "planning", "--address", "nonsense"], "--address must be"),
        (["--resume", "never-ran"], "no experiment of that name"),
        (["--domain", "planning", "--warm-start", "missing.yaml"], "--warm-start: config file not found"),
        ([], "--domain is required"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, args, expected):
    storage = tmp_path / "results"
    assert main([*args, "--storage-path", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert expected in err
    assert not storage.exists()


def test_bad_space_file_names_file_and_key(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("default:\n  lr: {type: loguniform, low: 0.1, high: 0.01}\n")
    assert main(["--domain", "planning", "--space", str(space), "--storage-path", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {space}: default.lr: low must be < high, got low=0.1 high=0.01"


def test_existing_experiment_and_resume_of_a_non_search_are_refused(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("not a search")
    assert main(["--domain", "planning", "--name", "taken", "--storage-path", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["--resume", "taken", "--storage-path", str(tmp_path)]) == 2
    assert "is not a search" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


def test_gpu_request_on_a_cpu_only_machine_fails_fast(tmp_path):
    # "Fast" = before any trial: a driver waiting for a GPU forever would hit the timeout.
    completed = subprocess.run(
        cli("--domain", "planning", "--gpus-per-trial", "0.5", "--storage-path", str(tmp_path / "r")),
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    err = completed.stderr.strip().splitlines()[-1]
    assert err.startswith("error: --gpus-per-trial 0.5 requested but the cluster has no GPU")
    assert "CPUs" in err  # says what exists
    assert not (tmp_path / "r").exists()


def test_sigkill_mid_search_then_resume_elsewhere_finishes_every_trial_once(tmp_path, tiny_space):
    storage, name, samples = tmp_path / "results", "killed", 4
    args = ("--domain", "planning", "--space", str(tiny_space), "--num-samples", str(samples), "--max-epochs", "3",
            "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--max-concurrent", "2", "--wandb", "disabled",
            "--storage-path", str(storage), "--name", name)
    experiment_dir = storage / name
    # The first trial runs to its end; the others wait after epoch 1 (never released), so the search is
    # still running when the snapshot has caught up, however fast the trials are.
    hold = tmp_path / "hold"
    hold.mkdir()
    driver = subprocess.Popen(cli(*args), cwd=REPO, env={**cli_env(), HOLD_ENV: f"1:{hold}"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        finished_before_kill = wait_for_finished_trials(experiment_dir, driver)
        # Kill once Ray's experiment snapshot records those trials as finished (it snapshots every 2 s).
        wait_until(lambda: all(snapshot_statuses(experiment_dir).get(t) == "TERMINATED" for t in finished_before_kill),
                   driver, "the snapshot recorded the finished trials")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        kill_group(driver.pid)
        (hold / "release").touch()  # a held trial process outside the group ends too
    snapshot = {trial_id: _trial_files(experiment_dir, trial_id) for trial_id in finished_before_kill}
    # A trial started after the last snapshot (the kill can land there): no snapshot knows it. One is
    # added here so that the resume always meets one, whatever the race above did.
    unrecorded = experiment_dir / "trial_started_after_snapshot"
    unrecorded.mkdir()
    (unrecorded / "result.json").write_text(json.dumps({"epoch": 1, "trial_id": "started_after_snapshot"}) + "\n")
    # Resumed from somewhere else: Ray pickled the old paths (the searcher's journal among them).
    moved_storage = tmp_path / "moved"
    shutil.move(storage, moved_storage)
    storage, experiment_dir = moved_storage, moved_storage / name

    resumed = subprocess.run(cli("--resume", name, "--storage-path", str(storage)), cwd=REPO, env=cli_env(),
                             capture_output=True, text=True, timeout=400, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    leftovers = sorted(str(p) for p in (tmp_path / "results").rglob("*")) if (tmp_path / "results").exists() else []
    assert not (tmp_path / "results").exists(), leftovers  # nothing written where it used to be

    summary = json.loads((experiment_dir / "summary.json").read_text())
    assert summary["num_trials"] == samples
    assert all(row["status"] in ("completed", "pruned") for row in summary["trials"])
    # Trials that had finished before the kill did not run again.
    for trial_id, files in snapshot.items():
        assert _trial_files(experiment_dir, trial_id) == files
    # No epoch recorded twice: result.json, progress.csv, training_history.json, the study.
    audit = audit_experiment(experiment_dir)
    assert audit.ok and audit.trials == samples, audit.lines()
    # Trials no snapshot recorded were set aside, not deleted.
    set_aside = {p.name for p in (experiment_dir / "unrecorded").iterdir()}
    assert "trial_started_after_snapshot" in set_aside
    assert (experiment_dir / "unrecorded" / "trial_started_after_snapshot" / "result.json").is_file()
    assert "trial_started_after_snapshot" in resumed.stderr + resumed.stdout
    # The Optuna study continued: every Ray trial is finished in it.
    study = load_study(experiment_dir)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert {t.user_attrs["ray_trial_id"] for t in finished} == {row["trial_id"] for row in summary["trials"]}


def _trial_files(experiment_dir: Path, trial_id: str) -> dict[str, bytes]:
    trial_dir = experiment_dir / f"trial_{trial_id}"
    return {name: (trial_dir / name).read_bytes() for name in ("result.json", "trial.json") if (trial_dir / name).exists()}
