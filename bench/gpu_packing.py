"""Trials/hour at 1.0, 0.5 and 0.25 GPU per trial on one GPU: ``python bench/gpu_packing.py``.

The same budget each time (``--num-trials`` trials of ``--epochs`` epochs, the default search space at
the trainer's real size, seeded random search so every packing trains the same configs, no early
stopping) runs through ``search.run.main`` with ``--gpus-per-trial`` 1.0, 0.5 and 0.25; printed per
packing: wall time, trials/hour, the ratio to 1.0, and the peak GPU memory of a trial (nsm's
``gpu_mem_mb``). Target: at least 3x the trials/hour at 0.25 versus 1.0 on one A100/H100-class GPU.

On a machine without CUDA it says so and exits 0 (nothing to measure).

    python bench/gpu_packing.py                        # 16 trials x 10 epochs per packing
    python bench/gpu_packing.py --num-trials 32 --epochs 20 --fractions 1 0.25
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: the project is installed, so drop bench/ itself from the path, where a sibling
    # script (bench/search.py) would shadow the search package.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import torch  # noqa: E402

TARGET_RATIO = 3.0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu_packing.py needs a CUDA GPU (none visible here); nothing measured.")
        return 0

    from ray import tune

    from search.run import main as search_main

    gpu = torch.cuda.get_device_name(0)
    storage = Path(tempfile.mkdtemp(prefix="nsm-packing-"))
    rows = []
    try:
        for fraction in args.fractions:
            name = f"pack-{fraction:g}"
            argv = [
                "--domain", args.domain, "--num-samples", str(args.num_trials), "--max-epochs", str(args.epochs),
                "--gpus-per-trial", str(fraction), "--max-concurrent", str(max(1, int(1 / fraction))),
                "--searcher", "random", "--scheduler", "none", "--seed", "0", "--wandb", "disabled",
                "--storage-path", str(storage), "--name", name,
            ]
            started = time.monotonic()
            code = search_main(argv)
            wall = time.monotonic() - started
            if code != 0:
                print(f"search at {fraction:g} GPU/trial failed (exit {code})", file=sys.stderr)
                return code
            analysis = tune.ExperimentAnalysis(str(storage / name))
            finished = [t for t in analysis.trials if t.status == "TERMINATED"]
            memory = max((t.last_result.get("gpu_mem_mb", 0.0) for t in finished), default=float("nan"))
            rows.append((fraction, wall, len(finished) / wall * 3600, memory))
    finally:
        shutil.rmtree(storage, ignore_errors=True)

    print(f"\n{gpu}: {args.num_trials} trials x {args.epochs} epochs ({args.domain}), per packing")
    print(f"{'GPU/trial':>9} {'at once':>7} {'wall s':>8} {'trials/h':>9} {'vs 1.0':>7} {'GPU MB/trial':>12}")
    base = rows[0][2] if rows and rows[0][0] == 1.0 else None
    for fraction, wall, per_hour, memory in rows:
        ratio = f"{per_hour / base:.2f}x" if base else "-"
        print(f"{fraction:>9g} {int(1 / fraction):>7} {wall:>8.0f} {per_hour:>9.1f} {ratio:>7} {memory:>12.0f}")
    if base and rows[-1][0] == 0.25:
        ratio = rows[-1][2] / base
        print(f"0.25 vs 1.0: {ratio:.2f}x (target >= {TARGET_RATIO:g}x: {'ok' if ratio >= TARGET_RATIO else 'MISSED'})")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="planning")
    parser.add_argument("--num-trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    return parser


if __name__ == "__main__":
    sys.exit(main())
