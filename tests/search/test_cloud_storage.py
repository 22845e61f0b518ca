"""``--storage-path`` as a cloud URI: a real S3 protocol server (moto) behind pyarrow, as Ray uses it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.fs
import pytest
from optuna.trial import TrialState

from search import driver_lock, storage
from search.errors import SearchError
from search.run import main
from search.study import STUDY_FILE, load_study
from search.trainable import HOLD_ENV
from .conftest import cli, cli_env, kill_group, wait_for_finished_trials

BUCKET = "nsm-test"


@pytest.fixture(scope="module")
def s3_endpoint(monkeypatch_module):
    """A local S3 server; its credentials are moto's dummies, exported for the drivers and Ray workers."""
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch_module.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket=BUCKET)
    yield f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def s3_uri(prefix: str, query: str) -> str:
    return f"s3://{BUCKET}/{prefix}?{query}"


def read_text(location: str, name: str) -> str:
    filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    with filesystem.open_input_stream(f"{path}/{name}") as stream:
        return stream.readall().decode()


def test_experiment_location_keeps_the_query_and_the_mirror_is_deterministic():
    uri = "s3://bucket/results/?endpoint_override=host:9000&scheme=http"
    assert storage.experiment_location(uri, "exp") == "s3://bucket/results/exp?endpoint_override=host:9000&scheme=http"
    assert storage.experiment_location("/data/results", "exp") == "/data/results/exp"
    assert storage.local_mirror(uri, "exp") == storage.local_mirror(uri, "exp")
    assert storage.local_mirror(uri, "exp") != storage.local_mirror(uri.replace("bucket", "other"), "exp")
    assert storage.local_mirror(uri, "exp").name == "exp"


