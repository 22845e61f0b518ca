"""Benchmark the search driver; prints ratios (not a test).

1. Overhead: N trials of one small fixed budget through Ray Tune (our trainable, checkpoints every
   epoch, searcher, experiment snapshots) versus the same trainer calls run in-process one after
   the other with all cores. Prints wall(Ray) / wall(in-process), with Ray's start-up cost (ray.init
   and the Tuner's set-up before the first trial) printed separately. Target <= 1.2.
2. Efficiency: ASHA + TPE versus random search without early stopping, same num-samples and
   seeds: epochs consumed and best val_acc. Target: within 1 point of random's best val_acc using
   at most 40% of its epochs.

    python bench/search.py                         # defaults sized for a 2-core laptop (~30 min)
    python bench/search.py --skip-overhead --seeds 0   # one efficiency comparison (~8 min)
    python bench/search.py --quick                 # a couple of minutes, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

# This file is bench/search.py: as a script its own directory comes first on sys.path and would
# shadow the `search` package it benchmarks.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import ray  # noqa: E402
import torch  # noqa: E402

from nsm import metrics as nsm_metrics  # noqa: E402
from nsm.train import TrainConfig, train  # noqa: E402
from search.run import main as search_main  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="planning")
    parser.add_argument("--trials", type=int, default=4, help="overhead: trials of the fixed budget")
    parser.add_argument("--overhead-epochs", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=12, help="efficiency: trials per search")
    parser.add_argument("--max-epochs", type=int, default=16, help="efficiency: epoch budget per trial")
    parser.add_argument("--num-graphs", type=int, default=1000, help="enough for the NSM to learn within the budget")
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-efficiency", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of both benchmarks")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.overhead_epochs, args.num_samples, args.max_epochs = 2, 2, 4, 4
        args.num_graphs, args.hidden_dim, args.seeds = 200, 16, [0]
    return args


def space_file(directory: Path, args: argparse.Namespace) -> Path:
    path = directory / "space.yaml"
    path.write_text(textwrap.dedent(f"""
        default:
          lr: {{type: loguniform, low: 1.0e-5, high: 1.0e-2}}
          cycle_weight: {{type: loguniform, low: 1.0e-3, high: 0.3}}
          batch_size: {{type: choice, values: [16, 32, 64, 128]}}
          hidden_dim: {args.hidden_dim}
          num_graphs: {args.num_graphs}
          save_every: 0
    """))
    return path


def overhead(args: argparse.Namespace, workdir: Path) -> None:
    """Same trainer calls through Ray Tune and in-process, at concurrency 1 and at the machine's."""
    cpus = os.cpu_count() or 1
    space = space_file(workdir, args)
    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
    init_s = time.perf_counter() - started
    runs = {}
    try:
        for concurrency in sorted({1, cpus}):
            name = f"overhead-c{concurrency}"
            began, began_wall = time.perf_counter(), time.time()
            code = search_main(["--domain", args.domain, "--space", str(space), "--storage-path", str(workdir / "ray"),
                                "--name", name, "--num-samples", str(args.trials), "--max-epochs", str(args.overhead_epochs),
                                "--scheduler", "none", "--searcher", "random", "--seed", "0", "--cpus-per-trial", "1",
                                "--gpus-per-trial", "0", "--max-concurrent", str(concurrency), "--wandb", "disabled"])
            wall_s = time.perf_counter() - began
            assert code == 0, code
            summary = json.loads((workdir / "ray" / name / "summary.json").read_text())
            infos = [json.loads((Path(row["trial_dir"]) / "trial.json").read_text()) for row in summary["trials"]]
            # Tuner set-up and the first worker's start, before any training.
            setup_s = min(info["started_at"] for info in infos) - began_wall
            runs[concurrency] = (wall_s, setup_s, [row["config"] for row in summary["trials"]])
    finally:
        ray.shutdown()

    print(f"overhead: {args.trials} trials x {args.overhead_epochs} epochs, {cpus} cores, fixed start-up: ray.init {init_s:.1f} s")
    for concurrency, (wall_s, setup_s, configs) in runs.items():
        threads = concurrency  # the cores the Ray trials used, given to one in-process call at a time
        torch.set_num_threads(threads)
        train(TrainConfig.from_dict({**configs[0], "device": "cpu", "epochs": 1}))  # warm the data cache
        began = time.perf_counter()
        for config in configs:
            train(TrainConfig.from_dict({**config, "device": "cpu"}))
        local_s = time.perf_counter() - began
        print(f"  concurrency {concurrency}: Ray Tune {wall_s:.1f} s (start-up before the first trial {setup_s:.1f} s) | "
              f"in-process sequential with {threads} thread(s) {local_s:.1f} s | ratio {(wall_s - setup_s) / local_s:.2f} "
              f"excluding start-up ({wall_s / local_s:.2f} including)")


def efficiency(args: argparse.Namespace, workdir: Path) -> None:
    space = space_file(workdir, args)
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="ERROR")
    rows = []
    try:
        for seed in args.seeds:
            for label, flags in (("asha+tpe", ["--scheduler", "asha", "--searcher", "tpe"]),
                                 ("random", ["--scheduler", "none", "--searcher", "random"])):
                name = f"{label.replace('+', '-')}-seed{seed}"
                code = search_main(["--domain", args.domain, "--space", str(space), "--storage-path", str(workdir / "eff"),
                                    "--name", name, "--num-samples", str(args.num_samples), "--max-epochs", str(args.max_epochs),
                                    "--seed", str(seed), "--cpus-per-trial", "1", "--gpus-per-trial", "0",
                                    "--wandb", "disabled", *flags])
                assert code == 0, code
                summary = json.loads((workdir / "eff" / name / "summary.json").read_text())
                epochs = sum(row["epochs"] for row in summary["trials"])
                rows.append((seed, label, epochs, summary["best"][summary["metric"]]))
    finally:
        ray.shutdown()
    print(f"efficiency: {args.num_samples} samples x {args.max_epochs} epochs, {args.domain}, num_graphs {args.num_graphs}")
    print(f"  {'seed':>4}  {'search':<9} {'epochs':>6}  {'best val_acc':>12}")
    for seed, label, epochs, best in rows:
        print(f"  {seed:>4}  {label:<9} {epochs:>6}  {nsm_metrics.format_value('val_acc', best):>12}")
    for seed in args.seeds:
        (_, _, e_asha, b_asha), (_, _, e_rand, b_rand) = [row for row in rows if row[0] == seed]
        print(f"  seed {seed}: epochs ratio {e_asha / e_rand:.2f}, best val_acc difference {100 * (b_asha - b_rand):+.1f} points")
    asha = [row for row in rows if row[1] == "asha+tpe"]
    rand = [row for row in rows if row[1] == "random"]
    epoch_ratio = sum(r[2] for r in asha) / sum(r[2] for r in rand)
    acc_gap = 100 * (sum(r[3] for r in asha) - sum(r[3] for r in rand)) / len(asha)
    print(f"  mean over seeds: ASHA+TPE uses {epoch_ratio:.2f} of random's epochs, best val_acc {acc_gap:+.1f} points vs random "
          f"(target: <= 0.40 and >= -1.0)")


def main() -> int:
    args = parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="bench-search-") as directory:
        workdir = Path(directory)
        if not args.skip_overhead:
            overhead(args, workdir)
        if not args.skip_efficiency:
            efficiency(args, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
