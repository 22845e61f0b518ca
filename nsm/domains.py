"""The names of nsm's domains and the task each one poses, without importing torch.

``nsm.data`` generates and loads the domains; this module only names them, so that config validation,
search spaces and the search CLI can check a domain name cheaply. A new domain adds its name here
(with its task, whose metrics :mod:`nsm.metrics` registers) and its loader in ``nsm.data``.

Domains are the three synthetic graph-classification domains and GraIL's 12 inductive
link-prediction splits. Names are case-insensitive (``canonical_domain`` spells them). Two group
names stand for several domains (``resolve_domains``): ``all`` for the three synthetic ones (its
meaning before the splits existed) and ``grail`` for the 12 splits.
"""

from __future__ import annotations

from nsm.errors import ConfigError
from nsm.metrics import GRAPH_CLASSIFICATION, LINK_PREDICTION, TASKS, Task

SYNTHETIC: tuple[str, ...] = ("planning", "causal", "kg")
"""The synthetic graph-classification domains (what ``all`` stands for)."""

GRAIL_SPLITS: tuple[str, ...] = (
    *(f"WN18RR_v{v}" for v in range(1, 5)),
    *(f"fb237_v{v}" for v in range(1, 5)),
    *(f"nell_v{v}" for v in range(1, 5)),
)
"""GraIL's inductive splits (Teru et al. 2020), spelled as its data folders are; ``nsm.data.grail`` loads them."""

DOMAIN_TASKS: dict[str, str] = {
    **{name: GRAPH_CLASSIFICATION for name in SYNTHETIC},
    **{name: LINK_PREDICTION for name in GRAIL_SPLITS},
}
"""Each domain's task (a key of ``nsm.metrics.TASKS``)."""

DOMAINS: tuple[str, ...] = tuple(DOMAIN_TASKS)

GROUPS: dict[str, tuple[str, ...]] = {"all": SYNTHETIC, "grail": GRAIL_SPLITS}
"""Group names, each standing for several domains."""

_BY_LOWER = {name.lower(): name for name in DOMAINS}


def canonical_domain(name: str) -> str:
    """The domain's canonical spelling (any case accepted); ConfigError (one line, listing them) otherwise."""
    if isinstance(name, str) and name.lower() in _BY_LOWER:
        return _BY_LOWER[name.lower()]
    raise ConfigError(f"unknown domain {name!r} (choose from {describe()})")


def is_domain(name: str) -> bool:
    """Whether ``name`` is a domain (any case); group names are not."""
    return isinstance(name, str) and name.lower() in _BY_LOWER


def resolve_domains(name: str) -> tuple[str, ...]:
    """The domains ``name`` stands for: a group's members, or the one domain (any case)."""
    if isinstance(name, str) and name.lower() in GROUPS:
        return GROUPS[name.lower()]
    return (canonical_domain(name),)


def describe() -> str:
    """Every accepted name, for help texts and error messages: the domains, then the groups."""
    return ", ".join(DOMAINS) + "; groups: all (the three synthetic domains), grail (the 12 GraIL splits)"


def task_of(domain: str) -> Task:
    """The task of ``domain`` (any case), which reports that task's metrics."""
    return TASKS[DOMAIN_TASKS[canonical_domain(domain)]]


def is_link_prediction(domain: str) -> bool:
    """Whether ``domain`` is a link-prediction domain (a GraIL split)."""
    return is_domain(domain) and DOMAIN_TASKS[canonical_domain(domain)] == LINK_PREDICTION
