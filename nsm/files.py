"""Atomic file writes: a crash or a concurrent reader sees the old file or the complete new one, never half.

Every file the project writes that someone else may read while it is written (checkpoints, run files,
search settings and summaries, exported configs, figures, the dataset cache) goes through
:func:`atomic_write`: write a temporary file in the same directory, then ``os.replace`` it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], None], fsync: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    ``fsync``: flush the file to disk before the rename, for files that must survive a host crash
    (not only a killed process).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as file:
                os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, payload: Any, trailing_newline: bool = True) -> Path:
    """``payload`` as indented JSON (NaN allowed, as Python's json writes it)."""
    text = json.dumps(payload, indent=2, allow_nan=True)
    return write_text(path, text + "\n" if trailing_newline else text)


def append_json_line(path: str | Path, record: Any) -> None:
    """Append ``record`` as one line of a JSON-lines file (a results log that grows as runs end)."""
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")


def read_json_lines(path: str | Path) -> list[Any]:
    """The records of a JSON-lines file (none if it does not exist); a line cut by a kill mid-write is
    dropped, so whatever it recorded is done again."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records
