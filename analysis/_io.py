"""Analysis outputs written atomically (``nsm.files.atomic_write``): text, JSON and figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nsm.files import atomic_write


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, payload: Any) -> Path:
    return write_text(path, json.dumps(_plain(payload), indent=2, allow_nan=True) + "\n")


def save_figure(path: str | Path, figure: Any, dpi: int = 120) -> Path:
    """Save a matplotlib figure (format from the suffix) atomically."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))


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
