"""The one exception type for user mistakes in ``search``."""


class SearchError(Exception):
    """A user mistake (bad flag, unreachable cluster, unknown experiment); its message is one line.

    ``search.run.main`` catches it once, prints ``error: <message>`` and exits with status 2.
    """
