"""GraIL splits, data side: subgraph extraction time, cache load time, sizes, and the PageRank
shortcut beside GraIL's published numbers: ``python bench/grail_data.py [--splits ...]``.

Per split, in a fresh data folder (the files come from ``$NSM_GRAIL_DIR`` or are downloaded):
the wall and CPU time of ``load_grail`` building everything (protocol and every enclosing
subgraph: training pairs, validation pairs and lists, test pairs and 50-candidate lists), the time
of a second, cached ``load_grail``, the number of subgraphs and how many hit ``--max-nodes``; then
the PPR shortcut's test AUC-PR, Hits@10 and MRR (ties at the mean rank; Hits@10 with pessimistic
ties too) next to GraIL's published AUC-PR and Hits@10 and NBFNet's Hits@10. The extraction target
is WN18RR_v1 in at most 60 s on 2 cores, and a cached load in at most 2 s.

    NSM_GRAIL_DIR=../shared/data/grail python bench/grail_data.py --splits WN18RR_v1
    NSM_GRAIL_DIR=../shared/data/grail python bench/grail_data.py --ppr-only      # the table, all 12
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: drop bench/ itself from the path, where a sibling script could shadow a package.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import torch  # noqa: E402

from nsm import ppr  # noqa: E402
from nsm.data import grail  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    splits = [s for name in args.splits for s in grail.resolve(name)]
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    if not args.ppr_only:
        print(f"{'split':<11} {'build s':>8} {'cpu s':>7} {'load s':>7} {'graphs':>8} {'capped':>7} {'largest':>8} {'cache MB':>9}")
        for split in splits:
            with tempfile.TemporaryDirectory(prefix="grail-bench-") as root:
                wall, cpu = time.perf_counter(), time.process_time()
                data = grail.load_grail(split, root, max_nodes=args.max_nodes)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                again = time.perf_counter()
                grail.load_grail(split, root, max_nodes=args.max_nodes)
                again = time.perf_counter() - again
                size = sum(p.stat().st_size for p in (Path(root) / "grail" / "processed").iterdir()) / 2**20
                s = data.stats
                print(f"{split:<11} {wall:>8.1f} {cpu:>7.1f} {again:>7.2f} {s['graphs']:>8} {s['capped']:>7} {s['largest']:>8} {size:>9.1f}")
    print()
    header = f"{'split':<11} {'PPR AUC-PR':>10} {'GraIL':>6} {'PPR H@10':>9} {'(pess.)':>8} {'GraIL':>6} {'NBFNet':>7} {'PPR MRR':>8} {'s':>5}"
    print(header)
    for split in splits:
        with tempfile.TemporaryDirectory(prefix="grail-bench-") as root:
            start = time.perf_counter()
            protocol = grail.grail_protocol(split, root)
            pair, lists = ppr.scores(protocol, "test")
            mean = ppr.metrics(pair, lists, ties="mean")
            pessimistic = ppr.metrics(pair, lists, ties="pessimistic")
            took = time.perf_counter() - start
        pub = grail.PUBLISHED[split]
        nbf = f"{100 * pub['nbfnet_hits_at_10']:>7.1f}" if "nbfnet_hits_at_10" in pub else f"{'-':>7}"
        print(
            f"{split:<11} {100 * mean['test_auc_pr']:>10.2f} {100 * pub['grail_auc_pr']:>6.2f} "
            f"{100 * mean['test_hits_at_10']:>9.2f} {100 * pessimistic['test_hits_at_10']:>8.2f} "
            f"{100 * pub['grail_hits_at_10']:>6.2f} {nbf} {100 * mean['test_mrr']:>8.2f} {took:>5.1f}"
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", nargs="+", default=[grail.GROUP], help="split names or 'grail' for all 12 (default)")
    parser.add_argument("--max-nodes", type=int, default=grail.DEFAULT_MAX_NODES, help="subgraph node cap")
    parser.add_argument("--ppr-only", action="store_true", help="skip subgraph extraction; print the PPR table")
    return parser


if __name__ == "__main__":
    sys.exit(main())
