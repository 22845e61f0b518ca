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
from search.driver import EXIT_INTERRUPTED, run_experiments  # noqa: E402
from search.errors import SearchError  # noqa: E402
from search.settings import SearchSettings, flags  # noqa: E402
from spaces import SpaceError  # noqa: E402

EXIT_USAGE = 2

_FLAG_TYPES = {"int | None": int, "int": int, "float | None": float, "float": float}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends a flag's default unless its help already explains it (a default of None is resolved later)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The CLI, generated from :class:`search.settings.SearchSettings`: one flag per setting that has help."""
    parser = argparse.ArgumentParser(
        prog="python search/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=_HelpFormatter,
    )
    for setting in flags():
        options = {key: setting.metadata[key] for key in ("metavar", "choices") if setting.metadata[key] is not None}
        parser.add_argument(f"--{setting.name.replace('_', '-')}", type=_FLAG_TYPES.get(str(setting.type)),
                            default=setting.default, help=setting.metadata["help"], **options)
    parser.add_argument("-v", "--verbose", dest="console", action="store_const", const="verbose",
                        help="same as --console verbose: Ray's detailed per-trial output instead of the live view")
    parser.add_argument("-q", "--quiet", dest="console", action="store_const", const="quiet",
                        help="same as --console quiet: only the final summary (and errors)")
    return parser


def main(argv: Sequence[str] | None = None, callbacks: Sequence[Any] | None = None) -> int:
    """Parse ``argv`` and run the search; returns the exit code.

    ``callbacks``: extra ``ray.tune.Callback`` objects for the Tuner of a new experiment (a resumed
    one keeps the callbacks it was created with, as ``Tuner.restore`` does).
    """
    request = SearchSettings(**vars(build_parser().parse_args(argv)))
    try:
        return run_experiments(request, callbacks=list(callbacks or []))
    except (SearchError, SpaceError, ConfigError) as error:
        message = " ".join(str(error).split())  # always one line
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
