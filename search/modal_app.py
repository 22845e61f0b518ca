"""Run a whole search inside one Modal GPU container, with Ray in it: ``modal run search/modal_app.py``.

    modal run --detach search/modal_app.py --domain planning --num-samples 64 --max-epochs 30 \\
        --gpus-per-trial 0.25 --gpu A100:4
    modal run search/modal_app.py::smoke        # one-minute GPU check for a first real run

Every flag of ``search/run.py`` is passed on; this launcher adds its own (README, "On Modal"):
``--gpu``, ``--volume``, ``--wandb-secret``, ``--timeout-hours``, ``--cpu``, ``--memory-gb``.

What the launcher does on the launching machine (which needs ``modal`` and this checkout, not Ray or
torch): it names the experiment, reads ``--space`` / ``--warm-start`` files and sends their contents
with the call, sets a ``--time-budget-s`` below the container's timeout (so the search always stops
itself and a timeout never triggers a retry), sizes the CPU and memory request to the trials the GPUs
hold, creates the results volume (v2) if it is missing, and starts the call with ``spawn``.

What the container function does: it starts the search, or resumes it when an earlier attempt of the
same call left it on the volume, or starts it again when that attempt stopped before Ray saved anything
to resume (``search.json`` but no ``tuner.pkl``). It runs ``search.run.main`` and turns its exit status
into what Modal acts on: 0 and 2 (a user error) are returned, so Modal does not retry them; a stop by a
preemption signal (130) and a crash are raised, so Modal retries the call, which resumes.

Volume commits: Modal commits a mounted volume in the background while the function runs, and once more
when the container exits (with no reload). This module commits explicitly only once the search has
stopped (Ray shut down, so no trial, logger or W&B file is open), before it returns or raises, so that a
retry, which mounts the last committed state, finds everything. A mid-run ``Volume.commit()`` would
always report a failure: it reloads the volume after committing, and the reload is refused while files
are open, as Ray's result loggers and W&B keep them open under the experiment while trials run.

Nothing from this module is pickled into an experiment: it is imported as a top-level ``modal_app`` on
Modal, a name no laptop resuming the experiment has.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

import modal

APP_NAME = "nsm-search"  # nsm.config.PROJECT_NAME; the launcher imports nothing of the project
DEFAULT_GPU = "A100"
DEFAULT_VOLUME = "nsm-search"
VOLUME_PATH = "/results"
DEFAULT_WANDB_SECRET = "wandb"

MAX_TIMEOUT_S = 24 * 3600  # Modal's upper limit for one function call (one attempt)
# Container start, Ray start, the final report and W&B's last upload, on top of the search's time budget.
SETUP_MARGIN_S = 30 * 60
MAX_RETRIES = 3
ATTEMPTS = 1 + MAX_RETRIES
# Fixed delay: a preempted container should come back quickly, the experiment is safe on the volume.
RETRIES = modal.Retries(max_retries=MAX_RETRIES, backoff_coefficient=1.0, initial_delay=10.0)

# Resources of one container: the trials its GPUs hold at once, each with its CPUs and memory, plus Ray.
DEFAULT_GPUS_PER_TRIAL = 0.25  # search/run.py's default on a GPU cluster
DEFAULT_CPUS_PER_TRIAL = 2.0  # data batching and torch threads of a trial whose model runs on the GPU
TRIAL_MEMORY_MIB = 4 * 1024  # a trial process with torch and a CUDA context, plus its W&B actor and service
HEADROOM_CPUS = 2.0  # the driver (Tune loop, Optuna), Ray's GCS and raylet
HEADROOM_MEMORY_MIB = 8 * 1024  # the same, plus Ray's object store

# The image: the versions this project is tested with (pyproject.toml's dependencies bound them; its dev
# extra, which the tests are installed with, pins these same versions), on the Python
# that pickles the experiment (tuner.pkl, Ray's snapshots, the Optuna journal) read back locally.
PYTHON_VERSION = "3.11"
TORCH_VERSION = "2.13.0"
# torch 2.13.0's Linux wheel is built for CUDA 13.0 (it requires cuda-toolkit 13.0.3): the build whose
# kernels cover every GPU Modal offers (T4's sm_75 up to Blackwell) and whose runtime works on NVIDIA
# drivers from the R580 branch on. PyTorch's index holds exactly that build; change it here (cu128, ...)
# if `modal run search/modal_app.py::smoke` shows an older driver.
TORCH_INDEX_URL = "https://download.pytorch.org/whl/cu130"
PINNED_REQUIREMENTS = (
    "torch-geometric==2.8.1",
    "ray[tune]==2.60.0",
    "optuna==5.1.0",
    "wandb==0.31.0",
    "pandas==3.1.1",
    "numpy==2.4.6",
    "pyyaml==6.0.4",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
    "wandb-workspaces==0.4.13",
)
# `modal` itself is not installed: Modal adds its client to every container, at the launching client's version.
PROJECT_PACKAGES = ("nsm", "search", "spaces", "analysis")
_DOMAIN_GROUPS = ("all", "grail")  # nsm.domains.GROUPS (the launcher imports nothing of the project)
SOURCE_IGNORE = modal.FilePatternMatcher("**/__pycache__", "**/*.pyc", "**/.*")

# Search flags this launcher owns: the storage is the volume and the cluster is the container's own.
_RESERVED_FLAGS = ("--storage-path", "--address")
# Search flags this launcher reads (file flags, the name, the budget, the resources it sizes for). run.py
# accepts abbreviations of its flags; an abbreviation of one of these would slip past the launcher.
_READ_FLAGS = ("--space", "--warm-start", "--name", "--resume", "--domain", "--time-budget-s",
               "--gpus-per-trial", "--cpus-per-trial", "--max-concurrent", "--num-samples", *_RESERVED_FLAGS)
FILE_FLAGS = ("--space", "--warm-start")  # files on the launching machine, shipped with the call

LAUNCH_DIR = ".launches"  # on the volume: <name>/launch_id (which call owns the name) and the shipped files
_LAUNCH_ID_FILE = "launch_id"

# search.run.main's documented exit statuses.
_EXIT_OK, _EXIT_USAGE, _EXIT_INTERRUPTED = 0, 2, 130
# Modal preempts with SIGINT (SIGKILL 30 s later); SIGTERM stops the search the same way;
# modal.exception.simulate_preemption interrupts through SIGALRM.
PREEMPTION_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGALRM})

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SearchPreempted(Exception):
    """The search was stopped by a preemption signal; raised so that Modal retries (and resumes) the call."""


def _image() -> modal.Image:
    """Pinned dependencies, torch from the CUDA wheel index, and this checkout's packages as source."""
    image = (
        modal.Image.debian_slim(python_version=PYTHON_VERSION)
        .pip_install(f"torch=={TORCH_VERSION}", index_url=TORCH_INDEX_URL)
        .pip_install(*PINNED_REQUIREMENTS)
        .env({"PYTHONUNBUFFERED": "1"})  # Ray's progress table reaches the Modal logs as it is printed
    )
    # The packages next to this file, whichever checkout is installed in the launching environment, with
    # their data files (spaces/default.yaml is the default --space) and without bytecode or hidden files.
    for package in PROJECT_PACKAGES:
        image = image.add_local_dir(_PROJECT_ROOT / package, f"/root/{package}", ignore=SOURCE_IGNORE)
    return image



