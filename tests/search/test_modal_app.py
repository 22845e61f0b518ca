"""The Modal launcher without Modal credentials: its declarations, its argv, and preemption + resume.

The declarations are read from Modal's own objects (``Function.info()``), as Modal would send them.
The function body runs here through Modal's ``.local()``, with a temporary directory in place of the
volume: a first call is killed (SIGKILL, like a preempted container) half-way through, and a second
call of the same input resumes the experiment, keeping the trials that had finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import modal
import pytest
from ray import tune

from search import modal_app

from .conftest import write_tiny_space

NUM_TRIALS = 6  # one at a time: the kill lands after the 2nd is recorded done, well before the 6th


# ------------------------------------------------------------------------------------------------
# Declarations


def test_function_declares_gpu_volume_timeout_and_retries() -> None:
    info = modal_app.run_search.info()
    assert info.gpus == [("A100", 1)]
    assert info.timeout == modal_app.MAX_TIMEOUT_S == 24 * 3600
    assert info.max_retries == modal_app.MAX_RETRIES >= 1
    assert set(info.volumes) == {modal_app.VOLUME_PATH}
    assert info.volumes[modal_app.VOLUME_PATH].name == "nsm-search"
    assert not info.volumes[modal_app.VOLUME_PATH].read_only


def test_launch_options_set_gpu_timeout_volume_and_wandb_secret() -> None:
    secret = modal.Secret.from_name("wandb")
    function = modal_app._configured(modal_app.run_search, "A100:4", 7200, "my-results", secret)
    info = function.info()
    assert info.gpus == [("A100", 4)]
    assert info.timeout == 7200
    assert info.max_retries == modal_app.MAX_RETRIES
    assert info.volumes[modal_app.VOLUME_PATH].name == "my-results"
    # Dehydrated secrets are listed by their repr: the W&B secret object is among them.
    assert repr(secret) in info.secrets

    without = modal_app._configured(modal_app.run_search, "H100", 3600, "nsm-search", None).info()
    assert without.gpus == [("H100", 1)]
    assert repr(secret) not in without.secrets


def test_image_is_built_from_the_project_dependency_list(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, list] = {"pyproject": [], "sources": [], "ignore": []}
    original_pyproject = modal.Image.pip_install_from_pyproject
    original_sources = modal.Image.add_local_python_source

    def pyproject(self, path, *args, **kwargs):
        calls["pyproject"].append(path)
        return original_pyproject(self, path, *args, **kwargs)

    def sources(self, *modules, **kwargs):
        calls["sources"].extend(modules)
        calls["ignore"].append(kwargs.get("ignore"))
        return original_sources(self, *modules, **kwargs)

    monkeypatch.setattr(modal.Image, "pip_install_from_pyproject", pyproject)
    monkeypatch.setattr(modal.Image, "add_local_python_source", sources)
    assert isinstance(modal_app._image(), modal.Image)
    # The project's own dependency list (no second list to drift), and its packages as local source.
    assert calls["pyproject"] == [str(Path(modal_app.__file__).resolve().parent.parent / "pyproject.toml")]
    assert Path(calls["pyproject"][0]).is_file()
    assert sorted(calls["sources"]) == ["analysis", "nsm", "search", "spaces"]
    spaces_ignore = calls["ignore"][-1]  # spaces/ ships its YAML files (default.yaml is the default space)
    assert not spaces_ignore(Path("default.yaml")) and not spaces_ignore(Path("loader.py"))
    assert spaces_ignore(Path("notes.txt"))


# ------------------------------------------------------------------------------------------------
# Launcher argv


def test_launcher_flags_are_split_from_search_flags_and_the_name_is_fixed() -> None:
    options, argv = modal_app._parse_launcher_args(
        ["--domain", "planning", "--gpu", "A100:4", "--gpus-per-trial", "0.25", "--time-budget-s", "3600"])
    assert options.gpu == "A100:4"
    assert options.volume == "nsm-search"
    assert options.timeout_s == 3600 + modal_app.SETUP_MARGIN_S
    assert argv[:6] == ["--domain", "planning", "--gpus-per-trial", "0.25", "--time-budget-s", "3600"]
    assert argv[6] == "--name" and argv[7].startswith("planning-")

    options, argv = modal_app._parse_launcher_args(["--domain", "kg", "--name", "x", "--time-budget-s", "1e9"])
    assert options.timeout_s == modal_app.MAX_TIMEOUT_S
    assert argv == ["--domain", "kg", "--name", "x", "--time-budget-s", "1e9"]


@pytest.mark.parametrize("argv", [
    ["--domain", "planning", "--storage-path", "/elsewhere"],
    ["--domain", "planning", "--address", "auto"],
    ["--domain", "planning", "--gpu", "A100:zero"],
    ["--domain", "planning", "--timeout-hours", "48"],
    ["--domain", "all"],
])
def test_launcher_refuses_flags_it_owns_or_bad_values(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as error:
        modal_app._parse_launcher_args(argv)
    assert error.value.code == 2


def test_a_retry_resumes_the_experiment_on_the_volume(tmp_path: Path) -> None:
    argv = ["--domain", "planning", "--name", "exp"]
    assert modal_app._resume_or_start(argv, str(tmp_path)) == [*argv, "--storage-path", str(tmp_path)]
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    assert modal_app._resume_or_start(argv, str(tmp_path)) == ["--resume", "exp", "--storage-path", str(tmp_path)]


def test_commit_waits_for_ray_to_record_the_finished_trial(tmp_path: Path) -> None:
    commits: list[float] = []

    class Trial:
        class storage:
            experiment_fs_path = str(tmp_path)

    callback = modal_app.CommitVolume(lambda: commits.append(time.time()))
    callback.on_step_end(iteration=1, trials=[])
    assert commits == []  # nothing finished yet
    callback.on_trial_complete(iteration=2, trials=[], trial=Trial())
    callback.on_step_end(iteration=2, trials=[])
    assert commits == []  # the snapshot still shows the trial running
    time.sleep(0.05)
    snapshot = tmp_path / "experiment_state-2024.json"
    snapshot.write_text('{"trial_data": [')  # Ray is still copying it
    callback.on_step_end(iteration=3, trials=[])
    assert commits == []
    snapshot.write_text('{"trial_data": []}')
    callback.on_step_end(iteration=3, trials=[])
    assert len(commits) == 1
    callback.on_step_end(iteration=4, trials=[])
    assert len(commits) == 1
    callback.on_experiment_end(trials=[])
    assert len(commits) == 2


# ------------------------------------------------------------------------------------------------
# Preemption and resume through the function body


def test_killed_run_resumes_without_losing_or_rerunning_finished_trials(tmp_path: Path) -> None:
    space = write_tiny_space(tmp_path / "tiny.yaml", num_graphs=120)
    volume = tmp_path / "volume"
    volume.mkdir()
    search_argv = [
        "--domain", "planning", "--name", "exp", "--space", str(space), "--num-samples", str(NUM_TRIALS),
        "--max-epochs", "2", "--scheduler", "none", "--cpus-per-trial", "1", "--max-concurrent", "1",
        "--wandb", "disabled",
    ]
    experiment = volume / "exp"
    env = {**os.environ, **_private_ray_env()}

    # First call: a separate process, SIGKILLed (with the Ray it started) once two trials are recorded done.
    call = (
        "import sys; from search.modal_app import run_search; "
        f"sys.exit(run_search.local({search_argv!r}, storage_path={str(volume)!r}))"
    )
    log = tmp_path / "first-call.log"
    with log.open("w") as output:
        first = subprocess.Popen([sys.executable, "-c", call], env=env, start_new_session=True,
                                 stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for_finished_trials(experiment, 2, first, timeout_s=150, log=log)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # its own session: the driver and the Ray it started
        first.wait()
    finished = _finished_trials(experiment)  # what the killed driver had recorded last
    assert 2 <= len(finished) < NUM_TRIALS, f"finished at the kill: {sorted(finished)}"
    before = {trial_id: (Path(path) / "result.json").read_bytes() for trial_id, path in finished.items()}

    # Second call of the same input (Modal's retry): resumes from the "volume".
    os.environ.update(_private_ray_env())
    try:
        code = modal_app.run_search.local(search_argv, storage_path=str(volume))
    finally:
        for key in _private_ray_env():
            os.environ.pop(key, None)

    assert code == 0, f"the resumed call failed (exit {code})"
    analysis = tune.ExperimentAnalysis(str(experiment))
    assert len(analysis.trials) == NUM_TRIALS
    assert all(trial.status == "TERMINATED" for trial in analysis.trials)
    for trial_id, result in before.items():  # kept, and not run again
        assert (Path(finished[trial_id]) / "result.json").read_bytes() == result
    summary = json.loads((experiment / "summary.json").read_text())
    assert summary["num_trials"] == NUM_TRIALS


def _private_ray_env() -> dict[str, str]:
    # Start a fresh local Ray, never one found in /tmp/ray/ray_current_cluster (another test's cluster).
    return {"RAY_ADDRESS": "local"}


def _finished_trials(experiment: Path) -> dict[str, str]:
    """trial_id -> trial dir of the trials the experiment state records as TERMINATED."""
    if not any(experiment.glob("experiment_state-*.json")):
        return {}
    try:
        analysis = tune.ExperimentAnalysis(str(experiment))
    except Exception:  # the state file is being rewritten; try again
        return {}
    return {trial.trial_id: trial.path for trial in analysis.trials if trial.status == "TERMINATED"}


def _wait_for_finished_trials(experiment: Path, count: int, process: subprocess.Popen, timeout_s: float,
                              log: Path) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        finished = _finished_trials(experiment)
        if len(finished) >= count:
            return finished
        if process.poll() is not None:
            tail = "\n".join(log.read_text().splitlines()[-30:])
            pytest.fail(f"the first call ended (exit {process.returncode}) before {count} trials finished:\n{tail}")
        time.sleep(0.2)
    pytest.fail(f"{count} trials did not finish within {timeout_s} s")
