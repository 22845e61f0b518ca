"""CLI: ``python search/run.py --domain planning`` searches lr, cycle_weight and batch_size of the NSM
trainer with Ray Tune driving Optuna (TPE), ASHA early stopping, and prints the ranked trials.

Also usable as ``search.run.main(argv)``, which returns the exit code (0 ok, 2 bad input, 130
interrupted).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):
    # Run as a script: the project is installed editable, so the package imports resolve; drop the
    # script's own directory so that `search/` does not shadow top-level modules.
    sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("/search")]

from nsm.errors import ConfigError  # noqa: E402
from search.driver import EXIT_INTERRUPTED, SearchRequest, run_search  # noqa: E402
from search.errors import SearchError  # noqa: E402
from spaces import DEFAULT_SPACE, SpaceError  # noqa: E402

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python search/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--domain", choices=None, metavar="{planning,causal,kg,all}",
                        help="domain to search; 'all' runs the three as three experiments in one Ray session "
                             "(required unless --resume)")
    parser.add_argument("--space", default=str(DEFAULT_SPACE), metavar="FILE",
                        help="search-space YAML (distributions and fixed trainer keys, per-domain overrides)")
    parser.add_argument("--num-samples", type=int, default=None, metavar="N",
                        help="trials to run (default: 24 on CPUs, 64 when trials use GPUs)")
    parser.add_argument("--max-epochs", type=int, default=None, metavar="E",
                        help="epochs of a trial that is never stopped early; ASHA's max_t (default: the space "
                             "file's `epochs`, else 20 on CPUs, 50 on GPUs)")
    parser.add_argument("--scheduler", choices=("asha", "none"), default="asha",
                        help="early stopping: ASHA on the metric (grace period ~max_epochs/4, reduction factor 3), or none")
    parser.add_argument("--searcher", choices=("tpe", "random"), default="tpe",
                        help="Optuna sampler (seeded with --seed); the baseline config is always the first trial")
    parser.add_argument("--metric", default="val_acc",
                        help="metric to rank and prune on (one of nsm's metric names); maximised for accuracies, "
                             "minimised for losses")
    parser.add_argument("--cpus-per-trial", type=float, default=None,
                        help="CPUs per trial, also the trial's torch threads (default: 1; with GPUs, the node's CPUs "
                             "shared among its trials, at most 4)")
    parser.add_argument("--gpus-per-trial", type=float, default=None,
                        help="GPUs per trial, at most 1; fractions such as 0.25 pack trials onto one GPU and cap "
                             "each trial's CUDA memory to its share (default: 0.25 when the cluster has GPUs, else 0)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="trials running at once (default: as many as the cluster's resources fit)")
    parser.add_argument("--address", default=None,
                        help="join an existing Ray cluster: 'auto' or 'ray://host:port' (default: start a local one)")
    parser.add_argument("--storage-path", default="./results",
                        help="directory holding one subdirectory per experiment, or a cloud URI that pyarrow "
                             "opens (s3://bucket/path, gs://bucket/path), as Ray's storage_path accepts")
    parser.add_argument("--name", default=None,
                        help="experiment name (default: <domain>-<UTC timestamp>; with --domain all, <name>-<domain>); "
                             "an existing name is refused unless resumed")
    parser.add_argument("--resume", default=None, metavar="NAME",
                        help="continue the experiment NAME under --storage-path with its stored settings: unfinished and "
                             "errored trials continue from their last checkpoint, the Optuna study continues")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler")
    parser.add_argument("--wandb", choices=("auto", "online", "offline", "disabled"), default="auto",
                        help="W&B logging via Ray's WandbLoggerCallback; auto = online when an API key is configured, "
                             "offline otherwise")
    parser.add_argument("--wandb-project", default="nsm-search", help="W&B project (the group is the experiment name)")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="stop starting and running trials after this many seconds (default: no limit)")
    parser.add_argument("--warm-start", default=None, metavar="FILE",
                        help="config file (YAML/JSON of trainer keys, e.g. an exported best config) whose searched "
                             "values are evaluated right after the baseline")
    return parser


def main(argv: Sequence[str] | None = None, callbacks: Sequence[Any] | None = None) -> int:
    """Parse ``argv`` and run the search; returns the exit code.

    ``callbacks``: extra ``ray.tune.Callback`` objects for the Tuner of a new experiment (a resumed
    one keeps the callbacks it was created with, as ``Tuner.restore`` does).
    """
    args = build_parser().parse_args(argv)
    request = SearchRequest(**vars(args))
    try:
        return run_search(request, callbacks=list(callbacks or []))
    except (SearchError, SpaceError, ConfigError) as error:
        message = " ".join(str(error).split())  # always one line
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
