"""The experiment's W&B workspace: ``python analysis/wandb_workspace.py results/<experiment>``.

Writes ``<experiment>/wandb_workspace.json``, the workspace's specification
(:func:`search.wandb_workspace.workspace_spec`: parallel coordinates of the searched keys to the
best metric, the metric per epoch with one line per trial, learning rate against the best metric,
parameter importance, and the runs table sorted by the best metric, all filtered to the experiment's
W&B group). With W&B online (``--wandb online``, or ``auto`` with an API key configured) and the
``wandb-workspaces`` package installed, it also saves the workspace to W&B and prints its URL. An
offline search's runs reach W&B with ``wandb sync <experiment>/wandb/offline-run-*``; run this
command afterwards.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: the project is installed editable, so `analysis` imports resolve; drop the
    # script's own directory so that `analysis/` does not shadow top-level modules.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from analysis import _cli
from analysis._wandb import resolve_mode
from analysis.errors import AnalysisError
from nsm.errors import first_line
from search.errors import SearchError
from search.settings import SETTINGS_FILE, SearchSettings
from search.wandb_workspace import create_workspace, save_spec, workspace_spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python analysis/wandb_workspace.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="experiment directory (results/<experiment>)")
    parser.add_argument("--entity", help="W&B entity (user or team) owning the project (default: your default entity)")
    parser.add_argument("--wandb", choices=("auto", "online", "offline"), default="auto",
                        help="online: also create the workspace on W&B; offline: only write its specification")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _cli.run(lambda: _main(args))


def _main(args: argparse.Namespace) -> None:
    if not (args.experiment / SETTINGS_FILE).is_file():
        raise AnalysisError(f"{args.experiment}: not a search experiment (no {SETTINGS_FILE})")
    try:
        settings = SearchSettings.load(args.experiment)
    except SearchError as error:
        raise AnalysisError(str(error)) from None
    spec = workspace_spec(settings, entity=args.entity)
    path = save_spec(spec, args.experiment)
    print(f"workspace specification: {path}")
    if resolve_mode(args.wandb) != "online":
        print(f"W&B is offline: upload the runs with `wandb sync {args.experiment}/wandb/offline-run-*`, "
              f"then run this command again with --wandb online to create the workspace")
        return
    try:
        url = create_workspace(spec, args.entity)
    except ImportError:
        raise AnalysisError("the wandb-workspaces package is not installed (pip install wandb-workspaces); "
                            f"the workspace specification is in {path}") from None
    except Exception as error:  # W&B's errors: no account, no network, no such entity
        raise AnalysisError(f"W&B could not save the workspace: {first_line(error)}") from None
    print(f"workspace: {url}")


if __name__ == "__main__":
    sys.exit(main())
