"""Device set-up for training: device choice, TF32, a GPU-share memory cap, and out-of-memory verdicts.

Everything that touches ``torch.cuda`` or ``torch.backends`` takes them as arguments (defaulting to
torch's own), so the CUDA branches run in tests on machines without a GPU, against stand-ins of old
and new torch.

    device = resolve_device("auto")                   # also turns TF32 on for CUDA
    cap = prepare_trial_memory(device, gpus=0.25)      # at the start of each (possibly reused) trial
    try:
        ...
    except Exception as error:
        verdict = out_of_memory_verdict(error, device, cap)   # None, RETRY or INFEASIBLE
"""

from __future__ import annotations

import gc
import re
from typing import Any

import torch

from nsm.errors import ConfigError

CONTEXT_MARGIN_BYTES = 512 * 2**20
"""Memory a process's CUDA context (driver, cuBLAS and cuDNN handles and workspaces) takes outside
PyTorch's allocator: about 0.3-0.5 GB. A fractional GPU share is capped this much below its slice of
the card, so that four quarter-GPU trials plus four contexts still fit."""

NEAR_CAP = 0.95
"""An out-of-memory error is the trial's own fault when its peak reserved memory plus the failed
request reaches this fraction of its cap (the rest is lost to fragmentation)."""

RETRY = "retry"  # memory ran out because of a neighbour or a fragmented cache: the trial may fit if rerun
INFEASIBLE = "infeasible"  # the trial's own memory reached its cap: rerunning cannot help

_OOM_MESSAGES = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_MEMORY")
_REQUEST = re.compile(r"Tried to allocate ([0-9.]+) (B|bytes|KiB|MiB|GiB|TiB)")
_UNITS = {"B": 1, "bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def resolve_device(name: str, cuda: Any = torch.cuda, backends: Any = torch.backends) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; TF32 on for CUDA."""
    if name == "auto":
        name = "cuda" if cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {name!r}") from None
    if device.type == "cuda":
        if not cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        if device.index is not None and device.index >= cuda.device_count():
            raise ConfigError(f"device {name!r} requested but only {cuda.device_count()} CUDA device(s) are visible")
        enable_tf32(backends)
    return device


def enable_tf32(backends: Any = torch.backends) -> str:
    """Let float32 matmuls and convolutions use TF32 tensor cores; returns the API used.

    torch 2.9 added ``fp32_precision`` and deprecated ``allow_tf32``; older torch has only
    ``allow_tf32``. Mixing the two raises on recent torch, so use exactly one.
    """
    matmul = backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "tf32"
        backends.cudnn.conv.fp32_precision = "tf32"
        return "fp32_precision"
    matmul.allow_tf32 = True
    backends.cudnn.allow_tf32 = True
    return "allow_tf32"


def memory_cap(gpus: float, total_bytes: int, margin_bytes: int = CONTEXT_MARGIN_BYTES) -> int:
    """Bytes the caching allocator of a trial with ``gpus`` of a card of ``total_bytes`` may reserve."""
    share = int(min(gpus, 1.0) * total_bytes)
    cap = share - margin_bytes
    if cap <= 0:
        raise ConfigError(
            f"a share of {gpus:g} GPU ({share / 2**30:.2f} GiB) cannot hold a CUDA context "
            f"(about {margin_bytes / 2**30:.1f} GiB); give each trial more of the GPU"
        )
    return cap


def prepare_trial_memory(
    device: torch.device, gpus: float, cuda: Any = torch.cuda, margin_bytes: int = CONTEXT_MARGIN_BYTES
) -> int | None:
    """Start a trial's GPU memory afresh and cap it to its share; returns the cap in bytes (None off CUDA).

    Empties the cache a reused actor kept from its previous trial (its fragments would count against
    this trial's cap) and resets the peak statistics that :func:`out_of_memory_verdict` reads. A
    fraction below 1 caps the caching allocator at the share minus ``margin_bytes`` for this process's
    CUDA context: Ray packs fractional trials onto one GPU but does not enforce the fraction.
    """
    if device.type != "cuda":
        return None
    gc.collect()  # tensors of the previous trial still referenced only by cycles
    cuda.empty_cache()
    cuda.reset_peak_memory_stats(device)
    total = cuda.get_device_properties(device).total_memory
    cap = memory_cap(gpus, total, margin_bytes) if 0 < gpus < 1 else total - margin_bytes
    # Always set: a reused actor may carry the previous trial's smaller fraction.
    cuda.set_per_process_memory_fraction(cap / total if 0 < gpus < 1 else 1.0, device)
    return cap


def is_out_of_memory(error: BaseException) -> bool:
    """``torch.cuda.OutOfMemoryError``, or a cuBLAS/cuDNN/CUDA out-of-memory raised as ``RuntimeError``."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    if not isinstance(error, RuntimeError):
        return False
    message = str(error)
    return any(text.lower() in message.lower() for text in _OOM_MESSAGES)


def classify_out_of_memory(error: BaseException, peak_reserved_bytes: int, cap_bytes: int) -> str:
    """:data:`INFEASIBLE` when the trial's own memory reached its cap, else :data:`RETRY`.

    The trial's own memory is its peak reserved memory plus the request that failed (read from
    PyTorch's message where it says "Tried to allocate ..."; cuBLAS and cuDNN errors do not say).
    """
    requested = 0
    match = _REQUEST.search(str(error))
    if match:
        requested = int(float(match.group(1)) * _UNITS[match.group(2)])
    return INFEASIBLE if peak_reserved_bytes + requested >= NEAR_CAP * cap_bytes else RETRY


def out_of_memory_verdict(
    error: BaseException, device: torch.device, cap_bytes: int | None, cuda: Any = torch.cuda
) -> str | None:
    """:func:`classify_out_of_memory`'s verdict on a CUDA out-of-memory error; None for any other error.

    ``cap_bytes`` is what :func:`prepare_trial_memory` returned, and the peak it compares against is
    the trial's own, since :func:`prepare_trial_memory` reset the statistics.
    """
    if device.type != "cuda" or cap_bytes is None or not is_out_of_memory(error):
        return None
    return classify_out_of_memory(error, cuda.max_memory_reserved(device), cap_bytes)


def release_memory(device: torch.device, cuda: Any = torch.cuda) -> None:
    """Hand cached blocks back after a failed trial, so a retry on this actor starts clean."""
    if device.type == "cuda":
        gc.collect()
        cuda.empty_cache()


__all__ = [
    "CONTEXT_MARGIN_BYTES",
    "INFEASIBLE",
    "RETRY",
    "classify_out_of_memory",
    "enable_tf32",
    "is_out_of_memory",
    "memory_cap",
    "out_of_memory_verdict",
    "prepare_trial_memory",
    "release_memory",
    "resolve_device",
]
