"""Completed trials/hour at 1.0, 0.5 and 0.25 GPU per trial on one GPU: ``python bench/gpu_packing.py``.

The same budget each time (``--num-trials`` trials of ``--epochs`` epochs, the default search space at
the trainer's real size, seeded random search so every packing trains the same configs, no early
stopping) runs through ``search.run.main`` with ``--gpus-per-trial`` 1.0, 0.5 and 0.25. What stays the
same across packings: the CPUs per trial (``--cpus-per-trial``; by default the machine's CPUs shared
by the densest packing's trials, at most 4) and the GPU (Ray sees only ``--gpu``, through
``CUDA_VISIBLE_DEVICES``).

Printed per packing: wall time; trials that ran all their epochs (diverged, infeasible and failed
trials do not count) and those per hour, the ratio to 1.0 GPU per trial, and epochs per hour over all
trials; per trial, the trainer's peak allocated GPU memory (nsm's ``gpu_mem_mb``) and, when the trials
report it, ``gpu_reserved_mb``; from NVML, the peak memory of any one trial process (its CUDA context
plus PyTorch's reserved cache) and of the whole card. NVML needs the ``nvidia-ml-py`` package
(``pip install nvidia-ml-py``, imported as ``pynvml``); without it those columns read "-".
Target: at least 3x the completed trials/hour at 0.25 versus 1.0 on one A100/H100-class GPU.

On a machine without CUDA it says so and exits 0 (nothing to measure).

    python bench/gpu_packing.py                        # 16 trials x 10 epochs per packing
    python bench/gpu_packing.py --num-trials 8 --epochs 5   # about 3 minutes (bench/gpu_check.sh)
    python bench/gpu_packing.py --fractions 1 0.25 --gpu 1
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: the project is installed, so drop bench/ itself from the path, where a sibling
    # script (bench/search.py) would shadow the search package.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import torch  # noqa: E402

TARGET_RATIO = 3.0
MAX_CPUS_PER_TRIAL = 4


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    visible = _pin_one_gpu(args.gpu)  # before anything initialises CUDA, so Ray and its workers see one GPU
    if not torch.cuda.is_available():
        print("bench/gpu_packing.py needs a CUDA GPU (none visible here); nothing measured.")
        return 0

    from ray import tune

    from search.outcome import COMPLETED, trial_outcome
    from search.run import main as search_main

    gpu = torch.cuda.get_device_name(0)
    densest = max(int(1 / fraction) for fraction in args.fractions)
    cpus = args.cpus_per_trial or max(1, min(MAX_CPUS_PER_TRIAL, (os.cpu_count() or 1) // densest))
    storage = Path(tempfile.mkdtemp(prefix="nsm-packing-"))
    rows = []
    try:
        for fraction in args.fractions:
            name = f"pack-{fraction:g}"
            at_once = max(1, int(1 / fraction))
            argv = [
                "--domain", args.domain, "--num-samples", str(args.num_trials), "--max-epochs", str(args.epochs),
                "--gpus-per-trial", str(fraction), "--cpus-per-trial", str(cpus), "--max-concurrent", str(at_once),
                "--searcher", "random", "--scheduler", "none", "--seed", "0", "--wandb", "disabled",
                "--storage-path", str(storage), "--name", name,
            ]
            with _NvmlSampler(visible) as nvml:
                started = time.monotonic()
                code = search_main(argv)
                wall = time.monotonic() - started
            if code != 0:
                print(f"search at {fraction:g} GPU/trial failed (exit {code})", file=sys.stderr)
                return code
            trials = tune.ExperimentAnalysis(str(storage / name)).trials
            completed = [t for t in trials if trial_outcome(t.last_result, args.epochs, t.status == "ERROR") == COMPLETED]
            rows.append({
                "fraction": fraction, "at_once": at_once, "wall": wall, "completed": len(completed),
                "trials": len(trials), "per_hour": len(completed) / wall * 3600,
                "epochs_per_hour": sum(_epochs_run(t.last_result) for t in trials) / wall * 3600,
                "allocated_mb": _peak(trials, "gpu_mem_mb"), "reserved_mb": _peak(trials, "gpu_reserved_mb"),
                "process_mb": nvml.peak_process_mb, "card_mb": nvml.peak_card_mb,
            })
    finally:
        shutil.rmtree(storage, ignore_errors=True)

    print(f"\n{gpu}: {args.num_trials} trials x {args.epochs} epochs ({args.domain}), {cpus:g} CPUs per trial, per packing")
    print(f"{'GPU/trial':>9} {'at once':>7} {'wall s':>7} {'done':>7} {'done/h':>7} {'vs 1.0':>7} {'epochs/h':>9} "
          f"{'alloc MB':>9} {'reserved MB':>11} {'NVML MB/proc':>12} {'NVML MB card':>12}")
    base = next((row["per_hour"] for row in rows if row["fraction"] == 1.0), None)
    for row in rows:
        ratio = f"{row['per_hour'] / base:.2f}x" if base else "-"
        print(f"{row['fraction']:>9g} {row['at_once']:>7} {row['wall']:>7.0f} {row['completed']:>3}/{row['trials']:<3} "
              f"{row['per_hour']:>7.1f} {ratio:>7} {row['epochs_per_hour']:>9.0f} {_mb(row['allocated_mb']):>9} "
              f"{_mb(row['reserved_mb']):>11} {_mb(row['process_mb']):>12} {_mb(row['card_mb']):>12}")
    if any(row["completed"] < row["trials"] for row in rows):
        print("done = trials that ran every epoch; the others diverged, ran out of memory or failed, and do not count")
    if visible is not None and rows and rows[0]["process_mb"] is None:
        print("NVML columns: install nvidia-ml-py (module pynvml) to measure per-process GPU memory")
    quarter = next((row for row in rows if row["fraction"] == 0.25), None)
    if base and quarter:
        ratio = quarter["per_hour"] / base
        print(f"0.25 vs 1.0: {ratio:.2f}x completed trials/hour (target >= {TARGET_RATIO:g}x: "
              f"{'ok' if ratio >= TARGET_RATIO else 'MISSED'})")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="planning")
    parser.add_argument("--num-trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--cpus-per-trial", type=float, default=None,
                        help=f"CPUs per trial at every packing (default: CPUs / trials at once of the densest "
                             f"packing, at most {MAX_CPUS_PER_TRIAL})")
    parser.add_argument("--gpu", type=int, default=0, help="which of the visible GPUs to run on (default: the first)")
    return parser


def _pin_one_gpu(index: int) -> str | None:
    """Make only the ``index``-th visible GPU visible to this process and its children (Ray's workers).

    Returns its NVML identity (a PCI-ordered index or a UUID), or None when no GPU is listed.
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        devices = [device.strip() for device in listed.split(",") if device.strip()]
        if index >= len(devices):
            return None
        chosen = devices[index]
    else:
        chosen = str(index)
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's numbering = NVML's
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen


def _epochs_run(result: dict[str, Any] | None) -> int:
    epoch = (result or {}).get("epoch")
    return int(epoch) if isinstance(epoch, (int, float)) and math.isfinite(epoch) else 0


def _peak(trials: list[Any], metric: str) -> float | None:
    """The largest per-epoch value of ``metric`` over all trials (None if no trial reports it)."""
    values = [t.metric_analysis.get(metric, {}).get("max") for t in trials]
    values = [value for value in values if isinstance(value, (int, float)) and math.isfinite(value)]
    return max(values) if values else None


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


class _NvmlSampler:
    """Peak GPU memory of any one process other than this one, and of the card, sampled from NVML."""

    def __init__(self, device: str | None, interval_s: float = 0.2):
        self.device, self.interval_s = device, interval_s
        self.peak_process_mb: float | None = None
        self.peak_card_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _NvmlSampler:
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            return self
        if self.device is None:
            return self
        pynvml.nvmlInit()
        if self.device.startswith("GPU-") or self.device.startswith("MIG-"):
            handle = pynvml.nvmlDeviceGetHandleByUUID(self.device)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(self.device))
        self._thread = threading.Thread(target=self._sample, args=(pynvml, handle), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            import pynvml

            pynvml.nvmlShutdown()

    def _sample(self, pynvml: Any, handle: Any) -> None:
        own = os.getpid()
        while not self._stop.wait(self.interval_s):
            card = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            self.peak_card_mb = max(self.peak_card_mb or 0.0, card)
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid != own and process.usedGpuMemory:  # None where the driver hides it
                    self.peak_process_mb = max(self.peak_process_mb or 0.0, process.usedGpuMemory / 2**20)


if __name__ == "__main__":
    sys.exit(main())
