"""Benchmark the search driver; prints ratios (not a test).

1. Overhead: N trials of one small fixed budget through Ray Tune (our trainable, checkpoints every
   epoch, searcher, experiment snapshots) versus the same trainer calls run in-process one after
   the other with all cores. Prints wall(Ray) / wall(in-process), with Ray's start-up cost (ray.init
   and the Tuner's set-up before the first trial) printed separately. Target <= 1.2.
2. Worth, at equal compute: every method gets the same total epoch budget B = random-trials x
   max-epochs, enforced by the search's own ``--epoch-budget`` (a Ray Stopper). Random search is FIFO
   + random sampling run to the whole budget; methods that stop trials early run more trials within
   it. Per domain and method, over seeds: the best validation metric within the budget, the test
   metric of the checkpoint chosen on validation alone, and the epochs until random's final best was
   first matched. Seed-major; each search appends one JSON line to --results, and rows already
   there are skipped, so an interrupted bench continues where it stopped. On GraIL's splits the
   metrics are the task's own: ``val_mrr`` to choose, ``test_mrr`` on the split's fixed candidates.

    python bench/search.py --skip-overhead                 # the worth table: 5 seeds x 3 domains
    python bench/search.py --skip-overhead --seeds 0 --domains planning   # one comparison
    NSM_GRAIL_DIR=../shared/data/grail python bench/search.py --skip-overhead --domains WN18RR_v1 \
        --seeds 0 1 2 --random-trials 4 --max-epochs 10               # the real benchmark
    python bench/search.py --skip-efficiency               # the overhead ratios only
    python bench/search.py --quick                         # a smoke run of both
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# This file is bench/search.py: as a script its own directory comes first on sys.path and would
# shadow the `search` package it benchmarks.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import ray  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402

from nsm.domains import DOMAINS, SYNTHETIC, canonical_domain, is_domain, is_link_prediction, task_of  # noqa: E402
from nsm.files import append_json_line, read_json_lines  # noqa: E402
from nsm.model import LINK_HEAD_REVISION  # noqa: E402
from nsm.train import TrainConfig, train  # noqa: E402
from search.run import main as search_main  # noqa: E402

EXIT_USAGE = 2


@dataclass(frozen=True)
class Method:
    """One way to spend the budget: scheduler, searcher, and the ASHA grace period (None: the default)."""

    name: str
    scheduler: str
    searcher: str
    grace_period: int | None = None
    reduction_factor: int = 3

    def flags(self) -> list[str]:
        flags = ["--scheduler", self.scheduler, "--searcher", self.searcher, "--reduction-factor", str(self.reduction_factor)]
        return flags + (["--grace-period", str(self.grace_period)] if self.grace_period else [])

    def max_trials(self, budget: int, max_epochs: int, default_grace: int) -> int:
        """Trials the budget could pay for if every one stopped as early as the scheduler allows."""
        shortest = max_epochs if self.scheduler == "none" else min(self.grace_period or default_grace, max_epochs)
        return math.ceil(budget / shortest)


RANDOM = "random"
METHODS = {m.name: m for m in (
    Method(RANDOM, "none", "random"),
    Method("asha+tpe", "asha", "tpe"),  # the project's default
    Method("asha+tpe-mv", "asha", "tpe-mv"),
    Method("fifo+tpe-mv", "none", "tpe-mv"),
    Method("asha-g4+tpe-mv", "asha", "tpe-mv", grace_period=4),
    Method("asha-g4-rf2+tpe", "asha", "tpe", grace_period=4, reduction_factor=2),
    Method("asha-g8+tpe", "asha", "tpe", grace_period=8),
)}
DEFAULT_METHODS = [RANDOM, "asha+tpe", "asha+tpe-mv", "fifo+tpe-mv"]


class BenchError(Exception):
    """Bad input: reported as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own prints the usage too: keep bad input to one line
        raise BenchError(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="planning", help="overhead: the domain")
    parser.add_argument("--trials", type=int, default=4, help="overhead: trials of the fixed budget")
    parser.add_argument("--overhead-epochs", type=int, default=4)
    parser.add_argument("--domains", nargs="+", default=list(SYNTHETIC),
                        help="worth: domains, in order (the synthetic three, or GraIL split names)")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                        help=f"worth: methods, random first; without random, its rows must come from --results "
                        f"(all: {', '.join(METHODS)})")
    parser.add_argument("--random-trials", type=int, default=6, help="worth: the budget is this many full trials")
    parser.add_argument("--max-epochs", type=int, default=8, help="worth: epochs of a trial never stopped early")
    parser.add_argument("--num-graphs", type=int, default=400, help="worth: small enough that no domain saturates")
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--data-root", default=None, help="worth: the trials' data folder (default: the trainer's)")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--results", default="bench-search-results.jsonl",
                        help="worth: JSON lines appended per search; rows already there are not run again")
    parser.add_argument("--workdir", default=None, help="where the experiments go (default: a temporary directory)")
    parser.add_argument("--table-only", action="store_true", help="worth: print the table of --results, run nothing")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-efficiency", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of both benchmarks")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.overhead_epochs, args.random_trials, args.max_epochs = 2, 2, 2, 3
        args.num_graphs, args.hidden_dim, args.seeds, args.domains = 160, 16, [0], ["planning"]
    _check_args(args)
    return args


