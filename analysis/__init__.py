"""Analysis of finished (or still running) searches: best trial export, test evaluation,
cross-experiment comparison, hyperparameter importance, W&B summary and the dashboard notebook.

Everything reads an experiment directory through Ray's and Optuna's own APIs and writes only into
``<experiment>/best/`` and ``<experiment>/analysis/``.
"""

from analysis.errors import AnalysisError

__all__ = ["AnalysisError"]
