"""Ray Tune + Optuna search driver for the NSM trainer; CLI: ``python search/run.py --domain planning``."""

from search.errors import SearchError

__all__ = ["SearchError"]
