"""The one exception type for user mistakes in ``analysis``."""


class AnalysisError(Exception):
    """A user mistake (not an experiment, no finished trial, missing or corrupt checkpoint).

    Its message is one line. Every ``analysis`` CLI catches it once in ``main``, prints
    ``error: <message>`` and exits with status 2.
    """
