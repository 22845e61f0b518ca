"""What the analysis scripts share: one-line errors with exit status 2, and the experiment's status note."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from analysis.errors import AnalysisError
from analysis.experiment import Experiment, open_experiment

EXIT_OK = 0
EXIT_USAGE = 2


def run(command: Callable[[], None]) -> int:
    """Run a script's body; a user mistake becomes ``error: <message>`` on stderr and exit status 2."""
    try:
        command()
    except AnalysisError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def open_noted(path: Path, metric: str | None = None, mode: str | None = None) -> Experiment:
    """Open an experiment, first saying so when it is unfinished or has errored trials."""
    experiment = open_experiment(path, metric=metric, mode=mode)
    note = experiment.status_note()
    if note:
        print(f"note: {note}")
    return experiment
