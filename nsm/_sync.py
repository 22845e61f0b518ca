"""Count the host-device synchronisation points of a piece of PyTorch code, on any device.

A CUDA kernel launch returns at once; the host only waits for the device when it needs a result
(``loss.item()``, ``int(t.max())``, ``if t.any():``), when an operation's output size depends on
the data (``nonzero``, boolean-mask indexing, ``unique``, ``bincount``), or when it copies a tensor
from the device. ``torch.cuda.set_sync_debug_mode`` reports these waits, but only on a GPU. This
module counts them on CPU too, from the operations that would cause them, so a test can bound the
waits of a training step on a machine without a GPU::

    with SyncCounter() as syncs:
        out = model(...)
        loss.backward()
    assert syncs.count <= 1, syncs.describe()

Without a GPU, every CPU tensor is treated as if it lived on the device, so ``.tolist()`` or
``.cpu()`` of a tensor that the real run keeps on the host counts as well. One such case is known and
excluded by default: ``torch.optim`` reads its per-parameter step counters with ``.item()``, and those
counters are CPU tensors on a GPU too (unless the optimiser is ``capturable`` or ``fused``). With a
GPU, operations on CPU tensors are host work and are not counted.

Not seen: host-to-device copies on CPU (``.to("cpu")`` is a no-op there), and waits inside custom
C++/CUDA extensions that do not go through the dispatcher.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Operations whose output size depends on tensor values: the host must wait to allocate the output.
_DATA_DEPENDENT_SIZE = {
    aten.nonzero.default: "nonzero",
    aten.masked_select.default: "masked_select",
    aten.unique_consecutive.default: "unique_consecutive",
    aten._unique.default: "unique",
    aten._unique2.default: "unique",
    aten.unique_dim.default: "unique",
    aten.bincount.default: "bincount (reads the maximum)",
}
# Operations that hand a tensor's value to Python.
_READS = {
    aten._local_scalar_dense.default: "scalar read (item/int/float/bool of a tensor)",
    aten.equal.default: "torch.equal",
}
_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
_COPY_OPS = {aten._to_copy.default, aten.copy_.default}
# Tensor methods that copy to the host without any aten operation when the tensor is already there
# (as on CPU); on a GPU the same calls dispatch a device-to-host copy, counted by the dispatch mode.
_HOST_COPY_METHODS = {torch.Tensor.tolist: "tolist", torch.Tensor.cpu: "cpu()", torch.Tensor.numpy: "numpy()"}

DEFAULT_IGNORE = (os.path.join("torch", "optim", ""),)
"""Code whose host reads are not device waits: the optimisers' CPU step counters."""

_THIS_FILE = os.path.abspath(__file__)
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


@dataclass(frozen=True)
class SyncEvent:
    """One synchronisation point: why it waits and the first caller outside torch."""

    reason: str
    where: str


class SyncCounter:
    """Context manager that counts synchronisation points (and all dispatched operations).

    ``count`` is the number of synchronisation points, ``events`` says what and where each was,
    ``ignored`` holds those raised inside ``ignore`` (path fragments of Python files, by default
    ``torch/optim/``), and ``ops`` is the number of aten operations dispatched, a proxy for kernel
    launches. Backward passes run inside the context are counted too.
    """

    def __init__(self, ignore: Sequence[str] = DEFAULT_IGNORE, cpu_is_device: bool | None = None):
        self.ignore = tuple(ignore)
        # Without a GPU, CPU tensors stand in for device tensors.
        self.cpu_is_device = not torch.cuda.is_available() if cpu_is_device is None else cpu_is_device
        self.events: list[SyncEvent] = []
        self.ignored: list[SyncEvent] = []
        self.ops = 0
        self._dispatch = _DispatchCounter(self)
        self._function = _FunctionCounter(self)

    @property
    def count(self) -> int:
        return len(self.events)

    def describe(self) -> str:
        """One line per distinct (reason, place), with how often it happened."""
        if not self.events:
            return "no synchronisation points"
        tally = Counter(self.events)
        return "\n".join(f"{n} x {event.reason} at {event.where}" for event, n in tally.most_common())

    def __enter__(self) -> SyncCounter:
        self._function.__enter__()
        self._dispatch.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._dispatch.__exit__(*exc_info)
        self._function.__exit__(*exc_info)

    def _record(self, reason: str) -> None:
        frames = _caller_frames()
        event = SyncEvent(reason, _first_outside_torch(frames))
        if any(fragment in path for path, _, _ in frames for fragment in self.ignore):
            self.ignored.append(event)
        else:
            self.events.append(event)


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.counter.ops += 1
        reason = _sync_reason(func, args, kwargs, self.counter.cpu_is_device)
        if reason is not None:
            self.counter._record(reason)
        return func(*args, **kwargs)


class _FunctionCounter(TorchFunctionMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _HOST_COPY_METHODS.get(func)
        tensor = args[0] if args else None
        if name is not None and self.counter.cpu_is_device and isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
            self.counter._record(f"host copy ({name})")
        return func(*args, **kwargs)


def _sync_reason(func: Any, args: tuple, kwargs: dict, cpu_is_device: bool) -> str | None:
    if func in _COPY_OPS:
        return _copy_reason(func, args, kwargs)
    first = args[0] if args else None
    if isinstance(first, torch.Tensor) and first.device.type == "cpu" and not cpu_is_device:
        return None  # host work beside a GPU: no wait
    if func in _READS:
        return _READS[func]
    if func in _DATA_DEPENDENT_SIZE:
        return _DATA_DEPENDENT_SIZE[func]
    if func in _INDEX_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices):
            return "boolean-mask indexing"
        return None
    if func is aten.repeat_interleave.Tensor and kwargs.get("output_size", args[1] if len(args) > 1 else None) is None:
        return "repeat_interleave without output_size"
    return None


def _copy_reason(func: Any, args: tuple, kwargs: dict) -> str | None:
    """Device-to-host copies wait for the device; so do host-to-device ones that are not non-blocking."""
    if func is aten._to_copy.default:
        source = args[0]
        target = kwargs.get("device") or source.device
        non_blocking = kwargs.get("non_blocking", False)
    else:
        target, source = args[0].device, args[1]
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
    if not isinstance(source, torch.Tensor):
        return None
    source_device, target_device = source.device.type, torch.device(target).type
    if source_device != "cpu" and target_device == "cpu":
        return "device-to-host copy"
    if source_device == "cpu" and target_device != "cpu" and not non_blocking:
        return "blocking host-to-device copy"
    return None


def _caller_frames() -> list[tuple[str, int, str]]:
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append((os.path.abspath(frame.f_code.co_filename), frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    return frames


def _first_outside_torch(frames: list[tuple[str, int, str]]) -> str:
    """The innermost frame outside torch and this module (torch_geometric counts as outside)."""
    for path, line, name in frames:
        if path != _THIS_FILE and not path.startswith(_TORCH_DIR + os.sep):
            return f"{_short(path)}:{line} ({name})"
    path, line, name = frames[-1]
    return f"{_short(path)}:{line} ({name})"


def _short(path: str) -> str:
    """The path from the package root on (``torch_geometric/...``, ``nsm/...``, ``tests/...``)."""
    parts = path.split(os.sep)
    for index, part in enumerate(parts):
        if part == "site-packages":
            return os.sep.join(parts[index + 1:])
        if part in ("nsm", "search", "tests", "bench", "analysis", "spaces"):
            return os.sep.join(parts[index:])
    return path
