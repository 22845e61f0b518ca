"""Run a whole search inside one Modal GPU container, with Ray in it: ``modal run search/modal_app.py``.

    modal run --detach search/modal_app.py --domain planning --num-samples 64 --max-epochs 30 \\
        --gpus-per-trial 0.25 --gpu A100:4

Every flag of ``search/run.py`` is passed through unchanged; this launcher adds only its own:

- ``--gpu``: Modal GPU request, ``A100`` (default), ``A100-80GB``, ``H100``, ... with an optional count
  (``A100:4``: 4 GPUs; at ``--gpus-per-trial 0.25`` Ray runs 16 trials at once).
- ``--volume``: the ``modal.Volume`` holding the results (default ``nsm-search``, created if missing),
  mounted at ``/results`` as the search's ``--storage-path``.
- ``--wandb-secret``: the Modal secret with ``WANDB_API_KEY`` (default ``wandb``). When it exists, W&B
  logs online; otherwise W&B runs offline into the experiment directory on the volume.
- ``--timeout-hours``: the container's time limit. Default: the search's ``--time-budget-s`` plus 30
  minutes for image pull, data generation and the final report, capped at Modal's 24 hours; without a
  budget, 24 hours.

Preemption: the function has retries. A retried call runs on the same input (same experiment name,
fixed here at launch), finds the experiment on the volume (``Tuner.can_restore``) and resumes it with
``--resume``: finished trials are kept, running trials continue from their last epoch checkpoint. The
volume is committed each time Ray has recorded a finished trial in its experiment state, and at the end.

This module stays thin: it builds argv for :func:`search.run.main` and handles the volume, the W&B
secret and the restore decision. Scheduling is Ray's; Modal only provides the machine.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import modal
from ray import tune

APP_NAME = "nsm-search"
DEFAULT_GPU = "A100"
DEFAULT_VOLUME = "nsm-search"
VOLUME_PATH = "/results"
DEFAULT_WANDB_SECRET = "wandb"
MAX_TIMEOUT_S = 24 * 3600  # Modal's upper limit for one function call
SETUP_MARGIN_S = 30 * 60  # image pull + Ray start + data generation + summary, on top of the search budget
MAX_RETRIES = 3
# Fixed delay: a preempted container should come back quickly, the experiment is safe on the volume.
RETRIES = modal.Retries(max_retries=MAX_RETRIES, backoff_coefficient=1.0, initial_delay=10.0)

# Search flags this launcher owns: the storage is the volume and the cluster is the container's own.
_RESERVED_FLAGS = ("--storage-path", "--address")
_VOLUME_ENV = "NSM_MODAL_VOLUME"  # tells the container which volume to commit (set with --volume)

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _image() -> modal.Image:
    """The project's own dependency list plus its packages as local source (nothing kept by hand here)."""
    return (
        modal.Image.debian_slim(python_version="3.11")
        .pip_install_from_pyproject(str(_PROJECT_ROOT / "pyproject.toml"))
        .env({"PYTHONUNBUFFERED": "1"})  # Ray's progress table reaches the Modal logs as it is printed
        .add_local_python_source("nsm", "search", "analysis")
        # spaces/ ships its YAML files next to the loader (default.yaml is the default --space).
        .add_local_python_source("spaces", ignore=~modal.FilePatternMatcher("**/*.py", "**/*.yaml"))
    )


app = modal.App(APP_NAME, image=_image())
volume = modal.Volume.from_name(os.environ.get(_VOLUME_ENV, DEFAULT_VOLUME), create_if_missing=True)


@app.function(gpu=DEFAULT_GPU, volumes={VOLUME_PATH: volume}, timeout=MAX_TIMEOUT_S, retries=RETRIES)
def run_search(search_argv: list[str], storage_path: str = VOLUME_PATH) -> int:
    """Start the search of ``search_argv`` (which names its experiment) or resume it from the volume.

    Returns the search's exit status; a user error (status 2) is returned, not raised, so that Modal
    does not retry it. Any crash or preemption raises and is retried by Modal, which resumes here.
    """
    commit = _noop if modal.is_local() else _commit_volume  # .local(): a plain directory, nothing to commit
    argv = _resume_or_start(search_argv, storage_path)
    print(f"nsm-search on Modal: search/run.py {' '.join(argv)}", flush=True)
    from search.run import main

    try:
        return main(argv, callbacks=[CommitVolume(commit)])
    finally:
        commit()  # summary.json and the last experiment state