def _resources(gpu_count: int, gpus_per_trial: float, cpus_per_trial: float,
               max_concurrent: int | None = None, num_samples: int | None = None) -> tuple[float, int, int]:
    """(CPUs, memory in MiB, trials at once) for a container with ``gpu_count`` GPUs."""
    trials = math.floor(gpu_count / gpus_per_trial + 1e-9) if gpus_per_trial > 0 else (max_concurrent or 1)
    for cap in (max_concurrent, num_samples):
        if cap is not None:
            trials = min(trials, cap)
    trials = max(trials, 1)
    return trials * cpus_per_trial + HEADROOM_CPUS, trials * TRIAL_MEMORY_MIB + HEADROOM_MEMORY_MIB, trials


_DEFAULT_CPU, _DEFAULT_MEMORY_MIB, _ = _resources(1, DEFAULT_GPUS_PER_TRIAL, DEFAULT_CPUS_PER_TRIAL)

app = modal.App(APP_NAME, image=_image())


# No volume in the declarations: a declared volume is looked up (and created) whenever the app runs,
# whatever --volume says. The launcher and the smoke attach theirs with `with_options`.
@app.function(gpu=DEFAULT_GPU, cpu=_DEFAULT_CPU, memory=_DEFAULT_MEMORY_MIB, timeout=MAX_TIMEOUT_S,
              retries=RETRIES, single_use_containers=True)
