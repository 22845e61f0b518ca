"""Reading W&B's offline run files (``<dir>/wandb/offline-run-*-<run id>/run-*.wandb``).

W&B has no public reader for them. The search reads them to learn the last step a trial's run
logged before a driver was killed (:mod:`search.wandb_logging`); the audit reads them to check that
steps never repeat (:mod:`analysis.audit`).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any


def offline_runs(wandb_dir: Path, run_id: str) -> list[Path]:
    """The ``run-*.wandb`` files of run ``run_id``, oldest first (one per driver that logged to it)."""
    return sorted(wandb_dir.glob(f"offline-run-*-{run_id}/run-*.wandb"))


def run_steps(path: Path) -> tuple[set[str], list[int]]:
    """Run ids and the history steps (in file order) of one ``.wandb`` file."""
    run_ids, steps = set(), []
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_ids.add(record.run.run_id)
        elif kind == "history":
            steps.append(int(record.history.step.num))
    return run_ids, steps


def highest_logged_step(wandb_dir: Path, run_id: str) -> float:
    """The highest history step any offline file of run ``run_id`` holds (-inf when none)."""
    return max((step for path in offline_runs(wandb_dir, run_id) for step in run_steps(path)[1]), default=-math.inf)


def read_wandb_records(path: Path) -> list[Any]:
    """Records of a ``run-*.wandb`` file: W&B's LevelDB-style log of ``wandb_internal`` Record protos.

    W&B has no public reader for offline files; the format is 32 KiB blocks of records with a 7-byte
    header (checksum, length, type: full / first / middle / last).
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    block_size, offset, records, pending = 32 * 1024, 7, [], b""
    while offset + 7 <= len(data):
        left_in_block = block_size - offset % block_size
        if left_in_block < 7:
            offset += left_in_block  # block trailer padding
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        if offset + 7 + length > len(data):
            break  # torn by a killed writer
        payload = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            break
        pending = payload if kind in (1, 2) else pending + payload  # FULL/FIRST start, MIDDLE/LAST append
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except DecodeError:
                break  # torn by a killed writer
            records.append(record)
            pending = b""
    return records
