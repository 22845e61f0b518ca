"""Stress the exactly-once guarantee: interrupt a search N times per kind of interruption; prints a table.

Kinds:
- ``sigterm``: SIGTERM to the driver right after Ray logged a running trial's epoch, then ``--resume``;
- ``sigkill``: SIGKILL to the driver at the same moment, then ``--resume``;
- ``trial``: SIGKILL to a running trial's process (Ray retries it from its last checkpoint), no resume;
- ``s3``: SIGTERM (preemption) of a search on an S3 bucket (a local moto server), the local mirror
  wiped as on a new machine, then ``--resume`` from the bucket.

Columns, each the total over the N runs of a kind (target: 0 everywhere):
- not interrupted: runs whose search ended before the interruption point (they test nothing);
- trials lost: trials of the budget that did not end completed or pruned after the last driver;
- epochs duplicated: epoch records beyond the first, in result.json, progress.csv,
  training_history.json, plus Optuna trials held twice and W&B runs with repeated steps;
- runs unfinished: trials' W&B runs whose last run file has no exit record (see the README for what
  a SIGKILLed driver loses), plus trials left unfinished;
- drivers hung: drivers that did not exit within the timeout after the signal (or after resuming).

    python bench/stress_resume.py                      # N = 20 of each kind (about 2-3 hours on 2 cores)
    python bench/stress_resume.py --runs 2 --kinds sigterm trial
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))  # tests.search.interrupts: the tests' own event waits

from analysis.audit import audit_experiment  # noqa: E402
from search.wandb_offline import offline_runs, read_wandb_records  # noqa: E402
from search import storage  # noqa: E402
from tests.search.interrupts import (  # noqa: E402
    cli,
    cli_env,
    finished_trials,
    kill_group,
    recorded_epochs,
    wait_until,
)

KINDS = ("sigterm", "sigkill", "trial", "s3")
SAMPLES, EPOCHS = 4, 4
TIMEOUT_S = 600
SPACE = """
default:
  lr: {type: loguniform, low: 1.0e-4, high: 3.0e-2}
  cycle_weight: {type: loguniform, low: 1.0e-3, high: 0.3}
  batch_size: {type: choice, values: [16, 32, 64]}
  hidden_dim: 16
  num_bases: 4
  num_graphs: 240
  save_every: 0