def run_search(search_argv: list[str], launch_id: str = "", volume_name: str = DEFAULT_VOLUME,
               timeout_s: int = MAX_TIMEOUT_S, files: dict[str, tuple[str, bytes]] | None = None,
               storage_path: str = VOLUME_PATH) -> int:
    """Start the search of ``search_argv`` on the volume, or resume it on a retry of the same call.

    ``launch_id`` identifies the call across its attempts; ``files`` maps a file flag to the file's name
    and contents, read on the launching machine. Returns 0, or 2 for a user error (not retried); raises
    on a preemption or a crash, so that Modal retries the call.
    """
    if not modal.is_local():
        problem = _cuda_problem()
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return _EXIT_USAGE
    return _run_in_container(search_argv, launch_id=launch_id, volume=modal.Volume.from_name(volume_name),
                             timeout_s=timeout_s, files=files or {}, storage_path=storage_path)


@app.local_entrypoint()
def launch(*arglist: str) -> None:
    """``modal run search/modal_app.py [launcher flags] [search/run.py flags]``: see the README."""
    options, search_argv, files = _parse_launcher_args(list(arglist))
    _warn_about_version_drift()
    _ensure_volume(options.volume)
    secret = _existing_secret(options.wandb_secret)
    function = _configured(run_search, options.gpu, options.timeout_s, options.volume, secret,
                           cpu=options.cpu, memory_mib=options.memory_mib)
    hours = options.timeout_s / 3600
    print(
        f"launching on {options.gpu} with {options.cpu:g} CPUs and {options.memory_mib / 1024:g} GiB "
        f"({options.trials} trials at once), volume {options.volume!r} at {VOLUME_PATH}, W&B "
        f"{'online' if secret else 'offline (no secret)'}; timeout {hours:.2f} h per attempt, at most "
        f"{ATTEMPTS} attempts: worst case {ATTEMPTS * hours * options.gpu_count:.1f} GPU-hours\n"
        f"search/run.py {shlex.join(search_argv)}"
    )
    call = function.spawn(search_argv, launch_id=uuid.uuid4().hex, volume_name=options.volume,
                          timeout_s=options.timeout_s, files=files)
    name = _flag_value(search_argv, "--resume") or _flag_value(search_argv, "--name")
    print(_follow_instructions(call.object_id, app.app_id, options.volume, name))
    code = call.get()
    print(f"done (exit {code})")
    if code:
        sys.exit(code)


# ------------------------------------------------------------------------------------------------
# Inside the container


def _run_in_container(search_argv: Sequence[str], *, launch_id: str, volume: modal.Volume, timeout_s: int,
                      files: dict[str, tuple[str, bytes]], storage_path: str,
                      callbacks: Sequence[object] = (), setup_margin_s: int = SETUP_MARGIN_S) -> int:
    """The search on the volume; the exit-status decision of :func:`run_search` (see the module docstring)."""
    from search.run import main  # Ray and torch: the container's, never the launching machine's

    name = _flag_value(search_argv, "--resume") or _flag_value(search_argv, "--name")
    if name is not None and not _is_plain_name(name):  # before any path is built from it
        print(f"error: experiment name {name!r}: must be a plain directory name", file=sys.stderr)
        return _EXIT_USAGE
    argv = _container_argv(search_argv, launch_id, files, storage_path)
    problem = _budget_problem(argv, storage_path, timeout_s, setup_margin_s)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        _release_name(search_argv, launch_id, storage_path)
        return _EXIT_USAGE
    print(f"nsm-search on Modal: search/run.py {shlex.join(argv)}", flush=True)
    from search import driver_lock

    # A retry can start while the lock of the preempted container (SIGKILLed before it could let go)
    # is still fresh: wait for it to go stale rather than refuse the experiment, which ends the call.
    os.environ.setdefault(driver_lock.WAIT_ENV, str(driver_lock.STALE_AFTER_S + 2 * driver_lock.HEARTBEAT_S))
    try:
        with _signals_received() as received:
            try:
                code = main(argv, callbacks=list(callbacks))
            except SystemExit as error:  # argparse's own exit on a bad flag
                code = error.code if isinstance(error.code, int) else _EXIT_USAGE
        if code == _EXIT_USAGE:
            _release_name(search_argv, launch_id, storage_path)
    finally:
        _commit_volume(volume)  # after a crash too: what the retry resumes from
    preempted_by = sorted(signal.Signals(number).name for number in received & PREEMPTION_SIGNALS)
    if code == _EXIT_INTERRUPTED and preempted_by:
        raise SearchPreempted(
            f"the search was stopped by {', '.join(preempted_by)} (a preemption): Modal retries this call, "
            "which resumes the experiment from the volume")
    return code