@app.local_entrypoint()
def launch(*arglist: str) -> None:
    """``modal run search/modal_app.py [launcher flags] [search/run.py flags]``: see the module docstring."""
    options, search_argv = _parse_launcher_args(list(arglist))
    secret = _existing_secret(options.wandb_secret)
    print(
        f"launching on {options.gpu}, volume {options.volume!r} at {VOLUME_PATH}, "
        f"timeout {options.timeout_s / 3600:.1f} h, W&B {'online' if secret else 'offline (no secret)'}; "
        f"search/run.py {' '.join(search_argv)}"
    )
    function = _configured(run_search, options.gpu, options.timeout_s, options.volume, secret)
    code = function.remote(search_argv)
    print(
        f"done (exit {code}); download: mkdir -p results && modal volume get {options.volume} "
        f"{_flag_value(search_argv, '--resume') or _flag_value(search_argv, '--name')} ./results"
    )
    if code:
        sys.exit(code)


# ------------------------------------------------------------------------------------------------
# Volume commits


class CommitVolume(tune.Callback):
    """Commit the results volume once Ray has recorded a finished trial in its experiment state.

    Committing in ``on_trial_complete`` itself would be too early: Ray marks the trial TERMINATED and
    snapshots ``experiment_state-*.json`` afterwards (every few seconds), and a volume committed
    before that snapshot would re-run the trial after a preemption. So a completion only marks the
    volume dirty; the first loop step that sees a newer snapshot commits.
    """

    def __init__(self, commit: Callable[[], None]) -> None:
        # A module-level function, so that this callback pickles with the Tuner (tuner.pkl).
        self._commit = commit
        self._pending_since: float | None = None
        self._experiment_dir: str | None = None

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._mark(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._mark(trial)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._pending_since is not None and _latest_snapshot_time(self._experiment_dir) > self._pending_since:
            self._pending_since = None
            self._commit()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._pending_since = None
        self._commit()

    def _mark(self, trial: Any) -> None:
        self._experiment_dir = trial.storage.experiment_fs_path
        if self._pending_since is None:
            self._pending_since = time.time()


def _latest_snapshot_time(experiment_dir: str | None) -> float:
    """mtime of the newest complete experiment-state snapshot (0 if none).

    Ray copies the snapshot into the experiment directory in a background thread, so a file being
    written must not count: only one that parses is complete.
    """
    if experiment_dir is None:
        return 0.0
    snapshots = glob.glob(os.path.join(experiment_dir, "experiment_state-*.json"))
    if not snapshots:
        return 0.0
    newest = max(snapshots, key=os.path.getmtime)
    try:
        mtime = os.path.getmtime(newest)
        with open(newest) as file:
            json.load(file)
    except (OSError, ValueError):
        return 0.0
    return mtime


def _commit_volume() -> None:
    try:
        volume.commit()
    except Exception as error:  # a failed commit must not kill the search; the next one catches up
        print(f"warning: volume commit failed: {error}", file=sys.stderr, flush=True)


def _noop() -> None:
    return None


# ------------------------------------------------------------------------------------------------
# argv


def _resume_or_start(search_argv: Sequence[str], storage_path: str) -> list[str]:
    """argv for ``search.run.main``: ``--resume`` when the experiment is already on the volume."""
    name = _flag_value(search_argv, "--resume") or _flag_value(search_argv, "--name")
    if name is None:
        raise ValueError("search argv must name its experiment (--name or --resume); launch() adds --name")
    experiment_dir = os.path.join(storage_path, name)
    if _flag_value(search_argv, "--resume") is None and not tune.Tuner.can_restore(experiment_dir):
        return [*search_argv, "--storage-path", storage_path]
    # A retry (or an explicit --resume): the search's own settings come from search.json.
    return ["--resume", name, "--storage-path", storage_path]


def _parse_launcher_args(arglist: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split the launcher's own flags from the search's; give the experiment a fixed name."""
    parser = argparse.ArgumentParser(prog="modal run search/modal_app.py", allow_abbrev=False)
    parser.add_argument("--gpu", default=DEFAULT_GPU, type=_gpu_spec, help="Modal GPU, e.g. A100, H100, A100:4")
    parser.add_argument("--volume", default=DEFAULT_VOLUME, help="results volume (created if missing)")
    parser.add_argument("--wandb-secret", default=DEFAULT_WANDB_SECRET, help="Modal secret with WANDB_API_KEY")
    parser.add_argument("--timeout-hours", type=float, default=None, help="container time limit (max 24)")
    options, search_argv = parser.parse_known_args(arglist)
    for flag in _RESERVED_FLAGS:
        if _flag_value(search_argv, flag) is not None:
            parser.error(f"{flag} is set by the launcher on Modal (the volume / the container's own Ray)")
    if _flag_value(search_argv, "--domain") == "all":
        # One experiment per call keeps "resume on retry" a single --resume; domains run in parallel anyway.
        parser.error("--domain all: launch one search per domain (each gets its own container)")
    if _flag_value(search_argv, "--resume") is None and _flag_value(search_argv, "--name") is None:
        # Fixed now, so that a retried call of the same input finds (and resumes) the same experiment.
        domain = _flag_value(search_argv, "--domain") or "search"
        search_argv = [*search_argv, "--name", f"{domain}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"]
    options.timeout_s = _timeout_s(options.timeout_hours, _flag_value(search_argv, "--time-budget-s"), parser)
    return options, search_argv


def _timeout_s(timeout_hours: float | None, time_budget_s: str | None, parser: argparse.ArgumentParser) -> int:
    if timeout_hours is not None:
        if not 0 < timeout_hours <= MAX_TIMEOUT_S / 3600:
            parser.error(f"--timeout-hours must be in (0, {MAX_TIMEOUT_S // 3600}]")
        return int(timeout_hours * 3600)
    if time_budget_s is None:
        return MAX_TIMEOUT_S
    try:
        return min(MAX_TIMEOUT_S, int(float(time_budget_s)) + SETUP_MARGIN_S)
    except ValueError:
        parser.error(f"--time-budget-s: not a number: {time_budget_s!r}")
        raise  # unreachable: parser.error exits


def _gpu_spec(value: str) -> str:
    """``TYPE`` or ``TYPE:COUNT`` as Modal takes it; the type itself is checked by Modal."""
    gpu_type, _, count = value.partition(":")
    if not gpu_type or (count and not (count.isdigit() and 1 <= int(count) <= 8)):
        raise argparse.ArgumentTypeError(f"expected a GPU like A100, H100 or A100:4, got {value!r}")
    return value


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in argv (``--flag v`` or ``--flag=v``), or None."""
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


# ------------------------------------------------------------------------------------------------
# Run-time Function options


def _existing_secret(name: str) -> modal.Secret | None:
    """The named secret when it exists in the workspace (needs a Modal client), else None."""
    secret = modal.Secret.from_name(name)
    try:
        secret.hydrate()
    except modal.exception.NotFoundError:
        return None
    return secret


def _configured(
    function: modal.Function, gpu: str, timeout_s: int, volume_name: str, wandb_secret: modal.Secret | None
) -> modal.Function:
    """``function`` with the GPU, timeout, volume and secret chosen at launch (Modal fixes them at
    decoration time otherwise). The secret is optional, so it cannot be declared in the decorator: a
    missing named secret would fail the whole app."""
    # with_options *replaces* secrets, so the volume-name env and the W&B secret go in together.
    secrets = [modal.Secret.from_dict({_VOLUME_ENV: volume_name})]
    if wandb_secret is not None:
        secrets.append(wandb_secret)
    return function.with_options(
        gpu=gpu,
        timeout=timeout_s,
        volumes={VOLUME_PATH: modal.Volume.from_name(volume_name, create_if_missing=True)},
        secrets=secrets,
        retries=RETRIES,
    )
