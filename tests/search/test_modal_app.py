"""The Modal launcher without Modal's cloud: its declarations, its argv, and the container function's behaviour.

The declarations are read from Modal's own objects (``Function.info()``), as Modal would send them. The
container function bodies run here through Modal's ``.local()``, with a temporary directory in place of
the volume; the long runs happen in a subprocess that imports the app the way Modal does, as a
top-level ``modal_app`` (search/ on ``sys.path``). Only Modal's cloud is stood in for: the spawned call
in the launcher test, and the volume lookup.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import modal
import pytest
from packaging.requirements import Requirement

from search import modal_app

from .conftest import REPO, cli, cli_env, kill_group, wait_for_finished_trials, write_tiny_space


# ------------------------------------------------------------------------------------------------
# Declarations


def test_run_search_declares_gpu_resources_timeout_and_retries_but_no_volume() -> None:
    info = modal_app.run_search.info()
    assert info.gpus == [("A100", 1)]
    assert info.timeout == modal_app.MAX_TIMEOUT_S == 24 * 3600
    assert info.max_retries == modal_app.MAX_RETRIES >= 1
    assert info.single_use_containers  # every attempt in a fresh container: no processes left from the last
    # Sized for one GPU at the default 0.25 GPU per trial: four trials, plus Ray.
    assert info.cpu == 4 * modal_app.DEFAULT_CPUS_PER_TRIAL + modal_app.HEADROOM_CPUS
    assert info.memory_mib == 4 * modal_app.TRIAL_MEMORY_MIB + modal_app.HEADROOM_MEMORY_MIB
    # A declared volume would be created whenever the app runs, whatever --volume names.
    assert info.volumes == {}
    assert modal_app.smoke.info().volumes == {} and modal_app.smoke_search.info().volumes == {}


def test_launch_options_set_gpu_resources_timeout_volume_and_wandb_secret() -> None:
    secret = modal.Secret.from_name("wandb")
    function = modal_app._configured(modal_app.run_search, "A100:4", 7200, "my-results", secret,
                                     cpu=34.0, memory_mib=73728)
    info = function.info()
    assert info.gpus == [("A100", 4)]
    assert (info.cpu, info.memory_mib) == (34.0, 73728)
    assert info.timeout == 7200
    assert info.max_retries == modal_app.MAX_RETRIES
    assert set(info.volumes) == {modal_app.VOLUME_PATH}
    assert info.volumes[modal_app.VOLUME_PATH].name == "my-results"
    assert not info.volumes[modal_app.VOLUME_PATH].read_only
    assert info.secrets == [repr(secret)]  # dehydrated secrets are listed by their repr

    without = modal_app._configured(modal_app.run_search, "H100", 3600, "nsm-search", None, cpu=10.0,
                                    memory_mib=24576).info()
    assert without.gpus == [("H100", 1)]
    assert without.secrets == []


def test_image_pins_the_tested_versions_and_ships_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    installs: list[tuple[tuple[str, ...], dict]] = []
    dirs: list[tuple[Path, str, object]] = []
    original_install = modal.Image.pip_install
    original_dir = modal.Image.add_local_dir

    def pip_install(self, *packages, **kwargs):
        installs.append((packages, kwargs))
        return original_install(self, *packages, **kwargs)

    def add_local_dir(self, local_path, remote_path, **kwargs):
        dirs.append((Path(local_path), remote_path, kwargs.get("ignore")))
        return original_dir(self, local_path, remote_path, **kwargs)

    monkeypatch.setattr(modal.Image, "pip_install", pip_install)
    monkeypatch.setattr(modal.Image, "add_local_dir", add_local_dir)
    assert isinstance(modal_app._image(), modal.Image)

    # torch alone, from the CUDA wheel index; everything else pinned exactly.
    (torch_packages, torch_options), (packages, options) = installs
    assert torch_packages == (f"torch=={modal_app.TORCH_VERSION}",)
    assert torch_options.get("index_url") == modal_app.TORCH_INDEX_URL
    assert "/cu1" in modal_app.TORCH_INDEX_URL
    assert packages == modal_app.PINNED_REQUIREMENTS and not options.get("index_url")
    pins = {Requirement(r).name: Requirement(r) for r in (*packages, *torch_packages)}
    assert all(len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "==" for pin in pins.values())

    # Every dependency of the project is pinned within its range (modal comes with Modal's containers)...
    import tomllib  # the image's Python, 3.11, is asserted below

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for dependency in map(Requirement, pyproject["project"]["dependencies"]):
        if dependency.name == "modal":
            continue
        assert dependency.name in pins, f"{dependency.name} is not pinned in the image"
        assert dependency.specifier.contains(next(iter(pins[dependency.name].specifier)).version)
    # ...and the dev extra (the README's install command) installs exactly these, so the suite tests them...
    dev = {Requirement(r).name: r for r in pyproject["project"]["optional-dependencies"]["dev"]}
    for requirement in packages:
        assert dev.get(Requirement(requirement).name) == requirement, f"{requirement}: the dev extra says {dev.get(Requirement(requirement).name)}"
    # ...at the versions this test suite runs with, on its Python.
    from importlib import metadata

    for name, pin in pins.items():
        installed = metadata.version(name).split("+")[0]
        assert installed == next(iter(pin.specifier)).version, f"{name}: installed {installed}, image {pin}"
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == modal_app.PYTHON_VERSION

    # The project's packages with their data files, from the checkout this file is in.
    assert [(local, remote) for local, remote, _ in dirs] == [
        (REPO / package, f"/root/{package}") for package in ("nsm", "search", "spaces", "analysis")]
    assert all(local.is_dir() for local, _, _ in dirs)
    (ignore,) = {id(matcher): matcher for _, _, matcher in dirs}.values()
    for shipped in ("default.yaml", "loader.py", "data/grail.py", "data/checksums.json"):
        assert not ignore(Path(shipped)), shipped
    for left_out in ("__pycache__", "data/__pycache__/grail.cpython-311.pyc", ".ipynb_checkpoints/x.ipynb"):
        assert ignore(Path(left_out)), left_out


def test_launching_needs_neither_ray_nor_torch() -> None:
    check = ("import sys; sys.path.insert(0, 'search'); import modal_app; "
             "print(sorted(m for m in ('ray', 'torch', 'optuna', 'torch_geometric') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", check], cwd=REPO, env=cli_env(), capture_output=True,
                            text=True, timeout=120, check=True).stdout
    assert output.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# Launcher argv: name, budget below the timeout, resources, files


def test_launcher_flags_are_split_from_search_flags_and_the_name_is_fixed() -> None:
    options, argv, files = modal_app._parse_launcher_args(
        ["--domain", "planning", "--gpu", "A100:4", "--gpus-per-trial", "0.25", "--time-budget-s", "3600"])
    assert (options.gpu, options.gpu_count, options.volume) == ("A100:4", 4, "nsm-search")
    assert options.timeout_s == 3600 + modal_app.SETUP_MARGIN_S
    assert argv[:6] == ["--domain", "planning", "--gpus-per-trial", "0.25", "--time-budget-s", "3600"]
    assert argv[6] == "--name" and argv[7].startswith("planning-")
    assert argv[8:] == ["--cpus-per-trial", "2"]  # the per-trial CPUs the container is sized for
    assert files == {}

    options, argv, _ = modal_app._parse_launcher_args(["--domain", "kg", "--name", "x", "--timeout-hours", "2"])
    assert options.timeout_s == 7200
    assert argv == ["--domain", "kg", "--name", "x", "--time-budget-s", str(7200 - modal_app.SETUP_MARGIN_S),
                    "--gpus-per-trial", "0.25", "--cpus-per-trial", "2"]

    # A resumed search keeps the settings stored in it: nothing is added, the container checks its budget.
    options, argv, files = modal_app._parse_launcher_args(["--resume", "planning-1", "--gpu", "A100:2"])
    assert argv == ["--resume", "planning-1"] and files == {}
    assert options.timeout_s == modal_app.MAX_TIMEOUT_S
    assert options.trials == 8


@pytest.mark.parametrize("timeout_hours", [None, 0.75, 1, 6, 24])
@pytest.mark.parametrize("budget_s", [None, 60, 1800, 3600, 23.5 * 3600, 30 * 3600])
def test_the_search_budget_is_always_below_the_container_timeout(timeout_hours, budget_s) -> None:
    arglist = ["--domain", "planning"]
    arglist += [] if timeout_hours is None else ["--timeout-hours", str(timeout_hours)]
    arglist += [] if budget_s is None else ["--time-budget-s", str(budget_s)]
    try:
        options, argv, _ = modal_app._parse_launcher_args(arglist)
    except SystemExit as refused:  # a budget that cannot fit is refused, never passed on
        assert refused.code == 2
        assert budget_s is not None and budget_s + modal_app.SETUP_MARGIN_S > (timeout_hours or 24) * 3600
        return
    budget = float(modal_app._flag_value(argv, "--time-budget-s"))
    assert 0 < budget <= options.timeout_s - modal_app.SETUP_MARGIN_S
    assert options.timeout_s <= modal_app.MAX_TIMEOUT_S
    if budget_s is not None:
        assert budget == budget_s  # the user's budget is kept
    if timeout_hours is not None:
        assert options.timeout_s == timeout_hours * 3600


@pytest.mark.parametrize("argv", [
    ["--domain", "planning", "--storage-path", "/elsewhere"],
    ["--domain", "planning", "--address", "auto"],
    ["--domain", "planning", "--gpu", "A100:zero"],
    ["--domain", "planning", "--timeout-hours", "48"],
    ["--domain", "planning", "--timeout-hours", "0.25"],  # no time left after setup
    ["--domain", "planning", "--cpu", "0"],
    ["--domain", "planning", "--gpus-per-trial", "half"],
    ["--domain", "all"],
    ["--domain", "planning", "--spa", "x.yaml"],  # run.py would take it for --space, unread here
    ["--domain", "planning", "--warm", "best.yaml"],
    ["--domain", "planning", "--space", "/no/such/space.yaml"],
    ["--domain", "planning", "--name", "../elsewhere"],
    ["--resume", "a/b"],
])
def test_launcher_refuses_flags_it_owns_or_bad_values(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as error:
        modal_app._parse_launcher_args(argv)
    assert error.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("modal run search/modal_app.py: error:")


def test_resources_scale_with_gpus_and_gpus_per_trial_and_flags_override_them() -> None:
    def sized(*arglist: str) -> tuple[float, int, int]:
        options, _, _ = modal_app._parse_launcher_args(["--domain", "planning", *arglist])
        return options.cpu, options.memory_mib, options.trials

    cpus, trial_mib = modal_app.DEFAULT_CPUS_PER_TRIAL, modal_app.TRIAL_MEMORY_MIB
    headroom = (modal_app.HEADROOM_CPUS, modal_app.HEADROOM_MEMORY_MIB)
    assert sized() == (4 * cpus + headroom[0], 4 * trial_mib + headroom[1], 4)
    assert sized("--gpu", "A100:4") == (16 * cpus + headroom[0], 16 * trial_mib + headroom[1], 16)
    assert sized("--gpu", "H100:2", "--gpus-per-trial", "0.5") == (4 * cpus + headroom[0], 4 * trial_mib + headroom[1], 4)
    assert sized("--gpu", "A100:4", "--gpus-per-trial", "1", "--cpus-per-trial", "6") == (26.0, 4 * trial_mib + headroom[1], 4)
    assert sized("--gpu", "A100:4", "--max-concurrent", "3")[2] == 3
    assert sized("--gpu", "A100:4", "--num-samples", "2")[2] == 2
    assert sized("--gpu", "A100:4", "--cpu", "12", "--memory-gb", "40") == (12.0, 40 * 1024, 16)


def test_file_flags_are_read_here_and_sent_with_the_call(tmp_path: Path) -> None:
    space = write_tiny_space(tmp_path / "tiny.yaml")
    warm = tmp_path / "best_config.yaml"
    warm.write_text("lr: 0.003\n")
    _, argv, files = modal_app._parse_launcher_args(
        ["--domain", "planning", f"--space={space}", "--warm-start", str(warm)])
    assert files == {"--space": ("tiny.yaml", space.read_bytes()), "--warm-start": ("best_config.yaml", b"lr: 0.003\n")}
    assert modal_app._flag_value(argv, "--space") == str(space)  # rewritten in the container, not here


# ------------------------------------------------------------------------------------------------
# The launcher starts the call with spawn


class _StandInCall:
    object_id = "fc-0123456789"

    def __init__(self, code: int) -> None:
        self.code = code

    def get(self) -> int:
        return self.code


class _StandInFunction:
    """What ``with_options`` returns, minus Modal's cloud: it records ``spawn`` and has no ``remote``."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.spawned: list[tuple[tuple, dict]] = []

    def spawn(self, *args, **kwargs) -> _StandInCall:
        self.spawned.append((args, kwargs))
        return _StandInCall(self.code)