def _container_argv(search_argv: Sequence[str], launch_id: str, files: dict[str, tuple[str, bytes]],
                    storage_path: str) -> list[str]:
    """argv for ``search.run.main``: start, resume an earlier attempt's experiment, or start again.

    An experiment is this call's own when ``<volume>/.launches/<name>/launch_id`` holds ``launch_id``,
    written before the search starts. A name that an earlier, other launch used is left alone: the
    search then refuses it as it refuses any existing name.
    """
    if _flag_value(search_argv, "--resume") is not None:  # the user's explicit --resume
        return [*search_argv, "--storage-path", storage_path]
    name = _flag_value(search_argv, "--name")
    if name is None:
        raise ValueError("search argv must name its experiment (--name or --resume); the launcher adds --name")
    experiment = Path(storage_path, name)
    launch_dir = Path(storage_path, LAUNCH_DIR, name)
    owner = launch_dir / _LAUNCH_ID_FILE
    ours = bool(launch_id) and owner.is_file() and owner.read_text().strip() == launch_id
    if ours:
        from ray.tune import Tuner

        if Tuner.can_restore(str(experiment)):
            print(f"{name}: resuming what an earlier attempt of this call left on the volume", flush=True)
            return ["--resume", name, "--storage-path", storage_path]
        if experiment.exists():
            print(f"{name}: an earlier attempt of this call stopped before Ray saved anything to resume; "
                  "starting the search again", flush=True)
            shutil.rmtree(experiment)
    elif experiment.exists():
        return [*search_argv, "--storage-path", storage_path]
    else:
        launch_dir.mkdir(parents=True, exist_ok=True)
        owner.write_text(launch_id + "\n")
    argv = list(search_argv)
    for flag, (filename, content) in files.items():
        path = launch_dir / flag.lstrip("-") / Path(filename).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        argv = _with_flag(argv, flag, str(path))
    return [*argv, "--storage-path", storage_path]


def _release_name(search_argv: Sequence[str], launch_id: str, storage_path: str) -> None:
    """After a user error, drop this call's claim on a name whose search never started (nothing half-written)."""
    name = _flag_value(search_argv, "--name")
    if name is None or _flag_value(search_argv, "--resume") is not None or Path(storage_path, name).exists():
        return
    launch_dir = Path(storage_path, LAUNCH_DIR, name)
    owner = launch_dir / _LAUNCH_ID_FILE
    if launch_id and owner.is_file() and owner.read_text().strip() == launch_id:
        shutil.rmtree(launch_dir)
        with contextlib.suppress(OSError):  # only when no other launch is recorded there
            launch_dir.parent.rmdir()


def _is_plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and Path(name).name == name and "\\" not in name