@pytest.mark.parametrize("uri, expected", [
    ("nosuchscheme://bucket/results", "--storage-path nosuchscheme://bucket/results: cannot open it"),
    ("s3://bucket/results?not_an_option=1", "--storage-path s3://bucket/results?not_an_option=1: cannot open it"),
])
def test_unusable_storage_uri_is_one_line_exit_2(uri, expected, tiny_space, capsys):
    assert main(["--domain", "planning", "--space", str(tiny_space), "--storage-path", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1


def test_file_under_storage_uri_is_refused(tmp_path, tiny_space, capsys):
    (tmp_path / "a-file").write_text("x")
    assert main(["--domain", "planning", "--space", str(tiny_space), "--storage-path", f"file://{tmp_path}/a-file"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_resume_of_missing_experiment_on_s3_is_exit_2(s3_endpoint, capsys):
    assert main(["--resume", "never-ran", "--storage-path", s3_uri("results", s3_endpoint)]) == 2
    assert "no experiment of that name" in capsys.readouterr().err


def test_missing_bucket_is_exit_2_before_ray_starts(tiny_space, s3_endpoint, capsys):
    uri = f"s3://no-such-bucket/results?{s3_endpoint}"
    assert main(["--domain", "planning", "--space", str(tiny_space), "--storage-path", uri, "--name", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --storage-path {uri}: bucket 'no-such-bucket' does not exist\n"
    assert not storage.local_mirror(uri, "nowhere").exists()


def test_search_on_s3_preempted_then_resumed_on_a_fresh_machine(tmp_path, tiny_space, s3_endpoint):
    """SIGTERM mid-search (preemption), the local mirror wiped (another machine), --resume: nothing lost or re-run.

    SIGKILL is not used here: Ray uploads a snapshot file by file, so a kill during an upload can leave a
    torn snapshot on the bucket (README, "Scaling out"). SIGTERM makes Ray finish its last upload.
    """
    storage_uri, name, samples = s3_uri("results", s3_endpoint), "on-s3", 4
    location = storage.experiment_location(storage_uri, name)
    mirror = storage.local_mirror(storage_uri, name)
    args = ("--domain", "planning", "--space", str(tiny_space), "--num-samples", str(samples), "--max-epochs", "3",
            "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--max-concurrent", "2", "--wandb", "offline",
            "--storage-path", storage_uri, "--name", name)
    log = tmp_path.parent / f"{tmp_path.name}-driver.log"  # outside tmp_path, which must stay empty
    # The first trial runs to its end; the others wait after epoch 1 until released, so the search is
    # still running when the signal comes, however fast the trials are. Outside tmp_path, like the log.
    hold = tmp_path.parent / f"{tmp_path.name}-hold"
    hold.mkdir()
    with log.open("w") as output:
        driver = subprocess.Popen(cli(*args), cwd=tmp_path, env={**cli_env(), HOLD_ENV: f"1:{hold}"}, stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_finished_trials(mirror, driver)
        holder = driver_lock.running_driver(location)  # the running driver holds the lock on the bucket
        assert holder is not None and holder.pid == driver.pid
        driver.send_signal(signal.SIGTERM)
        (hold / "release").touch()
        # Stopped as by Ctrl-C, with the resume command printed.
        assert driver.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        (hold / "release").touch()
        kill_group(driver.pid)
    assert storage.is_file(location, "search.json")
    finished_before_resume = _finished_trials(_download_study(location, name, tmp_path.parent / f"{tmp_path.name}-killed"))
    assert 1 <= len(finished_before_resume) < samples  # stopped mid-search
    shutil.rmtree(mirror)

    resumed = subprocess.run(cli("--resume", name, "--storage-path", storage_uri), cwd=tmp_path, env=cli_env(),
                             capture_output=True, text=True, timeout=400, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # nothing was written to the working directory
    assert not storage.is_file(location, driver_lock.LOCK_FILE)  # released by the resumed driver

    summary = json.loads(read_text(location, "summary.json"))
    assert summary["experiment_dir"] == location
    assert summary["num_trials"] == samples
    assert all(row["status"] in ("completed", "pruned") for row in summary["trials"])
    assert summary["best_checkpoint"].startswith(f"s3://{BUCKET}/results/{name}/")
    for row in summary["trials"]:  # no trial trained an epoch twice
        assert row["trial_dir"] == f"s3://{BUCKET}/results/{name}/trial_{row['trial_id']}"
        epochs = [json.loads(line)["epoch"] for line in read_text(location, f"trial_{row['trial_id']}/result.json").splitlines()]
        assert sorted(epochs) == sorted(set(epochs)) and epochs, row["trial_id"]

    # The journal on S3 holds the whole study: each Ray trial finished exactly once.
    finished = _finished_trials(_download_study(location, name, tmp_path.parent / f"{tmp_path.name}-journal"))
    assert sorted(finished) == sorted(row["trial_id"] for row in summary["trials"])
    assert set(finished_before_resume) <= set(finished)
    # Offline W&B runs were copied next to the experiment.
    filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    wandb_files = filesystem.get_file_info(pyarrow.fs.FileSelector(f"{path}/wandb", recursive=True))
    assert any(info.path.endswith(".wandb") for info in wandb_files)


def _download_study(location: str, name: str, directory: Path):
    (directory / name).mkdir(parents=True)
    (directory / name / STUDY_FILE).write_text(read_text(location, STUDY_FILE))
    return load_study(directory / name)


def _finished_trials(study) -> list[str]:
    """Ray trial ids of the study's COMPLETE and PRUNED trials."""
    return [t.user_attrs["ray_trial_id"] for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_driver_lock_on_a_bucket(s3_endpoint):
    """A live driver elsewhere holds an experiment on a bucket; a stale one is taken over."""
    location = s3_uri("locks/exp", s3_endpoint)
    now = time.time()
    elsewhere = driver_lock.LockHolder(host="elsewhere", pid=7, machine="elsewhere/boot", process_start="1",
                                       started_at=now, heartbeat_at=now, token="theirs")
    storage.write_text(location, driver_lock.LOCK_FILE, json.dumps(elsewhere.__dict__))
    with pytest.raises(SearchError, match="pid 7 on host elsewhere"):
        driver_lock.ExperimentLock(location, "exp").acquire()

    stale = {**elsewhere.__dict__, "heartbeat_at": now - driver_lock.STALE_AFTER_S - 1}
    storage.write_text(location, driver_lock.LOCK_FILE, json.dumps(stale))
    lock = driver_lock.ExperimentLock(location, "exp")
    assert "no longer running (pid 7 on host elsewhere" in lock.acquire()
    assert driver_lock.running_driver(location).token != "theirs"
    lock.release()
    assert not storage.is_file(location, driver_lock.LOCK_FILE)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_trials_no_snapshot_recorded_are_set_aside_with_their_files(where, tmp_path, request):
    from search.unrecorded_trials import set_aside_unrecorded_trials

    location = str(tmp_path / "exp") if where == "local" else s3_uri(f"set-aside-{tmp_path.name}", request.getfixturevalue("s3_endpoint"))
    uri = location if where == "s3" else f"file://{location}"
    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    for trial in ("trial_known", "trial_late"):
        filesystem.create_dir(f"{path}/{trial}/checkpoint_000000", recursive=True)
        with filesystem.open_output_stream(f"{path}/{trial}/checkpoint_000000/model.pt") as stream:
            stream.write(trial.encode())
    with filesystem.open_output_stream(f"{path}/trial_not_a_directory") as stream:
        stream.write(b"")

    assert set_aside_unrecorded_trials(location, {"known"}) == ["trial_late"]

    assert storage.directories(location, "trial_") == ["trial_known"]
    assert storage.directories(location, "unrecorded") == ["unrecorded"]
    assert read_text(uri, "unrecorded/trial_late/checkpoint_000000/model.pt") == "trial_late"
    assert set_aside_unrecorded_trials(location, {"known"}) == []  # a second resume moves nothing