"""


@dataclass
class Tally:
    runs: int = 0
    trials_lost: int = 0
    epochs_duplicated: int = 0
    runs_unfinished: int = 0
    drivers_hung: int = 0
    not_interrupted: int = 0  # the search ended before the interruption point: the run tested nothing
    notes: list[str] = field(default_factory=list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per kind")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    args = parser.parse_args()
    tallies = {kind: Tally() for kind in args.kinds}
    with tempfile.TemporaryDirectory(prefix="nsm-stress-") as scratch:
        root = Path(scratch)
        space = root / "space.yaml"
        space.write_text(textwrap.dedent(SPACE))
        s3 = _S3() if "s3" in args.kinds else None  # first: it exports the credentials the drivers inherit
        env = {**cli_env(), "NSM_DATA_DIR": str(root / "data")}
        try:
            for run in range(args.runs):
                for kind in args.kinds:
                    started = time.monotonic()
                    _one_run(kind, run, root, space, env, s3, tallies[kind])
                    tally = tallies[kind]
                    print(f"{kind:<8} run {run + 1:>2}/{args.runs}: {time.monotonic() - started:5.0f} s  "
                          f"lost {tally.trials_lost}  duplicated {tally.epochs_duplicated}  "
                          f"unfinished {tally.runs_unfinished}  hung {tally.drivers_hung}", flush=True)
        finally:
            if s3 is not None:
                s3.stop()
    print()
    print("| interruption | runs | not interrupted | trials lost | epochs duplicated | runs unfinished | drivers hung |")
    print("|---|---|---|---|---|---|---|")
    for kind, tally in tallies.items():
        print(f"| {kind} | {tally.runs} | {tally.not_interrupted} | {tally.trials_lost} | {tally.epochs_duplicated} | "
              f"{tally.runs_unfinished} | {tally.drivers_hung} |")
    for kind, tally in tallies.items():
        for note in tally.notes:
            print(f"{kind}: {note}")
    return 0


def _one_run(kind: str, run: int, root: Path, space: Path, env: dict[str, str], s3: _S3 | None, tally: Tally) -> None:
    name = f"{kind}-{run}"
    local = root / "results"
    storage_path = s3.uri("results") if kind == "s3" else str(local)
    mirror = storage.local_mirror(storage_path, name) if kind == "s3" else local / name
    args = ["--domain", "planning", "--space", str(space), "--num-samples", str(SAMPLES), "--max-epochs", str(EPOCHS),
            "--scheduler", "none", "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--max-concurrent", "2",
            "--wandb", "offline", "--storage-path", storage_path, "--name", name]
    tally.runs += 1
    driver = subprocess.Popen(cli(*args), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_until(lambda: finished_trials(mirror), driver, "a trial finished", TIMEOUT_S)
        # On a bucket the trial directories are not mirrored locally: the study's journal is.
        logged = _running_trial_in_study if kind == "s3" else _running_trial_that_just_logged
        running = wait_until(lambda: logged(mirror), driver, "a running trial logged", TIMEOUT_S)
        if kind == "trial":
            pid = json.loads((mirror / f"trial_{running}" / "trial.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
        else:
            driver.send_signal(signal.SIGKILL if kind == "sigkill" else signal.SIGTERM)
        try:
            driver.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            tally.drivers_hung += 1
            tally.notes.append(f"run {run}: the driver did not exit after the interruption")
    except AssertionError as error:  # the search ended before the interruption point: nothing to stress
        tally.not_interrupted += 1
        tally.notes.append(f"run {run}: {error}")
    finally:
        kill_group(driver.pid)

    if kind != "trial":
        if kind == "s3":
            shutil.rmtree(mirror, ignore_errors=True)  # resumed on "another machine"
        try:
            resumed = subprocess.run(cli("--resume", name, "--storage-path", storage_path), cwd=root, env=env,
                                     capture_output=True, text=True, timeout=TIMEOUT_S, start_new_session=True)
            if resumed.returncode != 0:
                tally.notes.append(f"run {run}: --resume exited {resumed.returncode}: {resumed.stderr.strip()[-300:]}")
        except subprocess.TimeoutExpired:
            tally.drivers_hung += 1
            tally.notes.append(f"run {run}: the resumed driver did not finish")
    experiment = s3.download(storage_path, name, root / "downloads") if kind == "s3" else local / name
    _tally(experiment, tally, run)


def _running_trial_that_just_logged(experiment_dir: Path) -> str | None:
    done = finished_trials(experiment_dir)
    for trial, epochs in recorded_epochs(experiment_dir).items():
        if trial not in done and epochs and (experiment_dir / f"trial_{trial}" / "trial.json").is_file():
            return trial
    return None


def _running_trial_in_study(experiment_dir: Path) -> str | None:
    """A trial the study holds as running with at least one epoch reported (Ray trial id), or None."""
    from optuna.trial import TrialState

    from search.study import STUDY_FILE, load_study

    if not (experiment_dir / STUDY_FILE).is_file():
        return None
    try:
        trials = load_study(experiment_dir).trials
    except KeyError:  # the journal exists, the study is not created in it yet
        return None
    return next((t.user_attrs["ray_trial_id"] for t in trials
                 if t.state == TrialState.RUNNING and t.intermediate_values), None)


def _tally(experiment: Path, tally: Tally, run: int) -> None:
    summary_path = experiment / "summary.json"
    if not summary_path.is_file():
        tally.trials_lost += SAMPLES
        tally.notes.append(f"run {run}: no summary.json")
        return
    rows = json.loads(summary_path.read_text())["trials"]
    ended = [row for row in rows if row["status"] in ("completed", "pruned")]
    tally.trials_lost += SAMPLES - len(ended)
    tally.runs_unfinished += sum(row["status"] == "unfinished" for row in rows)
    audit = audit_experiment(experiment)
    tally.epochs_duplicated += audit.duplicated_epochs + len(audit.optuna) + len(audit.wandb)
    if not audit.ok:
        tally.notes.append(f"run {run}: " + "; ".join(audit.lines()[1:]))
    for row in rows:
        files = offline_runs(experiment / "wandb", row["trial_id"])
        if files and not any(r.WhichOneof("record_type") == "exit" for r in read_wandb_records(files[-1])):
            tally.runs_unfinished += 1
            tally.notes.append(f"run {run}: W&B run {row['trial_id']} has no exit record")


class _S3:
    """A local S3 server (moto, a dev dependency) with one bucket."""

    BUCKET = "nsm-stress"

    def __init__(self) -> None:
        import boto3
        from moto.server import ThreadedMotoServer

        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            os.environ[key] = value
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self._query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket=self.BUCKET)

    def uri(self, prefix: str) -> str:
        return f"s3://{self.BUCKET}/{prefix}?{self._query}"

    def download(self, storage_path: str, name: str, into: Path) -> Path:
        import pyarrow.fs

        location = storage.experiment_location(storage_path, name)
        filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
        target = into / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        pyarrow.fs.copy_files(path, str(target), source_filesystem=filesystem,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        return target

    def stop(self) -> None:
        self._server.stop()


if __name__ == "__main__":
    sys.exit(main())