def _budget_problem(argv: Sequence[str], storage_path: str, timeout_s: int,
                    setup_margin_s: int = SETUP_MARGIN_S) -> str | None:
    """Why the search could outlive the container (Modal would retry the timeout), or None."""
    limit = timeout_s - setup_margin_s
    resume = _flag_value(argv, "--resume")
    if resume is not None:
        from search.settings import SETTINGS_FILE, SearchSettings

        location = os.path.join(storage_path, resume)
        if not os.path.isfile(os.path.join(location, SETTINGS_FILE)):
            return None  # not a search: search/run.py says so
        budget = SearchSettings.load(location).time_budget_s
        subject = f"--resume {resume}: the experiment's time budget"
    else:
        raw = _flag_value(argv, "--time-budget-s")
        try:
            budget = None if raw is None else float(raw)
        except ValueError:
            return None  # not a number: search/run.py says so
        subject = "--time-budget-s"
    if budget is None:
        return f"{subject} is not set: on Modal a search must stop itself within {limit} s (the launcher sets one)"
    if budget > limit:
        return (f"{subject} ({budget:g} s) does not fit this container's timeout ({timeout_s} s) less "
                f"{setup_margin_s} s for setup: at most {limit} s (or a longer --timeout-hours)")
    return None


@contextlib.contextmanager
def _signals_received() -> Iterator[set[int]]:
    """The numbers of the signals delivered to this process while the block runs (filled in at its end).

    ``signal.set_wakeup_fd``: the interpreter writes every signal's number to the descriptor, whichever
    Python handler then runs (Ray Tune replaces the SIGINT handler while it runs and stops gracefully).
    Only the main thread may set it, where Modal runs a synchronous function; elsewhere a 130 is taken
    for a preemption (a retry resumes the search, at worst for nothing).
    """
    received: set[int] = set()
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    try:
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        os.close(read_fd)
        os.close(write_fd)
        received.update(PREEMPTION_SIGNALS)
        yield received
        return
    try:
        yield received
    finally:
        signal.set_wakeup_fd(previous)
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_fd, 4096):
                received.update(chunk)
        os.close(read_fd)
        os.close(write_fd)


def _commit_volume(volume: modal.Volume) -> None:
    """Commit the results volume, at a point where the search has stopped (no file open under it)."""
    if modal.is_local():  # .local(): a plain directory, nothing to commit
        return
    try:
        volume.commit()
    except Exception as error:  # Modal commits again when the container exits
        print(f"warning: volume commit failed ({error}); Modal commits the volume when the container exits",
              file=sys.stderr, flush=True)


def _cuda_problem() -> str | None:
    """Why the GPUs of this container are not usable by torch, or None."""
    import torch

    if torch.cuda.device_count() > 0:
        return None
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU in this GPU container: its "
            f"wheel index {TORCH_INDEX_URL} needs a newer NVIDIA driver than this host's (see nvidia-smi in "
            "`modal run search/modal_app.py::smoke`)")


# ------------------------------------------------------------------------------------------------
# The GPU smoke test: `modal run search/modal_app.py::smoke`

SMOKE_GPUS_PER_TRIAL = 1.0
SMOKE_EPOCHS = 100  # tiny epochs: long enough that the simulated preemption lands in the middle
SMOKE_TIMEOUT_S = 15 * 60
SMOKE_SETUP_MARGIN_S = 10 * 60  # the search itself takes about a minute; its budget is the rest
SMOKE_SPACE = """\
default:
  lr: {type: loguniform, low: 1.0e-4, high: 3.0e-2}
  cycle_weight: {type: loguniform, low: 1.0e-3, high: 0.3}
  batch_size: {type: choice, values: [16, 32, 64]}
  hidden_dim: 16
  num_bases: 4
  num_graphs: 160
  save_every: 0
"""


@app.function(gpu=DEFAULT_GPU, cpu=4.0, memory=16 * 1024, timeout=SMOKE_TIMEOUT_S, single_use_containers=True,
              retries=modal.Retries(max_retries=1, backoff_coefficient=1.0, initial_delay=1.0))
