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