@pytest.mark.parametrize("code", [0, 2])
def test_launch_spawns_the_call_and_says_how_to_follow_and_fetch_it(
        code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    function = _StandInFunction(code)
    configured, volumes = [], []
    monkeypatch.setattr(modal_app, "_ensure_volume", volumes.append)
    monkeypatch.setattr(modal_app, "_existing_secret", lambda name: None)
    monkeypatch.setattr(modal_app, "_configured", lambda *args, **kwargs: configured.append((args, kwargs)) or function)
    space = write_tiny_space(tmp_path / "tiny.yaml")

    arglist = ["--domain", "planning", "--gpu", "A100:2", "--volume", "my-results", "--name", "exp",
               "--space", str(space), "--time-budget-s", "3600"]
    if code:
        with pytest.raises(SystemExit) as exit_status:
            modal_app.launch(*arglist)
        assert exit_status.value.code == code
    else:
        modal_app.launch(*arglist)

    assert volumes == ["my-results"]  # only the volume asked for is created, never the default one
    (args, kwargs), = configured
    assert args == (modal_app.run_search, "A100:2", 3600 + modal_app.SETUP_MARGIN_S, "my-results", None)
    assert kwargs == {"cpu": 8 * modal_app.DEFAULT_CPUS_PER_TRIAL + modal_app.HEADROOM_CPUS,  # 2 GPUs / 0.25
                      "memory_mib": 8 * modal_app.TRIAL_MEMORY_MIB + modal_app.HEADROOM_MEMORY_MIB}
    (call_args, call_kwargs), = function.spawned
    assert call_args[0][:4] == ["--domain", "planning", "--name", "exp"]
    assert call_kwargs["files"] == {"--space": ("tiny.yaml", space.read_bytes())}
    assert call_kwargs["volume_name"] == "my-results" and call_kwargs["launch_id"]
    assert call_kwargs["timeout_s"] == 3600 + modal_app.SETUP_MARGIN_S
    out = capsys.readouterr().out
    assert "started call fc-0123456789" in out
    assert "modal app logs " in out and "modal app logs nsm-search" not in out
    assert "modal.FunctionCall.from_id('fc-0123456789').get()" in out
    assert "modal volume get my-results exp ./results" in out
    assert f"worst case {modal_app.ATTEMPTS * 1.5 * 2:.1f} GPU-hours" in out
    assert f"done (exit {code})" in out


def test_a_missing_volume_is_created_as_a_v2_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    existing: set[str] = {"old-results"}
    created: list[tuple[str, dict]] = []

    class Lookup:
        def __init__(self, name: str) -> None:
            self.name = name

        def hydrate(self) -> None:
            if self.name not in existing:
                raise modal.exception.NotFoundError(f"Volume {self.name!r} not found")

    monkeypatch.setattr(modal.Volume, "from_name", lambda name, **kwargs: Lookup(name))
    # Volume.objects is a new manager on every access: replace create on its class.
    monkeypatch.setattr(type(modal.Volume.objects), "create",
                        lambda manager, name, **kwargs: created.append((name, kwargs)))
    modal_app._ensure_volume("old-results")
    assert created == []  # used as it is, v1 or v2
    modal_app._ensure_volume("new-results")
    assert created == [("new-results", {"version": 2, "allow_existing": True})]


# ------------------------------------------------------------------------------------------------
# The container function: decisions that stop before the search


def test_a_user_error_returns_2_without_raising_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv in (["--domain", "nowhere", "--name", "exp", "--time-budget-s", "60"],
                 ["--domain", "planning", "--name", "exp", "--time-budget-s", "60", "--no-such-flag"]):
        assert modal_app.run_search.local(argv, launch_id="call-1", storage_path=str(tmp_path)) == 2
        assert list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    assert "error: unknown domain 'nowhere'" in err
    assert "unrecognized arguments: --no-such-flag" in err


@pytest.mark.parametrize("budget", [None, str(24 * 3600)])
def test_the_container_refuses_a_search_that_could_outlive_it(budget, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--domain", "planning", "--name", "exp"] + ([] if budget is None else ["--time-budget-s", budget])
    assert modal_app.run_search.local(argv, launch_id="call-1", storage_path=str(tmp_path)) == 2
    assert list(tmp_path.iterdir()) == []
    assert "--time-budget-s" in capsys.readouterr().err


def test_a_resumed_search_must_fit_the_container_too(tmp_path: Path) -> None:
    from search.settings import SearchSettings

    def experiment(name: str, budget: float | None) -> None:
        (tmp_path / name).mkdir()
        SearchSettings(domain="planning", name=name, storage_path=str(tmp_path), space="tiny.yaml", num_samples=4,
                       max_epochs=2, scheduler="none", searcher="tpe", metric="val_acc", mode="max",
                       cpus_per_trial=1, gpus_per_trial=0, max_concurrent=1, seed=0, wandb="disabled",
                       wandb_project="nsm-search", time_budget_s=budget).save()

    experiment("unbounded", None)
    experiment("long", 20 * 3600.0)
    assert "not set" in modal_app._budget_problem(["--resume", "unbounded"], str(tmp_path), modal_app.MAX_TIMEOUT_S)
    assert "does not fit" in modal_app._budget_problem(["--resume", "long"], str(tmp_path), 6 * 3600)
    assert modal_app._budget_problem(["--resume", "long"], str(tmp_path), modal_app.MAX_TIMEOUT_S) is None


def test_the_container_refuses_a_name_that_is_a_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "volume").mkdir()
    argv = ["--domain", "planning", "--name", "../outside", "--time-budget-s", "60"]
    assert modal_app.run_search.local(argv, launch_id="call-1", storage_path=str(tmp_path / "volume")) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["volume"]
    assert list((tmp_path / "volume").iterdir()) == []
    assert "plain directory name" in capsys.readouterr().err


def test_a_name_that_another_launch_used_is_refused_not_resumed_or_cleared(tmp_path: Path) -> None:
    experiment = tmp_path / "exp"
    experiment.mkdir()
    (experiment / "search.json").write_text("{}")
    (tmp_path / modal_app.LAUNCH_DIR / "exp").mkdir(parents=True)
    (tmp_path / modal_app.LAUNCH_DIR / "exp" / "launch_id").write_text("someone-else\n")
    argv = ["--domain", "planning", "--name", "exp", "--time-budget-s", "60"]
    assert modal_app.run_search.local(argv, launch_id="call-2", storage_path=str(tmp_path)) == 2
    assert (experiment / "search.json").read_text() == "{}"
    assert (tmp_path / modal_app.LAUNCH_DIR / "exp" / "launch_id").read_text() == "someone-else\n"


def _stop_like_ray_tune_on(signum: int | None) -> int:
    """A stand-in for search.run.main that is stopped as Ray Tune stops: its own handler takes the signal."""
    if signum is not None:
        previous = signal.signal(signum, lambda number, frame: None)
        try:
            signal.raise_signal(signum)
        finally:
            signal.signal(signum, previous)
    return 130


@pytest.mark.parametrize(("outcome", "expected"), [
    ("crash", RuntimeError), ("SIGINT", modal_app.SearchPreempted), ("SIGTERM", modal_app.SearchPreempted),
    ("interrupted without a signal", 130), ("ok", 0), ("user error", 2),
])
def test_the_container_raises_what_modal_should_retry_and_returns_the_rest(
        outcome: str, expected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision alone: search.run.main is stood in for (the searches below run the real one)."""
    import search.run

    def main(argv, callbacks=None):
        if outcome == "crash":
            raise RuntimeError("the driver crashed")
        if outcome.startswith("SIG"):
            return _stop_like_ray_tune_on(getattr(signal, outcome))
        return {"interrupted without a signal": 130, "ok": 0, "user error": 2}[outcome]

    commits: list[object] = []
    monkeypatch.setattr(search.run, "main", main)
    monkeypatch.setattr(modal_app, "_commit_volume", commits.append)
    argv = ["--domain", "planning", "--name", "exp", "--time-budget-s", "60"]
    if isinstance(expected, int):
        assert modal_app.run_search.local(argv, launch_id="call-1", storage_path=str(tmp_path)) == expected
    else:
        with pytest.raises(expected):
            modal_app.run_search.local(argv, launch_id="call-1", storage_path=str(tmp_path))
    assert len(commits) == 1  # the volume is committed once the search has stopped, whatever the outcome


def test_cuda_problem_names_the_wheel_index_when_torch_sees_no_gpu() -> None:
    import torch

    problem = modal_app._cuda_problem()
    if torch.cuda.device_count() > 0:
        assert problem is None
    else:
        assert modal_app.TORCH_INDEX_URL in problem and "smoke" in problem


def test_signals_are_recorded_whoever_handles_them() -> None:
    handled: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: handled.append(signum))
    try:
        with modal_app._signals_received() as received:
            signal.raise_signal(signal.SIGINT)
            signal.signal(signal.SIGINT, lambda signum, frame: None)  # replaced mid-way, as Ray Tune does
            signal.raise_signal(signal.SIGINT)
        with modal_app._signals_received() as nothing:
            pass
    finally:
        signal.signal(signal.SIGINT, previous)
    assert handled == [signal.SIGINT]
    assert received == {signal.SIGINT}
    assert nothing == set()


# ------------------------------------------------------------------------------------------------
# The container function: searches (in a subprocess that imports the app as Modal does)


def _container_call(function: str, *args, **kwargs) -> list[str]:
    """A Python command line calling ``modal_app.<function>.local(...)`` with ``modal_app`` imported top-level."""
    arguments = ", ".join([*map(repr, args), *(f"{key}={value!r}" for key, value in kwargs.items())])
    return [sys.executable, "-c",
            "import sys; sys.path.insert(0, 'search'); import modal_app; "
            f"sys.exit(modal_app.{function}.local({arguments}))"]


def _env() -> dict[str, str]:
    # A fresh local Ray, never one found in /tmp/ray/ray_current_cluster (another test's cluster).
    return {**cli_env(), "RAY_ADDRESS": "local"}


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def test_preempted_search_raises_then_resumes_and_analyses_on_a_laptop(tmp_path: Path) -> None:
    """SIGINT mid-search, as Modal preempts: the call raises (Modal retries it). The experiment it made
    then resumes with ``search/run.py --resume`` and is analysed, by processes that never import modal_app."""
    space = write_tiny_space(tmp_path / "tiny.yaml", num_graphs=120)
    volume = tmp_path / "volume"
    volume.mkdir()
    num_trials = 3
    argv = ["--domain", "planning", "--name", "exp", "--space", str(space), "--num-samples", str(num_trials),
            "--max-epochs", "2", "--scheduler", "none", "--cpus-per-trial", "1", "--gpus-per-trial", "0",
            "--max-concurrent", "1", "--wandb", "disabled", "--time-budget-s", "3600"]
    experiment = volume / "exp"
    log = tmp_path / "container.log"
    with log.open("w") as output:
        container = subprocess.Popen(_container_call("run_search", argv, launch_id="call-1", storage_path=str(volume)),
                                     cwd=REPO, env=_env(), stdout=output, stderr=subprocess.STDOUT,
                                     start_new_session=True)
    try:
        finished_before = wait_for_finished_trials(experiment, container)
        os.kill(container.pid, signal.SIGINT)  # to the function's process, as Modal delivers a preemption
        container.wait(timeout=300)
    finally:
        kill_group(container.pid)
    output = log.read_text()
    assert container.returncode == 1, _tail(output)  # raised, not returned
    assert "modal_app.SearchPreempted: the search was stopped by SIGINT" in output, _tail(output)
    assert b"modal_app" not in (experiment / "tuner.pkl").read_bytes()
    kept = {trial_id: (experiment / f"trial_{trial_id}" / "result.json").read_bytes() for trial_id in finished_before}

    resumed = subprocess.run(cli("--resume", "exp", "--storage-path", str(volume)), cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, _tail(resumed.stdout + resumed.stderr)
    summary = json.loads((experiment / "summary.json").read_text())
    assert summary["num_trials"] == num_trials
    assert {trial["status"] for trial in summary["trials"]} == {"completed"}
    for trial_id, result in kept.items():  # finished before the preemption: kept, not run again
        assert (experiment / f"trial_{trial_id}" / "result.json").read_bytes() == result

    analysed = subprocess.run([sys.executable, str(REPO / "analysis" / "best.py"), str(experiment)], cwd=tmp_path,
                              env=_env(), capture_output=True, text=True, timeout=300)
    assert analysed.returncode == 0, _tail(analysed.stdout + analysed.stderr)
    assert (experiment / "best" / "best_model.pt").is_file()


def test_a_retry_without_tuner_pkl_starts_again_with_the_shipped_files(tmp_path: Path) -> None:
    """An attempt that died after search.json but before Ray's tuner.pkl: the retry (same call, same files)
    clears the half-made experiment and starts the search; the files exist only as sent with the call."""
    space = write_tiny_space(tmp_path / "tiny.yaml", num_graphs=120)
    warm = tmp_path / "best_config.yaml"
    warm.write_text("lr: 0.003\ncycle_weight: 0.05\nbatch_size: 32\n")
    _, argv, files = modal_app._parse_launcher_args(
        ["--domain", "planning", "--name", "exp", "--space", str(space), "--warm-start", str(warm),
         "--num-samples", "2", "--max-epochs", "1", "--scheduler", "none", "--gpus-per-trial", "0",
         "--cpus-per-trial", "1", "--max-concurrent", "1", "--wandb", "disabled", "--time-budget-s", "3600"])
    space.unlink()  # the container has only what the call carries
    warm.unlink()
    volume = tmp_path / "volume"
    experiment = volume / "exp"
    experiment.mkdir(parents=True)
    (experiment / "search.json").write_text('{"half": "written"}')
    (experiment / "study.journal").write_text("")
    (volume / modal_app.LAUNCH_DIR / "exp").mkdir(parents=True)
    (volume / modal_app.LAUNCH_DIR / "exp" / "launch_id").write_text("call-1\n")

    run = subprocess.run(_container_call("run_search", argv, launch_id="call-1", files=files, storage_path=str(volume)),
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, _tail(output)
    assert "starting the search again" in output
    settings = json.loads((experiment / "search.json").read_text())
    shipped = volume / modal_app.LAUNCH_DIR / "exp"
    assert settings["space"] == str(shipped / "space" / "tiny.yaml")
    assert settings["warm_start"] == str(shipped / "warm-start" / "best_config.yaml")
    assert (shipped / "warm-start" / "best_config.yaml").read_text().startswith("lr: 0.003")
    configs = [json.loads(path.read_text()) for path in experiment.glob("trial_*/params.json")]
    assert len(configs) == 2
    assert all(config["hidden_dim"] == 16 for config in configs)  # the shipped space, not the default one
    assert {(config["lr"], config["batch_size"]) for config in configs} >= {(0.003, 32)}  # the warm start
    assert json.loads((experiment / "summary.json").read_text())["num_trials"] == 2


def test_smoke_preempts_once_and_the_retry_resumes_the_trial(tmp_path: Path) -> None:
    """The smoke test's path on CPU: modal.exception.simulate_preemption interrupts the trial mid-way, the
    call raises, and a second call (Modal's retry) resumes the trial from its last epoch checkpoint."""
    volume = tmp_path / "volume"
    volume.mkdir()
    epochs = 60  # tiny epochs: the preemption is armed only while the trial has twice its wait left
    call = _container_call("smoke_search", "smoke-1", gpus_per_trial=0.0, max_epochs=epochs, storage_path=str(volume))
    first = subprocess.run(call, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    output = first.stdout + first.stderr
    assert first.returncode == 1, _tail(output)
    assert "modal_app.SearchPreempted: the search was stopped by SIGALRM" in output, _tail(output)
    for shown in ("torch.cuda.is_available() = ", "/dev/shm: ", "ray.cluster_resources() = {", "nvidia-smi"):
        assert shown in output
    experiment = volume / "smoke-1"
    assert (experiment / "smoke-preempted").is_file()

    second = subprocess.run(call, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, _tail(second.stdout + second.stderr)
    assert "resuming what an earlier attempt of this call left" in second.stdout
    (result_file,) = experiment.glob("trial_*/result.json")
    reported = [json.loads(line)["epoch"] for line in result_file.read_text().splitlines()]
    assert reported[-1] == epochs
    assert reported.count(1) == 1  # resumed from a checkpoint, not started over


def test_app_and_volume_are_named_after_the_project():
    from nsm.config import PROJECT_NAME

    assert modal_app.APP_NAME == modal_app.DEFAULT_VOLUME == PROJECT_NAME
