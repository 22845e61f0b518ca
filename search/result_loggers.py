"""Ray's JSON and CSV result loggers, keyed by epoch: a re-run epoch replaces its earlier record.

A trial restarted from a checkpoint (``--resume``, a crashed trial retried by ``FailureConfig``, a
lost node) runs again the epochs after that checkpoint. Ray's loggers append every result, so an
epoch whose result was logged but whose checkpoint Ray had not yet registered appeared twice in
``result.json`` and ``progress.csv`` (``[1, 2, 3, 3]``), and everything that reads them (the analysis
scripts, ``ExperimentAnalysis``, the benchmarks' epoch counts) counted it twice.

These loggers remember the last epoch each trial's files hold. A result for an epoch at or below it
first truncates the file to the epochs before it, then appends: the re-run replaces the old record.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from ray.air.constants import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

EPOCH_KEY = "epoch"


def recorded_epochs(trial_dir: str | Path) -> list[int]:
    """The epochs a trial's ``result.json`` holds, in file order (one per line)."""
    return [int(epoch) for epoch, _ in _json_records(Path(trial_dir) / EXPR_RESULT_FILE) if epoch is not None]


def highest_recorded_epoch(trial: Any) -> float:
    """The highest epoch a trial's results hold, in the driver's staging copy or in the trial's storage.

    Both are read: a trial restarted without a registered checkpoint starts a fresh staging copy
    (Ray restores it from storage only with a checkpoint), while the storage copy lags the staging
    one between syncs.
    """
    epochs = recorded_epochs(trial.local_path) if trial.local_path else []
    try:
        filesystem = trial.storage.storage_filesystem
        with filesystem.open_input_stream(Path(trial.storage.trial_fs_path, EXPR_RESULT_FILE).as_posix()) as stream:
            text = stream.readall().decode()
        epochs += [int(e) for e, _ in _parse_json_lines(text) if e is not None]
    except (OSError, AttributeError):  # not written yet (pyarrow raises FileNotFoundError, an OSError)
        pass
    return max(epochs, default=-math.inf)


class EpochJsonLoggerCallback(JsonLoggerCallback):
    """``JsonLoggerCallback`` whose ``result.json`` holds each epoch of a trial once."""

    def __init__(self) -> None:
        super().__init__()
        self._last_epoch: dict[Any, float] = {}

    def log_trial_start(self, trial: Any) -> None:
        super().log_trial_start(trial)  # restores result.json from storage, opens it for appending
        path = Path(trial.local_path, EXPR_RESULT_FILE)
        self._last_epoch[trial] = max((e for e, _ in _json_records(path) if e is not None), default=-math.inf)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_files:
            self.log_trial_start(trial)
        epoch = _epoch(result)
        if epoch is not None and epoch <= self._last_epoch.get(trial, -math.inf):
            path = Path(trial.local_path, EXPR_RESULT_FILE)
            self._trial_files[trial].close()
            kept = [line for e, line in _json_records(path) if e is None or e < epoch]
            _replace_text(path, "".join(f"{line}\n" for line in kept))
            self._trial_files[trial] = path.open("at")
        super().log_trial_result(iteration, trial, result)
        if epoch is not None:
            self._last_epoch[trial] = epoch

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        super().log_trial_end(trial, failed)
        self._last_epoch.pop(trial, None)


class EpochCSVLoggerCallback(CSVLoggerCallback):
    """``CSVLoggerCallback`` whose ``progress.csv`` holds each epoch of a trial once.

    A continued file is written under its own header (Ray's logger would use the new result's key
    order, which misaligns the columns if it ever differs).
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_epoch: dict[Any, float] = {}

    def _setup_trial(self, trial: Any) -> None:
        super()._setup_trial(trial)
        header, rows = _csv_rows(Path(trial.local_path, EXPR_PROGRESS_FILE))
        self._last_epoch[trial] = max((_epoch(row) for row in rows if _epoch(row) is not None), default=-math.inf)
        if header:
            self._trial_csv[trial] = csv.DictWriter(self._trial_files[trial], header)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_files:
            self._setup_trial(trial)
        epoch = _epoch(result)
        if epoch is not None and epoch <= self._last_epoch.get(trial, -math.inf):
            path = Path(trial.local_path, EXPR_PROGRESS_FILE)
            self._trial_files[trial].close()
            header, rows = _csv_rows(path)
            kept = [row for row in rows if _epoch(row) is None or _epoch(row) < epoch]
            _replace_csv(path, header, kept)
            self._trial_files[trial] = path.open("at")
            self._trial_csv[trial] = csv.DictWriter(self._trial_files[trial], header) if header else None
            self._trial_continue[trial] = bool(header)
        super().log_trial_result(iteration, trial, result)
        if epoch is not None:
            self._last_epoch[trial] = epoch

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        super().log_trial_end(trial, failed)
        self._last_epoch.pop(trial, None)


# ------------------------------------------------------------------------------------------------


def _epoch(record: dict) -> float | None:
    value = record.get(EPOCH_KEY)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _json_records(path: Path) -> list[tuple[float | None, str]]:
    """``(epoch, line)`` for each complete line; a torn last line (a killed driver) is dropped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return _parse_json_lines(text)


def _parse_json_lines(text: str) -> list[tuple[float | None, str]]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        records.append((_epoch(record) if isinstance(record, dict) else None, line))
    return records


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            # A torn row (a killed driver) has too few fields (None values) or too many (a None key).
            rows = [row for row in reader if None not in row and None not in row.values()]
            return list(reader.fieldnames or []), rows
    except FileNotFoundError:
        return [], []


def _replace_text(path: Path, text: str) -> None:
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(text)
    os.replace(staged, path)


def _replace_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    staged = path.with_name(f".{path.name}.tmp")
    with staged.open("w", newline="") as file:
        if header:
            writer = csv.DictWriter(file, header)
            writer.writeheader()
            writer.writerows(rows)
    os.replace(staged, path)