def _check_args(args: argparse.Namespace) -> None:
    unknown = [name for name in args.methods if name not in METHODS]
    if unknown:
        raise BenchError(f"--methods: unknown {', '.join(unknown)} (choose from {', '.join(METHODS)})")
    if RANDOM in args.methods and args.methods[0] != RANDOM:
        raise BenchError(f"--methods must start with {RANDOM} (the baseline the others are matched against)")
    bad = [name for name in args.domains if not is_domain(name)]
    if bad:
        raise BenchError(f"--domains: unknown {', '.join(bad)} (choose from {', '.join(DOMAINS)})")
    args.domains = [canonical_domain(name) for name in args.domains]
    for flag in ("random_trials", "max_epochs", "num_graphs", "hidden_dim", "max_concurrent", "trials", "overhead_epochs"):
        if getattr(args, flag) < 1:
            raise BenchError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")


def space_file(directory: Path, args: argparse.Namespace, seed: int = 0) -> Path:
    """The default space's searched keys; the data and initialisation seed follow the bench seed."""
    path = directory / f"space-seed{seed}.yaml"
    path.write_text(textwrap.dedent(f"""
        default:
          lr: {{type: loguniform, low: 1.0e-5, high: 1.0e-2}}
          cycle_weight: {{type: loguniform, low: 1.0e-3, high: 0.3}}
          batch_size: {{type: choice, values: [16, 32, 64, 128]}}
          hidden_dim: {args.hidden_dim}
          num_graphs: {args.num_graphs}
          seed: {seed}
          save_every: 0
    """))
    if getattr(args, "data_root", None):
        with open(path, "a") as file:
            file.write(f"  data_root: {json.dumps(str(Path(args.data_root).resolve()))}\n")
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


# ------------------------------------------------------------------------------------------------
# Worth at equal compute


class EpochRecorder(tune.Callback):
    """Appends every result Ray processes, in its order, to a JSON-lines file: the search's timeline.

    A file rather than a list: Ray pickles callbacks into the experiment and may copy them."""

    def __init__(self, path: Path, metric: str) -> None:
        self.path, self.metric = str(path), metric

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        value = result.get(self.metric)
        record = {"trial": trial.trial_id, "epoch": result.get("epoch"),
                  "value": float(value) if isinstance(value, (int, float)) else None}
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")