def smoke_search(name: str, volume_id: str = "", gpus_per_trial: float = SMOKE_GPUS_PER_TRIAL,
                 max_epochs: int = SMOKE_EPOCHS, storage_path: str = VOLUME_PATH) -> int:
    """One tiny trial on the GPU, preempted once (``simulate_preemption``) and resumed by Modal's retry."""
    from search.modal_smoke import PreemptOnce, was_preempted

    _print_container_report()
    if gpus_per_trial > 0:
        problem = _cuda_problem()
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return _EXIT_USAGE
    argv = ["--domain", "planning", "--name", name, "--space", "smoke.yaml", "--num-samples", "1",
            "--max-epochs", str(max_epochs), "--scheduler", "none", "--gpus-per-trial", f"{gpus_per_trial:g}",
            "--cpus-per-trial", "1", "--wandb", "disabled",
            "--time-budget-s", str(SMOKE_TIMEOUT_S - SMOKE_SETUP_MARGIN_S)]
    try:
        code = _run_in_container(argv, launch_id=name, volume=modal.Volume.from_id(volume_id), timeout_s=SMOKE_TIMEOUT_S,
                                 files={"--space": ("smoke.yaml", SMOKE_SPACE.encode())},
                                 storage_path=storage_path, callbacks=[PreemptOnce()],
                                 setup_margin_s=SMOKE_SETUP_MARGIN_S)
        if code == _EXIT_OK and not was_preempted(Path(storage_path, name)):
            print(f"error: the trial ended before a preemption could be simulated in it: raise max_epochs "
                  f"({max_epochs})", file=sys.stderr)
            return _EXIT_USAGE
        return code
    finally:
        # simulate_preemption re-arms its alarm for the "SIGKILL" 30 s later: not in this attempt's clean-up.
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


@app.function(timeout=2 * SMOKE_TIMEOUT_S + 5 * 60)
def smoke(gpu: str = DEFAULT_GPU) -> None:
    """``modal run search/modal_app.py::smoke [--gpu H100]``: the stack on a real GPU, in about a minute.

    Prints ``nvidia-smi``, torch's view of CUDA, ``/dev/shm`` and ``ray.cluster_resources()``, then runs
    one tiny trial on the GPU that is preempted once mid-trial (``modal.exception.simulate_preemption``):
    the call raises, Modal retries it in a fresh container, and the retry resumes the trial from its last
    epoch checkpoint. The experiment lives on an ephemeral v2 volume, gone afterwards.
    """
    name = f"smoke-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    with modal.Volume.ephemeral(version=2) as scratch:
        trial = smoke_search.with_options(gpu=gpu, volumes={VOLUME_PATH: scratch})
        code = trial.remote(name, volume_id=scratch.object_id)
        print(f"smoke {'passed' if code == 0 else f'failed (exit {code})'}: {name} on {gpu}")
        if code:
            raise RuntimeError(f"smoke test failed with exit {code}; its log is above")


def _print_container_report() -> None:
    """What the container gives the search: GPUs and driver, torch's CUDA, shared memory, Ray's resources."""
    import ray
    import torch

    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60)
        print(smi.stdout or smi.stderr, flush=True)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"nvidia-smi: {error}", flush=True)
    devices = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}): torch.cuda.is_available() = "
          f"{torch.cuda.is_available()}, devices {devices}")
    print(f"/dev/shm: {shutil.disk_usage('/dev/shm').total / 2**30:.1f} GiB (Ray's object store)")
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    try:
        print(f"ray.cluster_resources() = {ray.cluster_resources()}", flush=True)
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------------------------------
# Launcher argv


