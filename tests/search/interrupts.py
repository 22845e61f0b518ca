"""Driving the search CLI as a user does and waiting on events: shared by the kill-and-resume tests and
``bench/stress_resume.py``. Nothing here sleeps for a fixed time; every wait polls for an event (a
file, a study state, a snapshot) and only times out to turn a hang into a failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def cli_env() -> dict[str, str]:
    """Environment of a CLI subprocess: the test session's data cache, W&B offline."""
    env = dict(os.environ)
    env["WANDB_MODE"] = "offline"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "search" / "run.py"), *args]


def wait_until(condition: Callable[[], T | None], driver: subprocess.Popen | None, what: str, timeout: float = 300) -> T:
    """Poll ``condition`` (an event: a file, a state) until it returns a value; fail if the driver exits first.

    The timeout only turns a hang into a failure; nothing here depends on how fast the machine is.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver is not None:
            assert driver.poll() is None, f"the search ended before {what}"
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting until {what}")


def finished_trials(experiment_dir: Path) -> set[str]:
    """Ray trial ids of the trials the study in ``experiment_dir`` holds as finished."""
    from search.study import STUDY_FILE, load_study

    if not (experiment_dir / STUDY_FILE).is_file():
        return set()
    try:
        trials = load_study(experiment_dir).trials
    except KeyError:  # the journal file exists, the study is not created in it yet
        return set()
    return {t.user_attrs["ray_trial_id"] for t in trials if t.state.is_finished()}


def wait_for_finished_trials(experiment_dir: Path, driver: subprocess.Popen, timeout: float = 300) -> set[str]:
    """Ray trial ids of the first trials the study in ``experiment_dir`` holds as finished."""
    return wait_until(lambda: finished_trials(experiment_dir), driver, "a trial finished", timeout)


def snapshot_statuses(experiment_dir: Path) -> dict[str, str]:
    """Trial id -> status in Ray's latest experiment snapshot (``experiment_state-*.json``)."""
    statuses: dict[str, str] = {}
    for path in sorted(experiment_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime):
        try:
            state = json.loads(path.read_text())
            for trial_json, _ in state["trial_data"]:
                trial = json.loads(trial_json)
                statuses[trial["trial_id"]] = trial["status"]
        except (OSError, ValueError, KeyError):  # being replaced right now: the next poll reads it
            continue
    return statuses


def recorded_epochs(experiment_dir: Path) -> dict[str, list[int]]:
    """Trial id -> epochs in its result.json, as Ray's logger wrote them so far."""
    from search.result_loggers import recorded_epochs as epochs_of

    return {path.name.removeprefix("trial_"): epochs_of(path) for path in experiment_dir.glob("trial_*") if path.is_dir()}


def kill_group(session: int, timeout: float = 60) -> None:
    """Remove every process an interrupted driver left behind, and wait until they are gone.

    The driver was started with ``start_new_session=True``, so ``session`` (its pid) is the session id
    of everything it started. Ray's worker processes have process groups of their own, so killing
    the driver's group alone left trial workers that went on writing into the experiment for a moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        members = _session_members(session)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert time.monotonic() < deadline, f"processes of session {session} survive SIGKILL: {members}"
        time.sleep(0.1)


def _session_members(session: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``session``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members
