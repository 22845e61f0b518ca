"""The NSM on GraIL's inductive splits beside the PageRank shortcut and the published numbers:
``python bench/grail.py --splits WN18RR_v1 nell_v1``.

Per split, on the same fixed test candidates (data seed 0): the PPR shortcut (``nsm.ppr``); the NSM
at the baseline config (lr 1e-4, cycle_weight 0.01, batch_size 64, other keys at their defaults),
trained by ``nsm.train.train`` for ``--epochs`` epochs with ``--seeds`` seeds (mean +- std, as GraIL
reports 5 runs); optionally the NSM at a config a search found (``--config FILE``, an exported
best config; say its search budget with ``--config-label``); GraIL's published AUC-PR and Hits@10
and NBFNet's Hits@10. The weights tested are those of the best validation MRR (never the test
lists); the shortcut's and each NSM row's validation MRR and Hits@10 are printed too. Also: subgraph extraction time (a fresh data folder) and training graphs/s and s/epoch
(median over epochs). Torch runs on one thread (``--threads``), as a search trial does; on a
shared machine the times vary with its load, which is printed. With ``--results FILE`` each run is
appended to a JSON-lines file as it ends and runs already there are reused, so a long multi-seed bench
that was stopped goes on where it was.

    NSM_GRAIL_DIR=../shared/data/grail python bench/grail.py --splits WN18RR_v1 --epochs 30 --seeds 5 \
        --results bench/results/grail.jsonl
    NSM_GRAIL_DIR=../shared/data/grail python bench/grail.py --splits grail --ppr-only
    python bench/grail.py --from-results /work/runs/lp/wn1_base      # a finished run's table row
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: drop bench/ itself from the path, where a sibling script could shadow a package.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import torch  # noqa: E402

from nsm import ppr  # noqa: E402
from nsm.config import BASELINE, TrainConfig, load_config_file  # noqa: E402
from nsm.data import grail  # noqa: E402
from nsm.errors import ConfigError  # noqa: E402
from nsm.files import append_json_line, read_json_lines  # noqa: E402
from nsm.model import LINK_HEAD_REVISION  # noqa: E402
from nsm.train import GRAIL_DATA_SEED, train  # noqa: E402

_METRICS = ("test_auc_pr", "test_hits_at_10", "test_mrr")
_VAL_METRICS = tuple(name.replace("test_", "val_", 1) for name in _METRICS)  # the same metrics, on validation


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.no_baseline and args.config is None and not args.ppr_only:
        parser.error("--no-baseline needs --config (otherwise no NSM row is left to train)")
    torch.set_num_threads(args.threads)
    try:
        if args.from_results:
            rows = []
            for path in args.from_results:
                row = _row_from_results(Path(path))
                rows.append(row)
                rows.extend(_published_rows(row["split"]))
            _print_rows(rows)
            return 0
        splits = [s for name in args.splits for s in grail.resolve(name)]
        print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
        rows = []
        for split in splits:
            rows.extend(_bench_split(split, args))
            _print_rows(rows)  # after every split, so a long run shows progress
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _bench_split(split: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nsm-grail-bench-") as fresh:
        root = args.data_root or fresh
        started = time.perf_counter()
        data = grail.load_grail(split, root, seed=GRAIL_DATA_SEED)
        load_s = time.perf_counter() - started
        # Its validation numbers too: the NSM's rows are chosen on validation, so that is where the two first meet.
        shortcut = {**ppr.evaluate(data.protocol, "test"), **ppr.evaluate(data.protocol, "valid")}
        rows.append({"split": split, "method": "PPR shortcut", **shortcut, "extract_s": data.stats.get("extraction_s", load_s),
                     **_empty_true_subgraphs(data)})
        if not args.ppr_only:
            configs = [] if args.no_baseline else [("NSM baseline", {**BASELINE})]
            if args.config:
                found = load_config_file(args.config).to_dict()
                configs.append((f"NSM {args.config_label}", {k: v for k, v in found.items() if k not in ("domain", "data_root", "device")}))
            done = _read_runs(args.results)
            for label, values in configs:
                runs = []
                for seed in range(args.seeds):
                    key = _run_key(split, label, values, seed, args.epochs, LINK_HEAD_REVISION)
                    if key not in done:
                        done[key] = _train_once(split, label, values, seed, args, root)
                        if args.results is not None:
                            append_json_line(args.results, done[key])
                    runs.append(done[key])
                rows.append({"split": split, "method": label, **_aggregate(runs)})
    return rows + _published_rows(split)


def _empty_true_subgraphs(data: grail.GrailData) -> dict[str, int]:
    """How many test rankings have a true triple whose enclosing subgraph has no fact: there the
    roots share no node within the hop limit, and only what the model knows of the roots themselves
    can rank the true triple above its corruptions."""
    ranking = data.test_ranking
    facts = (ranking.edge_ptr[1:] - ranking.edge_ptr[:-1]).view(-1, data.num_candidates)[:, 0]
    return {"empty_true": int((facts == 0).sum()), "rankings": int(facts.numel())}


def _train_once(split: str, label: str, values: dict[str, Any], seed: int, args: argparse.Namespace,
                root: str) -> dict[str, Any]:
    """One NSM run: its test metrics (weights of the best val_mrr) and its speed, as a results line."""
    config = TrainConfig.from_dict({**values, "domain": split, "epochs": args.epochs, "seed": seed,
                                    "save_every": 0, "device": "cpu", "data_root": root}, source=label)
    epochs: list[dict[str, float]] = []
    result = train(config, on_epoch=lambda end: epochs.append(end.metrics))
    return {"split": split, "method": label, "config": values, "seed": seed, "epochs": args.epochs,
            "head_revision": LINK_HEAD_REVISION,
            **result["test_metrics"], **_validation(result["best_metrics"]),
            "epochs_run": result["epochs_run"], "best_epoch": result["best_epoch"],
            "wall_s": result["wall_time_s"], "s_per_epoch": statistics.median(e["epoch_time_s"] for e in epochs),
            "graphs_per_s": statistics.median(e["graphs_per_s"] for e in epochs),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}


def _validation(best: dict[str, float] | None) -> dict[str, float]:
    """The validation metrics of the epoch whose weights were tested: what a choice between rows may read."""
    return {name: value for name, value in (best or {}).items() if name in _VAL_METRICS}


def _run_key(split: str, label: str, values: dict[str, Any], seed: int, epochs: int, head_revision: int) -> str:
    # A key a line lacks took its default in that run (the baseline's lines hold three keys; older lines
    # predate later keys): filled in, the same config is the same point however it was written.
    return json.dumps([split, label, {**TrainConfig().to_dict(), **values}, seed, epochs, head_revision], sort_keys=True)


def _read_runs(path: Path | None) -> dict[str, dict[str, Any]]:
    """Runs already in ``--results``, so an interrupted multi-seed bench goes on where it stopped."""
    runs = {}
    for number, run in enumerate(read_json_lines(path) if path is not None else [], 1):
        try:
            # Lines written before heads had revisions were measured with revision 1.
            runs[_run_key(run["split"], run["method"], run["config"], run["seed"], run["epochs"],
                          run.get("head_revision", 1))] = run
        except (KeyError, TypeError):
            raise ConfigError(f"{path}:{number}: not a bench/grail.py results line") from None
    return runs


def _published_rows(split: str) -> list[dict[str, Any]]:
    published = grail.PUBLISHED[split]
    rows = [{"split": split, "method": "GraIL (published)", "test_auc_pr": published["grail_auc_pr"],
             "test_hits_at_10": published["grail_hits_at_10"]}]
    if "nbfnet_hits_at_10" in published:
        rows.append({"split": split, "method": "NBFNet (published)", "test_hits_at_10": published["nbfnet_hits_at_10"]})
    return rows


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in _METRICS:
        values = [run[name] for run in runs]
        row[name] = statistics.fmean(values)
        if len(values) > 1:  # printed even when 0: five seeds can tie on a discrete metric such as Hits@10
            row[f"{name}_std"] = statistics.stdev(values)
    for name in _VAL_METRICS:  # lines written before validation was recorded have none
        if all(name in run for run in runs):
            row[name] = statistics.fmean(run[name] for run in runs)
    row["seeds"] = len(runs)
    row["epochs"] = runs[0]["epochs_run"]
    row["best_epoch"] = statistics.fmean(run["best_epoch"] for run in runs)
    for name in ("wall_s", "s_per_epoch", "graphs_per_s"):
        row[name] = statistics.median(run[name] for run in runs)
    return row


def _row_from_results(run_dir: Path) -> dict[str, Any]:
    """The NSM row of a finished ``python -m nsm.train`` run, with the shortcut stored beside it."""
    path = run_dir / "final_results.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (a finished nsm.train run directory is expected)")
    results = json.loads(path.read_text())
    history = json.loads((run_dir / "training_history.json").read_text())
    row = {"split": results["config"]["domain"], "method": f"NSM ({run_dir.name})", **results["test_metrics"],
           "epochs": results["epochs_run"], "best_epoch": results["best_epoch"],
           "s_per_epoch": statistics.median(h["epoch_time_s"] for h in history),
           "graphs_per_s": statistics.median(h["graphs_per_s"] for h in history)}
    shortcut = {"split": row["split"], "method": "PPR shortcut", **results.get("shortcut_metrics", {})}
    return {**row, "_shortcut": shortcut}  # printed on the line above the run's


def _print_rows(rows: list[dict[str, Any]]) -> None:
    expanded = []
    for row in rows:
        if "_shortcut" in row:
            expanded.append(row["_shortcut"])
            row = {k: v for k, v in row.items() if k != "_shortcut"}
        expanded.append(row)
    print(f"\n{'split':<11} {'method':<22} {'AUC-PR %':>14} {'Hits@10 %':>14} {'MRR %':>14}  notes")
    for row in expanded:
        cells = []
        for name in _METRICS:
            value = row.get(name)
            std = row.get(f"{name}_std")
            text = "-" if value is None else f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")
            cells.append(f"{text:>14}")
        notes = []
        if "extract_s" in row:
            notes.append(f"extraction {row['extract_s']:.1f} s")
        if "empty_true" in row:
            notes.append(f"true triple's subgraph empty in {row['empty_true']} of {row['rankings']} test rankings")
        if "val_mrr" in row:
            notes.append(f"validation MRR {100 * row['val_mrr']:.2f}, Hits@10 {100 * row['val_hits_at_10']:.2f}")
        if "s_per_epoch" in row:  # an NSM row: several seeds (bench runs) or one finished run (--from-results)
            runs = f"{row['seeds']} seed(s) x " if "seeds" in row else ""
            wall = f", {row['wall_s']:.0f} s/run" if "wall_s" in row else ""
            notes.append(f"{runs}{row['epochs']} epochs, best epoch {row['best_epoch']:.0f}{wall}, "
                         f"{row['s_per_epoch']:.1f} s/epoch, {row['graphs_per_s']:.0f} train graphs/s")
        print(f"{row['split']:<11} {row['method']:<22} {' '.join(cells)}  {'; '.join(notes)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/grail.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", nargs="+", default=["WN18RR_v1"], help="split names (any case) or 'grail' for all 12")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs per NSM run")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per NSM config (GraIL reports 5)")
    parser.add_argument("--config", type=Path, default=None, help="a config a search found (exported best config file)")
    parser.add_argument("--config-label", default="searched", help="how to name that row, e.g. 'ASHA+TPE 24x20'")
    parser.add_argument("--ppr-only", action="store_true", help="only the shortcut and the published rows")
    parser.add_argument("--no-baseline", action="store_true",
                        help="train only the --config row (e.g. when the baseline's runs took hours and are known)")
    parser.add_argument("--data-root", default=None, help="data folder (default: a fresh one, so extraction is timed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a search trial uses 1 per CPU)")
    parser.add_argument("--results", type=Path, default=None, metavar="FILE",
                        help="append each NSM run to this JSON-lines file; runs already in it are not trained again")
    parser.add_argument("--from-results", nargs="+", default=None, metavar="RUN_DIR",
                        help="print the rows of finished nsm.train runs (their final_results.json) instead of training")
    return parser


if __name__ == "__main__":
    sys.exit(main())