def _parse_launcher_args(arglist: list[str]) -> tuple[argparse.Namespace, list[str], dict[str, tuple[str, bytes]]]:
    """Launcher options, the search's argv (named, with its budget and per-trial resources), shipped files."""
    parser = argparse.ArgumentParser(prog="modal run search/modal_app.py", allow_abbrev=False)
    parser.add_argument("--gpu", default=DEFAULT_GPU, type=_gpu_spec, help="Modal GPU, e.g. A100, H100, A100:4")
    parser.add_argument("--volume", default=DEFAULT_VOLUME, help="results volume (created as a v2 volume if missing)")
    parser.add_argument("--wandb-secret", default=DEFAULT_WANDB_SECRET, help="Modal secret with WANDB_API_KEY")
    parser.add_argument("--timeout-hours", type=float, default=None, help="container time limit per attempt (max 24)")
    parser.add_argument("--cpu", type=_positive_float, default=None, help="CPU request (default: sized to the trials)")
    parser.add_argument("--memory-gb", type=_positive_float, default=None,
                        help="memory request in GiB (default: sized to the trials)")
    options, search_argv = parser.parse_known_args(arglist)
    for arg in search_argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in _READ_FLAGS and any(f.startswith(flag) for f in _READ_FLAGS):
            parser.error(f"{flag}: write the flag in full (the launcher reads it)")
    for flag in _RESERVED_FLAGS:
        if _flag_value(search_argv, flag) is not None:
            parser.error(f"{flag} is set by the launcher on Modal (the volume / the container's own Ray)")
    if (_flag_value(search_argv, "--domain") or "").lower() in _DOMAIN_GROUPS:
        # One experiment per call keeps "resume on retry" a single --resume; domains run in parallel anyway.
        parser.error(f"--domain {_flag_value(search_argv, '--domain')}: launch one search per domain (each gets its own container)")
    resume = _flag_value(search_argv, "--resume")
    for flag in ("--name", "--resume"):
        value = _flag_value(search_argv, flag)
        if value is not None and not _is_plain_name(value):
            parser.error(f"{flag} {value!r}: an experiment name is a plain directory name")
    numbers = {flag: _number(parser, search_argv, flag)
               for flag in ("--time-budget-s", "--gpus-per-trial", "--cpus-per-trial", "--max-concurrent", "--num-samples")}
    options.timeout_s, budget_s = _timeout_and_budget(parser, options.timeout_hours, numbers["--time-budget-s"],
                                                      resume is not None)
    files: dict[str, tuple[str, bytes]] = {}
    if resume is None:
        if _flag_value(search_argv, "--name") is None:
            # Fixed now, so that every attempt of this call works on the same experiment.
            domain = _flag_value(search_argv, "--domain") or "search"
            search_argv = [*search_argv, "--name", f"{domain}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"]
        if numbers["--time-budget-s"] is None:
            search_argv = [*search_argv, "--time-budget-s", f"{budget_s:g}"]
        files = _read_files(parser, search_argv)
    for flag, default in (("--gpus-per-trial", DEFAULT_GPUS_PER_TRIAL), ("--cpus-per-trial", DEFAULT_CPUS_PER_TRIAL)):
        if numbers[flag] is None:
            numbers[flag] = default
            if resume is None:  # Ray's per-trial resources are the ones the container is sized for
                search_argv = [*search_argv, flag, f"{default:g}"]
    options.gpu_count = _gpu_count(options.gpu)
    caps = [None if numbers[flag] is None else int(numbers[flag]) for flag in ("--max-concurrent", "--num-samples")]
    cpu, memory_mib, options.trials = _resources(options.gpu_count, numbers["--gpus-per-trial"],
                                                 numbers["--cpus-per-trial"], *caps)
    options.cpu = options.cpu if options.cpu is not None else cpu
    options.memory_mib = int(options.memory_gb * 1024) if options.memory_gb is not None else memory_mib
    return options, search_argv, files


def _timeout_and_budget(parser: argparse.ArgumentParser, timeout_hours: float | None, budget_s: float | None,
                        resume: bool) -> tuple[int, float]:
    """The container's timeout and the search's time budget, which always leaves SETUP_MARGIN_S for setup.

    A resumed search keeps its stored budget (the container checks that it fits the timeout).
    """
    if timeout_hours is not None:
        if not SETUP_MARGIN_S / 3600 < timeout_hours <= MAX_TIMEOUT_S / 3600:
            parser.error(f"--timeout-hours must be more than {SETUP_MARGIN_S / 3600:g} (setup) and at most "
                         f"{MAX_TIMEOUT_S // 3600}")
        timeout_s = int(timeout_hours * 3600)
    elif budget_s is not None and not resume:
        timeout_s = min(MAX_TIMEOUT_S, math.ceil(budget_s) + SETUP_MARGIN_S)
    else:
        timeout_s = MAX_TIMEOUT_S
    limit = timeout_s - SETUP_MARGIN_S
    if budget_s is None:
        return timeout_s, float(limit)
    if not 0 < budget_s <= limit:
        parser.error(f"--time-budget-s {budget_s:g}: must be positive and leave {SETUP_MARGIN_S // 60} minutes of "
                     f"the {timeout_s / 3600:g}-hour container timeout for setup (at most {limit})")
    return timeout_s, budget_s


