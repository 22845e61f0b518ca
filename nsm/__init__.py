"""NSM workload: synthetic graph reasoning domains, the 3-level Neural Symbolic Model, and its trainer."""

from nsm.errors import ConfigError
from nsm.metrics import METRIC_NAMES

__all__ = ["ConfigError", "METRIC_NAMES"]
