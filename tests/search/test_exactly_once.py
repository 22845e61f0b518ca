"""Exactly once: every epoch of every trial recorded once across interruptions; one driver per experiment.

The interruption tests wait on events (a result line appearing, a study state, a snapshot), never on
sleeps, and stop the driver at the moment most likely to catch a double record: right after Ray logged
a result, while the checkpoint that came with it may still be in flight.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from analysis.audit import audit_experiment
from search.wandb_offline import offline_runs, run_steps
from search import driver_lock, stopping
from search.run import main
from search.study import load_study
from search.trainable import HOLD_ENV, TRIAL_INFO_FILE

from .conftest import cli, cli_env, finished_trials, kill_group, recorded_epochs, wait_until

SAMPLES, EPOCHS = 4, 3


def _search_args(storage: Path, name: str, space: Path, *extra: str) -> list[str]:
    return ["--domain", "planning", "--space", str(space), "--num-samples", str(SAMPLES), "--max-epochs", str(EPOCHS),
            "--scheduler", "none", "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--max-concurrent", "2",
            "--storage-path", str(storage), "--name", name, *extra]


# ------------------------------------------------------------------------------------------------
# The result loggers and the graceful stop, on their own


def test_a_rerun_epoch_replaces_its_record_in_result_json_and_progress_csv(ray_session, tmp_path):
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial
    from ray.tune.registry import register_trainable

    from search.result_loggers import EpochCSVLoggerCallback, EpochJsonLoggerCallback

    register_trainable("exactly_once_stand_in", lambda config: None)
    trial = Trial("exactly_once_stand_in", config={"lr": 0.1}, trial_id="t0",
                  storage=StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="trial_t0"))
    trial.init_local_path()

    def log(callbacks, results):
        for callback in callbacks:
            callback.on_trial_start(iteration=0, trials=[trial], trial=trial)
            for epoch, value in results:
                callback.on_trial_result(iteration=0, trials=[trial], trial=trial,
                                         result={"epoch": epoch, "val_acc": value, "trial_id": "t0"})
            callback.on_trial_complete(iteration=0, trials=[trial], trial=trial)

    # One driver: a trial retried from its epoch-1 checkpoint runs epochs 2 and 3 again.
    log([EpochJsonLoggerCallback(), EpochCSVLoggerCallback()], [(1, 0.1), (2, 0.21), (3, 0.31), (2, 0.2), (3, 0.3), (4, 0.41)])
    # A second driver (resume) re-runs epoch 4.
    log([EpochJsonLoggerCallback(), EpochCSVLoggerCallback()], [(4, 0.4), (5, 0.5)])

    lines = [json.loads(line) for line in Path(trial.local_path, "result.json").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    assert [line["val_acc"] for line in lines] == [0.1, 0.2, 0.3, 0.4, 0.5]  # each re-run replaced the first value
    rows = Path(trial.local_path, "progress.csv").read_text().splitlines()
    assert rows[0].split(",") == ["epoch", "val_acc", "trial_id"]
    assert [row.split(",")[:2] for row in rows[1:]] == [["1", "0.1"], ["2", "0.2"], ["3", "0.3"], ["4", "0.4"], ["5", "0.5"]]


class _Trial:
    """What GracefulStop reads of a Ray trial: whether a checkpoint save is in flight."""

    def __init__(self, is_saving: bool) -> None:
        self.is_saving = is_saving


def test_a_stop_waits_until_no_checkpoint_is_in_flight():
    forwarded = []
    stop = stopping.GracefulStop("exp")
    stop._tune_handler = lambda signum, frame: forwarded.append(signum)  # Tune's SIGINT handler
    stop._started_at = time.monotonic()
    saving, idle = _Trial(is_saving=True), _Trial(is_saving=False)

    stop._on_sigint(signal.SIGINT, None)
    stop.on_step_end(1, [saving, idle])
    assert forwarded == []  # a trial's checkpoint is in flight: its logged epoch would run again
    saving.is_saving = False
    stop.on_step_end(2, [saving, idle])
    assert forwarded == [signal.SIGINT]
    assert stopping.stop_reason("exp") == stopping.INTERRUPTED


def test_a_spent_time_budget_stops_the_search_and_a_new_one_replaces_it():
    forwarded = []
    stop = stopping.GracefulStop("budgeted", time_budget_s=0.0)
    stop.setup()
    stop._tune_handler = lambda signum, frame: forwarded.append(signum)
    stop.on_step_end(1, [_Trial(is_saving=False)])
    assert forwarded and stopping.stop_reason("budgeted") == stopping.BUDGET_SPENT

    restored = stopping.GracefulStop("budgeted", time_budget_s=0.0)
    restored.set_state(stop.get_state())
    stopping.set_time_budget("budgeted", 3600.0)
    restored.setup()
    assert restored.time_budget_s == 3600.0 and restored.seconds_run() < 3600.0
    assert stopping.stop_reason("budgeted") is None


# ------------------------------------------------------------------------------------------------
# SIGTERM and resume, end to end


@pytest.mark.parametrize("stop_at_epoch", [1, 2])
def test_sigterm_then_resume_records_every_epoch_once_and_reruns_nothing(tmp_path, tiny_space, stop_at_epoch):
    """SIGTERM the driver right after Ray logged a running trial's epoch, then --resume.

    Nothing may be recorded twice (result.json, progress.csv, training_history.json, the Optuna study,
    the trials' W&B runs), and no epoch may run again: each interrupted trial resumes from the last
    epoch it had logged.
    """
    storage, name = tmp_path / "results", f"sigterm-{stop_at_epoch}"
    experiment_dir = storage / name
    # The first trial to log stop_at_epoch runs to its end; later ones wait there until released, so a
    # running trial with that epoch logged is there to interrupt, however fast the trials are.
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**cli_env(), HOLD_ENV: f"{stop_at_epoch}:{hold}"}
    driver = subprocess.Popen(cli(*_search_args(storage, name, tiny_space, "--wandb", "offline")), cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: finished_trials(experiment_dir), driver, "a trial finished")
        held = wait_until(lambda: [path.read_text() for path in hold.glob("held-*")], driver, "a trial held")

        def the_held_trial_logged() -> bool:  # its working directory is named after its trial id
            return any(epochs[-1:] == [stop_at_epoch] and any(directory.endswith(trial_id) for directory in held)
                       for trial_id, epochs in recorded_epochs(experiment_dir).items())

        wait_until(the_held_trial_logged, driver, f"a running trial logged epoch {stop_at_epoch}")
        driver.send_signal(signal.SIGTERM)
        (hold / "release").touch()
        assert driver.wait(timeout=120) == 130
    finally:
        (hold / "release").touch()
        kill_group(driver.pid)
    logged_at_stop = recorded_epochs(experiment_dir)
    finished_at_stop = finished_trials(experiment_dir)
    assert len(finished_at_stop) < SAMPLES

    resumed = subprocess.run(cli("--resume", name, "--storage-path", str(storage)), cwd=tmp_path, env=cli_env(),
                             capture_output=True, text=True, timeout=400, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    audit = audit_experiment(experiment_dir)
    assert audit.ok and audit.trials == SAMPLES, audit.lines()
    study = load_study(experiment_dir)
    by_ray_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    for trial_id, epochs in recorded_epochs(experiment_dir).items():
        assert epochs == list(range(1, EPOCHS + 1)), (trial_id, epochs)
        assert sorted(by_ray_id[trial_id].intermediate_values) == epochs
        assert by_ray_id[trial_id].state == TrialState.COMPLETE
        info = json.loads((experiment_dir / f"trial_{trial_id}" / TRIAL_INFO_FILE).read_text())
        if trial_id in finished_at_stop:
            continue
        # Interrupted mid-run: it continued after the last epoch it had logged, re-running none.
        assert info["resumed_from_epoch"] == max(logged_at_stop.get(trial_id) or [0]), (trial_id, info)
    # Each trial is one W&B run, continued across the two drivers with steps that only increase.
    for trial_id in recorded_epochs(experiment_dir):
        steps = []
        run_ids = set()
        for path in offline_runs(experiment_dir / "wandb", trial_id):
            ids, file_steps = run_steps(path)
            run_ids |= ids
            steps += file_steps
        assert run_ids == {trial_id} and steps == list(range(1, EPOCHS + 1)), (trial_id, steps)
    assert not (experiment_dir / driver_lock.LOCK_FILE).exists()


# ------------------------------------------------------------------------------------------------
# One driver per experiment


@pytest.fixture(scope="module")
def finished_experiment(tmp_path_factory, ray_session):
    from .conftest import write_tiny_space

    root = tmp_path_factory.mktemp("locked")
    space = write_tiny_space(root / "space.yaml")
    args = _search_args(root / "results", "locked", space, "--wandb", "disabled")
    args[args.index("--num-samples") + 1], args[args.index("--max-epochs") + 1] = "2", "1"
    assert main(args) == 0
    return root / "results", "locked"


def _file_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


HOLD_LOCK = """
import sys
from search.driver_lock import ExperimentLock
lock = ExperimentLock(sys.argv[1], "locked")
lock.acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def test_a_second_driver_exits_2_naming_the_running_one_and_changes_nothing(finished_experiment, capsys):
    storage, name = finished_experiment
    experiment_dir = storage / name
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(experiment_dir)], env=cli_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _file_bytes(experiment_dir)
        expected = f"error: experiment 'locked' is being run by another driver (pid {holder.pid} on host {socket.gethostname()}"
        for argv in (["--resume", name, "--storage-path", str(storage)],
                     ["--domain", "planning", "--name", name, "--storage-path", str(storage)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith(expected) and err.count("\n") == 1, err
        assert _file_bytes(experiment_dir) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not (experiment_dir / driver_lock.LOCK_FILE).exists()  # released on exit


def test_the_summary_finds_a_finished_trials_checkpoint_that_rays_memory_lost(finished_experiment):
    """After an interrupt, Ray's in-memory Result of a finished trial can lack its checkpoints (seen on S3
    under load, where the report then raised and the driver exited 1); the trial directory has them."""
    from ray import tune

    from search.report import _best_checkpoint

    storage, name = finished_experiment
    trial_dir = next((storage / name).glob("trial_*"))
    forgetful = tune.Result(metrics={}, checkpoint=None, error=None, path=str(trial_dir), best_checkpoints=[])
    checkpoint = _best_checkpoint(forgetful, "val_acc", "max")
    assert checkpoint is not None and Path(checkpoint.path).parent == trial_dir
    assert (Path(checkpoint.path) / "checkpoint.pt").is_file()
    nowhere = tune.Result(metrics={}, checkpoint=None, error=None, path=str(trial_dir / "gone"), best_checkpoints=[])
    assert _best_checkpoint(nowhere, "val_acc", "max") is None


def test_a_lock_left_by_a_killed_driver_is_taken_over_with_a_note(finished_experiment, capsys):
    storage, name = finished_experiment
    experiment_dir = storage / name
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(experiment_dir)], env=cli_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # SIGKILL: the lock file stays behind
    holder.wait(timeout=30)
    stale = json.loads((experiment_dir / driver_lock.LOCK_FILE).read_text())
    assert stale["pid"] == holder.pid

    assert main(["--resume", name, "--storage-path", str(storage)]) == 0
    out = capsys.readouterr().out
    assert f"note: took over the lock of a driver that is no longer running (pid {holder.pid} on host" in out
    assert not (experiment_dir / driver_lock.LOCK_FILE).exists()


def test_a_lock_from_another_machine_is_live_until_its_heartbeat_is_stale(tmp_path):
    now = time.time()
    foreign = driver_lock.LockHolder(host="elsewhere", pid=os.getpid(), machine="elsewhere/boot", process_start="1",
                                     started_at=now - 600, heartbeat_at=now - 1, token="x")
    (tmp_path / driver_lock.LOCK_FILE).write_text(json.dumps(foreign.__dict__))
    assert driver_lock.running_driver(str(tmp_path)) == foreign
    with pytest.raises(Exception, match="pid .* on host elsewhere"):
        driver_lock.ExperimentLock(str(tmp_path), "x").acquire()

    stale = driver_lock.LockHolder(**{**foreign.__dict__, "heartbeat_at": now - driver_lock.STALE_AFTER_S - 1})
    (tmp_path / driver_lock.LOCK_FILE).write_text(json.dumps(stale.__dict__))
    assert driver_lock.running_driver(str(tmp_path)) is None
    lock = driver_lock.ExperimentLock(str(tmp_path), "x")
    assert "no longer running" in lock.acquire()
    assert json.loads((tmp_path / driver_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / driver_lock.LOCK_FILE).exists()


# ------------------------------------------------------------------------------------------------
# A time budget spent


def test_a_spent_time_budget_leaves_trials_not_started_and_resumes_with_a_new_budget(tmp_path, tiny_space, ray_session, capsys):
    storage, name = tmp_path / "results", "budget"
    args = _search_args(storage, name, tiny_space, "--wandb", "disabled", "--time-budget-s", "1")
    assert main(args) == 0  # the budget ended it: a normal end
    out = capsys.readouterr().out
    resume = f"python search/run.py --resume {name} --storage-path {storage} --time-budget-s 1"
    assert "time budget of 1 s spent" in out and resume in out
    summary = json.loads((storage / name / "summary.json").read_text())
    statuses = [row["status"] for row in summary["trials"]]
    assert "pruned" not in statuses and any(s in ("not_started", "unfinished") for s in statuses)

    # Resumed without a new budget: still spent; the trials that never ran say so.
    assert main(["--resume", name, "--storage-path", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "time budget of 1 s spent" in out
    summary = json.loads((storage / name / "summary.json").read_text())
    assert "pruned" not in [row["status"] for row in summary["trials"]]

    # With the new budget the hint names, the search finishes every trial, each epoch once.
    assert main(["--resume", name, "--storage-path", str(storage), "--time-budget-s", "600"]) == 0
    summary = json.loads((storage / name / "summary.json").read_text())
    assert summary["num_trials"] == SAMPLES
    assert all(row["status"] == "completed" for row in summary["trials"]), summary["trials"]
    audit = audit_experiment(storage / name)
    assert audit.ok and audit.trials == SAMPLES, audit.lines()
    shutil.rmtree(storage)


def test_a_trial_whose_latest_checkpoint_was_deleted_resumes_from_one_that_survives(ray_session, tmp_path):
    """After a SIGKILL, Ray's snapshot can name a latest checkpoint that Ray deleted afterwards."""
    from ray.train import CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.train._internal.storage import StorageContext
    from ray.tune import Checkpoint
    from ray.tune.experiment import Trial
    from ray.tune.registry import register_trainable

    from search.surviving_checkpoints import ResumeFromSurvivingCheckpoint

    register_trainable("surviving_stand_in", lambda config: None)
    trial = Trial("surviving_stand_in", config={}, trial_id="t1",
                  storage=StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="trial_t1"))
    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val_acc"))
    trial.run_metadata.checkpoint_manager = manager
    for epoch, val_acc in [(1, 0.9), (2, 0.8), (3, 0.5)]:
        directory = tmp_path / f"checkpoint_{epoch}"
        directory.mkdir()
        manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(directory)), {"epoch": epoch, "val_acc": val_acc}))
    assert trial.checkpoint.path.endswith("checkpoint_3")
    (tmp_path / "checkpoint_3").rmdir()  # deleted after the snapshot that names it

    ResumeFromSurvivingCheckpoint().on_step_begin(0, [trial])
    assert trial.checkpoint.path.endswith("checkpoint_2")  # the newest kept one that exists

    (tmp_path / "checkpoint_2").rmdir()
    (tmp_path / "checkpoint_1").rmdir()
    ResumeFromSurvivingCheckpoint().on_step_begin(0, [trial])
    assert trial.checkpoint is None  # none left: the trial starts over