def _read_files(parser: argparse.ArgumentParser, search_argv: Sequence[str]) -> dict[str, tuple[str, bytes]]:
    """The files that file flags name on this machine, by flag: (file name, contents)."""
    files = {}
    for flag in FILE_FLAGS:
        value = _flag_value(search_argv, flag)
        if value is None:
            continue
        path = Path(value).expanduser()
        try:
            files[flag] = (path.name, path.read_bytes())
        except OSError as error:
            parser.error(f"{flag} {value}: {error.strerror or error}")
    return files


def _number(parser: argparse.ArgumentParser, argv: Sequence[str], flag: str) -> float | None:
    value = _flag_value(argv, flag)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parser.error(f"{flag}: not a number: {value!r}")
        raise  # unreachable: parser.error exits


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def _gpu_spec(value: str) -> str:
    """``TYPE`` or ``TYPE:COUNT`` as Modal takes it; the type itself is checked by Modal."""
    gpu_type, _, count = value.partition(":")
    if not gpu_type or (count and not (count.isdigit() and 1 <= int(count) <= 8)):
        raise argparse.ArgumentTypeError(f"expected a GPU like A100, H100 or A100:4, got {value!r}")
    return value


def _gpu_count(gpu: str) -> int:
    _, _, count = gpu.partition(":")
    return int(count) if count else 1


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in argv (``--flag v`` or ``--flag=v``), or None."""
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _with_flag(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """argv with the value of ``flag`` replaced (in either form), or the flag appended."""
    result = list(argv)
    for index, arg in enumerate(result):
        if arg == flag and index + 1 < len(result):
            result[index + 1] = value
            return result
        if arg.startswith(flag + "="):
            result[index] = f"{flag}={value}"
            return result
    return [*result, flag, value]


def _follow_instructions(call_id: str, app_id: str | None, volume: str, name: str | None) -> str:
    app_ref = app_id or "<app id>"
    return "\n".join([
        f"started call {call_id}; it keeps running (and Modal retries it) after this terminal closes when "
        "launched with `modal run --detach`",
        f"  follow:   modal app logs {app_ref} --follow   (or https://modal.com/id/{app_ref})",
        f"  result:   python -c \"import modal; print(modal.FunctionCall.from_id('{call_id}').get())\"",
        f"  download: mkdir -p results && modal volume get {volume} {name} ./results",
    ])


# ------------------------------------------------------------------------------------------------
# Run-time Function options (need a Modal client)


def _ensure_volume(name: str) -> None:
    """Create the results volume as a v2 volume when it does not exist; an existing one is used as it is."""
    try:
        modal.Volume.from_name(name).hydrate()
    except modal.exception.NotFoundError:
        print(f"creating volume {name!r} (v2)")
        modal.Volume.objects.create(name, version=2, allow_existing=True)


def _existing_secret(name: str) -> modal.Secret | None:
    """The named secret when it exists in the workspace, else None."""
    secret = modal.Secret.from_name(name)
    try:
        secret.hydrate()
    except modal.exception.NotFoundError:
        return None
    return secret


def _configured(function: modal.Function, gpu: str, timeout_s: int, volume_name: str,
                wandb_secret: modal.Secret | None, *, cpu: float, memory_mib: int) -> modal.Function:
    """``function`` with the GPU, resources, timeout, volume and secret chosen at launch.

    The secret is optional, so it cannot be declared in the decorator: a missing named secret would fail
    the whole app. (``with_options`` replaces secrets and volumes rather than adding to them.)
    """
    return function.with_options(
        gpu=gpu,
        cpu=cpu,
        memory=memory_mib,
        timeout=timeout_s,
        volumes={VOLUME_PATH: modal.Volume.from_name(volume_name)},
        secrets=[wandb_secret] if wandb_secret is not None else [],
        retries=RETRIES,
    )


def _warn_about_version_drift() -> None:
    """Experiments are pickles of the image's Ray and torch: say when this machine reads them with others."""
    pins = {"ray": _pinned_version("ray"), "torch": TORCH_VERSION}
    for package, pinned in pins.items():
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
        if installed.split("+")[0] != pinned:
            print(f"note: this machine has {package} {installed}, the image {pinned}: read the experiment "
                  f"back with {package}=={pinned}")


def _pinned_version(package: str) -> str:
    for requirement in PINNED_REQUIREMENTS:
        name, _, version = requirement.partition("==")
        if name.split("[")[0] == package:
            return version
    raise KeyError(package)
