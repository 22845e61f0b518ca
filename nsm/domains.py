"""The names of nsm's domains and the task each one poses, without importing torch.

``nsm.data`` generates and loads the domains; this module only names them, so that config validation,
search spaces and the search CLI can check a domain name cheaply. A new domain adds its name here
(with its task, whose metrics :mod:`nsm.metrics` registers) and its loader in ``nsm.data``.
"""

from __future__ import annotations

from nsm.metrics import GRAPH_CLASSIFICATION, TASKS, Task

DOMAIN_TASKS: dict[str, str] = {
    "planning": GRAPH_CLASSIFICATION,
    "causal": GRAPH_CLASSIFICATION,
    "kg": GRAPH_CLASSIFICATION,
}
"""Each domain's task (a key of ``nsm.metrics.TASKS``)."""

DOMAINS: tuple[str, ...] = tuple(DOMAIN_TASKS)


def task_of(domain: str) -> Task:
    """The task of ``domain`` (which reports that task's metrics)."""
    return TASKS[DOMAIN_TASKS[domain]]
