"""Driver overhead and memory of a large search: ``python bench/scale.py`` (1,000 trials).

A stand-in trainable of fixed duration (``--epochs`` epochs of ``--epoch-s`` seconds, reporting only
``epoch``, ``val_acc`` and ``nsm_status``) runs under the search's own settings (TPE through
``PruneAwareOptunaSearch`` over a journal file, ASHA, per-epoch reporting) on a declared cluster of
logical GPUs (default 8 GPUs at 0.25 per trial: 32 trials at once). Nothing trains, so what is left of
the wall time is the cost of running the search:

- overhead per trial = (wall time - ideal time) / trials, where the ideal time is the trials' own
  busy time (epochs actually run x epoch duration) spread perfectly over the slots. Target < 0.2 s.
- driver CPU per trial: the driver process's CPU time (all its threads) during the search, divided by
  the trials. On a small machine the trial processes compete with the driver for cores and inflate the
  wall-time overhead; this number is the driver's own work, which is what limits a large cluster.
- driver memory growth per trial: the driver's RSS sampled as trials complete, slope of a least-squares
  line over the second half of the run (after warm-up). Target: small and flat (no unbounded growth).

    python bench/scale.py                                   # 1,000 trials (~10 min on 2 cores)
    python bench/scale.py --num-trials 200 --gpus 2         # quick
    python bench/scale.py --num-trials 40 --gpus 2 --wandb offline   # W&B logging's cost on the driver

It also times every ``on_trial_result`` callback call in the driver (Ray warns above 0.5 s): the
mean and the largest per result, by callback class, and the first result of a trial (which pays for
any per-trial set-up a callback does) apart from the others.

It prints the numbers and exits 0; the targets are printed beside them, not enforced.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    # Run as a script: the project is installed, so drop bench/ itself from the path, where a sibling
    # script (bench/search.py) would shadow the search package.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import psutil  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402

from nsm import metrics as nsm_metrics  # noqa: E402
from nsm.config import BASELINE  # noqa: E402
from search.outcome import STATUS_KEY  # noqa: E402
from search.preflight import asha_grace_period  # noqa: E402
from search.settings import SearchSettings  # noqa: E402
from search.tuner import build_tuner  # noqa: E402
from spaces import DEFAULT_SPACE, load_space  # noqa: E402

OVERHEAD_TARGET_S = 0.2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    slots = int(args.gpus / args.gpus_per_trial)
    storage = tempfile.mkdtemp(prefix="nsm-scale-")
    # Fresh local Ray (never one found in /tmp/ray), no dashboard: only the search's own cost is measured.
    ray.init(address="local", num_cpus=slots * args.cpus_per_trial, num_gpus=args.gpus,
             include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        settings = _settings(args, storage, slots)
        meter = _DriverMemory(every=max(1, args.num_trials // 50))
        tuner = _tuner(settings, _stand_in(args.epoch_s, args.epochs), meter, args.wandb)
        timer = _time_result_callbacks()
        driver = psutil.Process(os.getpid())
        driver_before, machine_before, started = _cpu_seconds(driver), _machine_busy_seconds(), time.monotonic()
        results = tuner.fit()
        wall = time.monotonic() - started
        driver_cpu, machine_cpu = _cpu_seconds(driver) - driver_before, _machine_busy_seconds() - machine_before
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)

    epochs_run = sum(int(result.metrics.get("epoch", 0)) for result in results)
    ideal = epochs_run * args.epoch_s / slots
    overhead = (wall - ideal) / max(1, len(results))
    slope_kb, growth_mb = meter.growth()
    print(f"{args.num_trials} trials x up to {args.epochs} epochs of {args.epoch_s:g} s (stand-in), "
          f"{args.gpus:g} GPUs x {args.gpus_per_trial:g} = {slots} at once, ASHA + TPE")
    print(f"trials run: {len(results)} ({epochs_run} epochs; {len(results.errors)} errors)")
    print(f"wall {wall:.1f} s vs ideal {ideal:.1f} s: driver overhead {overhead:.3f} s/trial "
          f"(target < {OVERHEAD_TARGET_S} s: {'ok' if overhead < OVERHEAD_TARGET_S else 'MISSED'})")
    print(f"driver CPU {driver_cpu:.1f} s: {driver_cpu / max(1, len(results)):.3f} s/trial "
          f"(the driver's own work, whatever else shares its cores)")
    print(f"machine CPU {machine_cpu:.1f} s of {wall * psutil.cpu_count():.1f} s available "
          f"({psutil.cpu_count()} cores): the driver {driver_cpu / max(machine_cpu, 1e-9):.0%} of it, "
          f"the rest Ray's trial processes, raylet and GCS")
    for name, (first, later) in sorted(timer.items()):
        print(f"on_trial_result {name}: first result of a trial mean {_mean(first) * 1e3:.1f} ms "
              f"(max {max(first, default=0) * 1e3:.1f}), later results mean {_mean(later) * 1e3:.2f} ms "
              f"(max {max(later, default=0) * 1e3:.1f}); {len(first) + len(later)} calls")
    print(f"driver RSS {meter.first_mb:.0f} MB -> {meter.last_mb:.0f} MB (+{growth_mb:.0f} MB); "
          f"growth over the second half {slope_kb:.1f} KB/trial")
    return 0


def _time_result_callbacks() -> dict[str, tuple[list[float], list[float]]]:
    """Time each callback's ``on_trial_result`` in the driver, by class: (first results, later results).

    Patches Ray's ``CallbackList`` for this process only (the callbacks themselves are pickled by the
    Tuner, so they are not wrapped).
    """
    from ray.tune.callback import CallbackList

    times: dict[str, tuple[list[float], list[float]]] = {}
    seen: set[tuple[str, str]] = set()

    def on_trial_result(self: CallbackList, **info: Any) -> None:
        trial_id = info["trial"].trial_id
        for callback in self._callbacks:
            started = time.perf_counter()
            callback.on_trial_result(**info)
            elapsed = time.perf_counter() - started
            name = type(callback).__name__
            first, later = times.setdefault(name, ([], []))
            (later if (name, trial_id) in seen else first).append(elapsed)
            seen.add((name, trial_id))

    CallbackList.on_trial_result = on_trial_result
    return times


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-trials", type=int, default=1000)
    parser.add_argument("--gpus", type=float, default=8, help="logical GPUs declared by the cluster")
    parser.add_argument("--gpus-per-trial", type=float, default=0.25)
    parser.add_argument("--cpus-per-trial", type=int, default=1, help="logical CPUs per trial (declared, not used)")
    parser.add_argument("--epochs", type=int, default=4, help="max epochs (ASHA's max_t)")
    parser.add_argument("--wandb", choices=("disabled", "offline"), default="disabled",
                        help="log the trials to W&B offline (files in the temporary experiment directory)")
    parser.add_argument("--console", choices=("quiet", "live"), default="quiet",
                        help="live: include the search's live view (search/console.py) in the timings")
    parser.add_argument("--epoch-s", type=float, default=0.25, help="duration of one stand-in epoch")
    return parser


def _settings(args: argparse.Namespace, storage: str, slots: int) -> SearchSettings:
    return SearchSettings(
        domain="planning", name="scale", storage_path=storage, space=str(DEFAULT_SPACE),
        num_samples=args.num_trials, max_epochs=args.epochs, scheduler="asha", searcher="tpe",
        metric="val_acc", mode=nsm_metrics.mode("val_acc"), cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_concurrent=slots, seed=0, wandb=args.wandb, console=args.console,
        grace_period=asha_grace_period(args.epochs), searched_keys=list(BASELINE),
    )


def _stand_in(epoch_s: float, epochs: int) -> Callable[[dict[str, Any]], None]:
    """A trainable that sleeps instead of training; its score depends smoothly on lr so TPE has work."""

    def stand_in(config: dict[str, Any]) -> None:
        quality = math.exp(-((math.log10(config["lr"]) + 2.5) ** 2))
        for epoch in range(1, epochs + 1):
            time.sleep(epoch_s)
            tune.report({"epoch": epoch, "val_acc": 0.5 + 0.4 * quality * epoch / epochs, STATUS_KEY: "running"})

    return stand_in


def _tuner(settings: SearchSettings, trainable: Callable, meter: tune.Callback, wandb_mode: str) -> tune.Tuner:
    """The search's own Tuner construction (search.tuner.build_tuner) with the stand-in trainable."""
    os.makedirs(settings.experiment_dir, exist_ok=True)
    space = load_space(DEFAULT_SPACE, settings.domain)
    space.pop("epochs", None)
    if wandb_mode == "offline":
        os.environ["WANDB_MODE"] = "offline"  # Ray's W&B callback asks for an API key otherwise
    return build_tuner(settings, space, [dict(BASELINE)], wandb_mode, extra_callbacks=[meter], trainable=trainable)


class _DriverMemory(tune.Callback):
    """Samples the driver's RSS every ``every`` completed trials."""

    def __init__(self, every: int) -> None:
        self._every = every  # (no psutil.Process kept here: the Tuner pickles its callbacks)
        self.samples: list[tuple[int, float]] = []  # (trials completed, RSS MB)
        self._completed = 0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._completed += 1
        if self._completed % self._every == 0:
            self.samples.append((self._completed, psutil.Process(os.getpid()).memory_info().rss / 2**20))

    @property
    def first_mb(self) -> float:
        return self.samples[0][1] if self.samples else float("nan")

    @property
    def last_mb(self) -> float:
        return self.samples[-1][1] if self.samples else float("nan")

    def growth(self) -> tuple[float, float]:
        """(KB per trial over the second half, total MB from the first sample to the last)."""
        half = self.samples[len(self.samples) // 2:]
        if len(half) < 2:
            return float("nan"), float("nan")
        xs = [x for x, _ in half]
        ys = [y for _, y in half]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
        return slope * 1024, self.last_mb - self.first_mb


if __name__ == "__main__":
    sys.exit(main())