def analyse(records: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """The search as it stood after ``budget`` epochs (maximised metric): each (trial, epoch) counts
    once, in the order Ray processed them; results past the budget (a trial that reported alongside
    the one that spent it) are left out. ``curve[i]`` = best value after i + 1 epochs."""
    seen: set[tuple[str, int]] = set()
    values: dict[tuple[str, int], float] = {}
    best, chosen, curve = -math.inf, None, []
    for record in records:
        if record["epoch"] is None:
            continue
        key = (record["trial"], int(record["epoch"]))
        if key in seen:
            continue
        if len(seen) == budget:
            break
        seen.add(key)
        value = record["value"]
        if value is not None and math.isfinite(value):
            values[key] = value
            if value > best:  # the first to reach the best is chosen
                best, chosen = value, key
        curve.append(best if math.isfinite(best) else None)
    return {"epochs_run": len({(r["trial"], r["epoch"]) for r in records if r["epoch"] is not None}),
            "epochs_counted": len(seen), "trials": len({trial for trial, _ in seen}),
            "best_val": best if math.isfinite(best) else None,
            "chosen_trial": chosen[0] if chosen else None, "chosen_epoch": chosen[1] if chosen else None, "curve": curve,
            # The chosen trial's counted epochs and their values (for a checkpoint of an equal value).
            "chosen_values": {epoch: value for (trial, epoch), value in values.items() if chosen and trial == chosen[0]}}


def epochs_to_match(curve: list[float | None], target: float) -> int | None:
    """Epochs until the best-so-far first reached ``target`` (None: never within the curve)."""
    for epochs, value in enumerate(curve, start=1):
        if value is not None and value >= target - 1e-12:
            return epochs
    return None


def chosen_checkpoint(trial_dir: Path, epoch: int, values: dict[int, float]) -> tuple[Path, int]:
    """The trial's checkpoint of ``epoch``; if Ray did not keep it (num_to_keep ranks by the metric, and a
    later epoch may have tied it), the kept one of the best value among the counted epochs ``values``
    (a tie of the chosen value when Ray dropped the chosen epoch for it: still a choice on validation)."""
    from nsm.checkpoint import load_checkpoint

    kept = {}
    for path in sorted(trial_dir.glob("checkpoint_*/checkpoint.pt")):
        kept.setdefault(int(load_checkpoint(path)["epoch"]), path)
    if epoch in kept:
        return kept[epoch], epoch
    counted = [e for e in kept if e in values]
    if not counted:
        raise RuntimeError(f"{trial_dir}: no checkpoint of a counted epoch (kept {sorted(kept)})")
    fallback = max(counted, key=lambda e: (values[e], -e))
    return kept[fallback], fallback


def selection_metric(domain: str) -> tuple[str, str]:
    """The validation metric a search on ``domain`` chooses by, and the test metric it is judged by."""
    metric = task_of(domain).default_metric
    return metric, "test_" + metric.removeprefix("val_")


def test_metric(checkpoint: Path) -> float:
    """A checkpoint's test metric on its own domain: accuracy on a synthetic test split, MRR on a
    GraIL split's fixed test candidates."""
    from analysis.evaluate import link_prediction_test, predict_test
    from nsm.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    domain = loaded["config"]["domain"]
    if is_link_prediction(domain):
        return float(link_prediction_test(loaded)["test_metrics"][selection_metric(domain)[1]])
    probs, labels = predict_test(loaded)
    return float((probs.argmax(axis=1) == labels).mean())


def run_one(args: argparse.Namespace, method: Method, domain: str, seed: int, workdir: Path) -> dict[str, Any]:
    """One search of ``method`` on ``domain`` with the whole epoch budget; its result row."""
    from search.preflight import asha_grace_period

    budget = args.random_trials * args.max_epochs
    name = f"{domain}-{method.name.replace('+', '_')}-seed{seed}-{time.strftime('%H%M%S')}"
    timeline = workdir / f"{name}.timeline.jsonl"
    num_samples = method.max_trials(budget, args.max_epochs, asha_grace_period(args.max_epochs))
    began = time.perf_counter()
    code = search_main(["--domain", domain, "--space", str(space_file(workdir, args, seed)),
                        "--storage-path", str(workdir / "eff"), "--name", name, "--num-samples", str(num_samples),
                        "--max-epochs", str(args.max_epochs), "--epoch-budget", str(budget), "--seed", str(seed),
                        "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--max-concurrent", str(args.max_concurrent),
                        "--wandb", "disabled", *method.flags()],
                       callbacks=[EpochRecorder(timeline, selection_metric(domain)[0])])
    wall_s = time.perf_counter() - began
    if code != 0:
        raise RuntimeError(f"search {name} exited {code}")
    records = [json.loads(line) for line in timeline.read_text().splitlines()] if timeline.exists() else []
    row = {"seed": seed, "domain": domain, "method": method.name, "budget": budget, "num_samples": num_samples,
           "max_epochs": args.max_epochs, "num_graphs": args.num_graphs, "hidden_dim": args.hidden_dim,
           "head_revision": _head_revision(domain), "wall_s": round(wall_s, 1), **analyse(records, budget)}
    row["test"] = row["test_epoch"] = None
    if row["chosen_trial"] is not None:
        checkpoint, row["test_epoch"] = chosen_checkpoint(workdir / "eff" / name / f"trial_{row['chosen_trial']}",
                                                          row["chosen_epoch"], row.pop("chosen_values"))
        row["test"] = test_metric(checkpoint)
    return row


def _same_setup(row: dict[str, Any], args: argparse.Namespace) -> bool:
    # Rows written before link-prediction heads had revisions were measured with revision 1.
    earlier = 1 if is_link_prediction(str(row.get("domain"))) else None
    return (row.get("budget") == args.random_trials * args.max_epochs and row.get("max_epochs") == args.max_epochs
            and row.get("num_graphs") == args.num_graphs and row.get("hidden_dim") == args.hidden_dim
            and row.get("head_revision", earlier) == _head_revision(str(row.get("domain"))))


def _head_revision(domain: str) -> int | None:
    """The link-prediction head a row of ``domain`` is measured with (None on a synthetic domain)."""
    return LINK_HEAD_REVISION if is_link_prediction(domain) else None


def efficiency(args: argparse.Namespace, workdir: Path) -> None:
    results = Path(args.results)
    if args.table_only:
        print(format_table([r for r in read_json_lines(results) if _same_setup(r, args)], args.methods, args.domains))
        return
    done = {(r["seed"], r["domain"], r["method"]) for r in read_json_lines(results) if _same_setup(r, args)}
    # "local": a fresh Ray of our own, never a cluster another process left recorded in /tmp/ray.
    ray.init(address="local", num_cpus=args.max_concurrent, include_dashboard=False, logging_level="ERROR")
    try:
        for seed in args.seeds:  # seed-major: a partial run still covers every domain and method
            for domain in args.domains:
                for name in args.methods:
                    if (seed, domain, name) in done:
                        continue
                    row = run_one(args, METHODS[name], domain, seed, workdir)
                    append_json_line(results, row)
                    val_name, test_name = selection_metric(domain)
                    print(f"[worth] seed {seed} {domain} {name}: best {val_name} {row['best_val']:.4f}, {test_name} "
                          f"{row['test']:.4f}, {row['epochs_counted']}/{row['budget']} epochs, {row['trials']} trials, "
                          f"{row['wall_s']:.0f} s", flush=True)
    finally:
        ray.shutdown()
    rows = [r for r in read_json_lines(results) if _same_setup(r, args)]
    print(format_table(rows, args.methods, args.domains))


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def format_table(rows: list[dict[str, Any]], methods: list[str], domains: list[str]) -> str:
    """Markdown table: per domain and method, mean ± std over the seeds that every method finished."""
    methods = [RANDOM, *(m for m in methods if m != RANDOM)]
    lines = ["| domain (val / test metric) | method | seeds | epochs used / budget | best val | test (chosen on val) | "
             "Δ best val vs random | epochs to match random's best | matched within 40% |",
             "|---|---|---|---|---|---|---|---|---|"]
    for domain in domains:
        label = "{} ({} / {})".format(domain, *selection_metric(domain))
        by = {(r["seed"], r["method"]): r for r in rows if r["domain"] == domain}
        seeds = sorted({seed for seed, _ in by if all((seed, m) in by for m in methods)})
        if not seeds:
            continue
        for method in methods:
            picked = [by[(seed, method)] for seed in seeds]
            randoms = [by[(seed, RANDOM)] for seed in seeds]
            matches = [epochs_to_match(r["curve"], base["best_val"]) for r, base in zip(picked, randoms)]
            budget = picked[0]["budget"]
            within = sum(m is not None and m <= 0.4 * budget for m in matches)
            reached = [m for m in matches if m is not None]
            match_text = (f"{statistics.fmean(reached):.0f} ({len(reached)}/{len(seeds)} reached)" if reached
                          else f"never (0/{len(seeds)})")
            gaps = [r["best_val"] - base["best_val"] for r, base in zip(picked, randoms)]
            lines.append(
                f"| {label} | {method} | {len(seeds)} | {statistics.fmean(r['epochs_counted'] for r in picked):.0f} / {budget} | "
                f"{_mean_std([r['best_val'] for r in picked])} | {_mean_std([r['test'] for r in picked])} | "
                f"{'-' if method == RANDOM else f'{100 * statistics.fmean(gaps):+.1f} pts'} | {match_text} | {within}/{len(seeds)} |")
        best_random = max(by[(seed, RANDOM)]["best_val"] for seed in seeds)
        verdict = "below the ceiling" if best_random < 1.0 else "AT the ceiling in some seed"
        lines.append(f"| {label} | (ceiling check) | | | random's highest best {best_random:.3f}: {verdict} |  |  |  |  |")
    return "\n".join(lines)

def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="bench-search-") as directory:
        workdir = Path(args.workdir) if args.workdir else Path(directory)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.skip_overhead and not args.table_only:
            overhead(args, workdir)
        if not args.skip_efficiency:
            efficiency(args, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
