"""Atomic file writes: a crash or a concurrent reader never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, payload: Any) -> Path:
    return write_text(path, json.dumps(_plain(payload), indent=2, allow_nan=True) + "\n")


def write_yaml(path: str | Path, payload: Any) -> Path:
    return write_text(path, yaml.safe_dump(_plain(payload), sort_keys=False))


def save_torch(path: str | Path, payload: Any) -> Path:
    import torch

    return _atomic(Path(path), lambda tmp: torch.save(payload, tmp))


def save_figure(path: str | Path, figure: Any, dpi: int = 120) -> Path:
    """Save a matplotlib figure (format from the suffix) atomically."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    return _atomic(path, lambda tmp: figure.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))


def _plain(value: Any) -> Any:
    """numpy/pandas scalars and arrays -> Python values, so JSON and YAML stay portable."""
    import numpy as np

    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value
