"""One driver per experiment: a lock file in the experiment, held while a driver runs it.

Two drivers on one experiment (``--resume NAME`` in a second terminal, a Modal retry while the first
container still runs) would both write the Optuna journal and Ray's experiment state. The driver
therefore holds ``driver.lock`` in the experiment's location (a directory, shared storage, or a
bucket) from before its first write until it exits. The file names the holder (host, pid, start
time) and carries a heartbeat the holder refreshes every :data:`HEARTBEAT_S` seconds.

A lock is stale, and is taken over with a note, when its holder is gone: on the same machine, its
process no longer exists; from another machine, its heartbeat is older than :data:`STALE_AFTER_S`
(this assumes clocks agree to well within that). A SIGKILLed driver leaves exactly such a lock.

On a local or shared file system the lock is created atomically (``O_CREAT | O_EXCL``). An object
store has no such primitive through pyarrow: the lock is written, then read back after a pause, and
the driver whose token is there holds it; two drivers started within that pause of each other
cannot both pass, but one of them may fail with a message naming the other.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from search import storage
from search.errors import SearchError

LOCK_FILE = "driver.lock"
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
_READ_BACK_PAUSE_S = 1.0  # object stores: how long a competing writer has to show up


@dataclass(frozen=True)
class LockHolder:
    """The driver that holds (or held) an experiment's lock."""

    host: str
    pid: int
    machine: str  # host + kernel boot id: a pid is only meaningful on the same machine
    process_start: str  # the pid's start time on its machine, so a reused pid is not mistaken for it
    started_at: float
    heartbeat_at: float
    token: str

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        return f"pid {self.pid} on host {self.host}, running since {since}"

    def is_alive(self, now: float | None = None) -> bool:
        if self.machine == _machine_id():
            return _process_start(self.pid) == self.process_start != ""
        return (now if now is not None else time.time()) - self.heartbeat_at < STALE_AFTER_S


WAIT_ENV = "NSM_SEARCH_LOCK_WAIT_S"
"""Seconds a driver waits for a live lock to be released or go stale before giving up (default 0).

Set by the Modal launcher: a retried container may start while the lock of the preempted one, killed
without releasing it, is still fresh."""


def running_driver(location: str) -> LockHolder | None:
    """The live driver that holds the experiment at ``location``, or None (no lock, or a stale one)."""
    holder = _read(location)
    return holder if holder is not None and holder.is_alive() else None


def check_free(location: str, name: str, wait_s: float | None = None) -> None:
    """Raise the one-line "in use" error if a live driver holds the experiment, after waiting up to
    ``wait_s`` seconds (default: ``$NSM_SEARCH_LOCK_WAIT_S``, else 0) for it to let go or go stale."""
    if wait_s is None:
        wait_s = float(os.environ.get(WAIT_ENV) or 0)
    deadline = time.monotonic() + wait_s
    while True:
        holder = running_driver(location)
        if holder is None:
            return
        if time.monotonic() >= deadline:
            raise in_use_error(name, holder)
        time.sleep(min(HEARTBEAT_S, max(0.1, deadline - time.monotonic())))


def in_use_error(name: str, holder: LockHolder) -> SearchError:
    return SearchError(f"experiment {name!r} is being run by another driver ({holder.describe()}); "
                       f"wait for it to finish or stop it first")


class ExperimentLock:
    """The lock of one experiment; ``acquire`` before the driver's first write, ``release`` at exit."""

    def __init__(self, location: str, name: str) -> None:
        self.location = location
        self.name = name
        self._holder: LockHolder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a stale lock was taken over. Raises SearchError when held."""
        now = time.time()
        mine = LockHolder(host=socket.gethostname(), pid=os.getpid(), machine=_machine_id(),
                          process_start=_process_start(os.getpid()), started_at=now, heartbeat_at=now,
                          token=uuid.uuid4().hex)
        previous = _read(self.location)
        if previous is not None and previous.is_alive(now):
            raise in_use_error(self.name, previous)
        if storage.is_uri(self.location):
            self._acquire_on_object_store(mine)
        else:
            self._acquire_on_file_system(mine, stale=previous)
        self._holder = mine
        self._thread = threading.Thread(target=self._beat, name="nsm-search-lock-heartbeat", daemon=True)
        self._thread.start()
        if previous is None:
            return None
        return f"note: took over the lock of a driver that is no longer running ({previous.describe()})"

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder, self._holder = self._holder, None
        if holder is not None:
            current = _read(self.location)
            if current is not None and current.token == holder.token:
                storage.delete(self.location, LOCK_FILE)

    def __enter__(self) -> ExperimentLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals --------------------------------------------------------------------------------

    def _acquire_on_file_system(self, mine: LockHolder, stale: LockHolder | None) -> None:
        path = Path(self.location) / LOCK_FILE
        if stale is not None:
            # Move the stale lock aside: of two drivers taking it over at once, one rename succeeds.
            try:
                os.rename(path, path.with_name(f".{LOCK_FILE}.{mine.token}.stale"))
            except FileNotFoundError:
                pass
            else:
                path.with_name(f".{LOCK_FILE}.{mine.token}.stale").unlink(missing_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(self.location)
            if holder is not None:
                raise in_use_error(self.name, holder) from None
            raise SearchError(f"experiment {self.name!r} is being started by another driver right now") from None
        with os.fdopen(fd, "w") as file:
            file.write(_encode(mine))

    def _acquire_on_object_store(self, mine: LockHolder) -> None:
        storage.write_text(self.location, LOCK_FILE, _encode(mine))
        time.sleep(_READ_BACK_PAUSE_S)
        current = _read(self.location)
        if current is None or current.token != mine.token:
            if current is not None:
                raise in_use_error(self.name, current)
            raise SearchError(f"experiment {self.name!r}: the driver lock at {self.location} could not be written")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            holder = self._holder
            if holder is None:
                return
            try:
                current = _read(self.location)
                if current is None or current.token != holder.token:
                    print(f"warning: another driver took over experiment {self.name!r}; this driver no longer holds it")
                    return
                self._holder = beat = LockHolder(**{**asdict(holder), "heartbeat_at": time.time()})
                storage.write_text(self.location, LOCK_FILE, _encode(beat))
            except (OSError, SearchError):
                continue  # a storage hiccup; the next beat tries again well within STALE_AFTER_S


def _encode(holder: LockHolder) -> str:
    return json.dumps(asdict(holder), indent=2) + "\n"


def _read(location: str) -> LockHolder | None:
    try:
        if not storage.is_file(location, LOCK_FILE):
            return None
        values: Any = json.loads(storage.read_text(location, LOCK_FILE))
        return LockHolder(**values)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        # A torn or foreign lock file: treat it as a lock of a driver that is gone.
        return LockHolder(host="unknown", pid=0, machine="", process_start="", started_at=0.0,
                          heartbeat_at=0.0, token="")


def _machine_id() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot), or "" when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after the command name
        return "" if fields[0] in ("Z", "X") else fields[19]  # a zombie is gone; field 19 here is starttime
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass
    return "alive"  # no /proc (macOS): the pid exists; reuse cannot be told apart
