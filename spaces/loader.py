"""Read a search-space YAML file into a Ray Tune param space, validating it against nsm's config keys.

A file has two sections: ``default`` (every domain) and ``domains.<name>`` (overrides for one domain,
or for every domain of a group: ``domains.grail`` applies to GraIL's 12 splits, ``domains.all`` to
the three synthetic domains; a domain's own section overrides its group's). Names are case-insensitive.
Each key is a field of :class:`nsm.config.TrainConfig`; its value is either a distribution
(``{type: loguniform|uniform, low, high}`` or ``{type: choice, values: [...]}``) or a fixed value that
passes through to the trainer. Every mistake raises :class:`SpaceError` with one line naming the file
and the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from ray import tune

# nsm.config and nsm.domains, not nsm.train or nsm.data: reading a space must not import torch.
from nsm.config import FIELD_TYPES, TrainConfig
from nsm.domains import DOMAINS, GROUPS, canonical_domain, describe, is_domain
from nsm.errors import ConfigError, first_line

DEFAULT_SPACE = Path(__file__).with_name("default.yaml")
"""The space used when ``--space`` is not given."""

DISTRIBUTION_TYPES = ("loguniform", "uniform", "choice")

# Keys the search driver sets itself; a space file that sets them would be silently overridden.
_DRIVER_KEYS = {"domain": "it is set by --domain"}
_TOP_LEVEL_KEYS = ("default", "domains")


class SpaceError(ValueError):
    """A bad search-space file; the message is one line naming the file and the key."""


def load_space(path: str | Path, domain: str) -> dict[str, Any]:
    """Return the Ray Tune param space of ``domain`` described by the file at ``path``.

    Distributions become ``tune.loguniform``/``tune.uniform``/``tune.randint``/``tune.lograndint``/
    ``tune.choice``; fixed values are returned as they are. ``domain`` is included as a fixed key.
    """
    path = Path(path)
    if not is_domain(domain):
        raise SpaceError(f"{path}: unknown domain {domain!r} (choose from {', '.join(DOMAINS)})")
    domain = canonical_domain(domain)
    document = _read_yaml(path)
    entries = _merged_entries(document, path, domain)
    space: dict[str, Any] = {"domain": domain}
    for key, (section, value) in entries.items():
        space[key] = _to_tune(value, field_type=FIELD_TYPES[key], where=f"{path}: {section}.{key}")
    _check_against_config(space, entries, path)
    return space


def searched_keys(space: dict[str, Any]) -> list[str]:
    """Keys of ``space`` that are sampled (not fixed), in file order."""
    return [key for key, value in space.items() if isinstance(value, tune.search.sample.Domain)]


# ------------------------------------------------------------------------------------------------
# File structure

def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpaceError(f"{path}: space file not found")
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SpaceError(f"{path}: not valid YAML: {first_line(error)}") from None
    if not isinstance(document, dict):
        raise SpaceError(f"{path}: must hold a mapping with keys {' and '.join(_TOP_LEVEL_KEYS)}")
    for key in document:
        if key not in _TOP_LEVEL_KEYS:
            raise SpaceError(f"{path}: unknown top-level key {key!r} (expected {' or '.join(_TOP_LEVEL_KEYS)})")
    return document


def _merged_entries(document: dict[str, Any], path: Path, domain: str) -> dict[str, tuple[str, Any]]:
    """``key -> (section it came from, raw value)``: the domain's overrides on top of ``default``."""
    default = _section(document.get("default"), path, "default")
    domains = document.get("domains") or {}
    if not isinstance(domains, dict):
        raise SpaceError(f"{path}: domains must be a mapping of domain name to keys")
    for name in domains:
        if not isinstance(name, str) or not (is_domain(name) or name.lower() in GROUPS):
            raise SpaceError(f"{path}: domains.{name}: unknown domain (choose from {describe()})")
    # Validate every domain's section, not only the one in use, so a typo is caught on the first run.
    overrides = {name: _section(domains[name], path, f"domains.{name}") for name in domains}
    entries = {key: ("default", value) for key, value in default.items()}
    # Group sections first, then the domain's own, so the most specific section wins.
    applying = [name for name in domains if name.lower() in GROUPS and domain in GROUPS[name.lower()]]
    applying += [name for name in domains if is_domain(name) and canonical_domain(name) == domain]
    for name in applying:
        entries.update({key: (f"domains.{name}", value) for key, value in overrides[name].items()})
    return entries


def _section(section: Any, path: Path, name: str) -> dict[str, Any]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise SpaceError(f"{path}: {name} must be a mapping of config keys")
    for key in section:
        if key in _DRIVER_KEYS:
            raise SpaceError(f"{path}: {name}.{key}: not allowed in a space file ({_DRIVER_KEYS[key]})")
        if key not in FIELD_TYPES:
            raise SpaceError(f"{path}: {name}.{key}: unknown key (known: {', '.join(k for k in FIELD_TYPES if k not in _DRIVER_KEYS)})")
    return section


# ------------------------------------------------------------------------------------------------
# Values


def _to_tune(value: Any, field_type: str, where: str) -> Any:
    if not isinstance(value, dict):
        return value  # a fixed value; its type and range are checked by TrainConfig below
    kind = value.get("type")
    if kind not in DISTRIBUTION_TYPES:
        raise SpaceError(f"{where}: type must be one of {', '.join(DISTRIBUTION_TYPES)}, got {kind!r}")
    if kind == "choice":
        _expect_keys(value, {"type", "values"}, where)
        values = value.get("values")
        if not isinstance(values, list):
            raise SpaceError(f"{where}: values must be a list, got {values!r}")
        if not values:
            raise SpaceError(f"{where}: choice needs at least one value")
        for item in values:
            _expect_type(item, field_type, where)
        return tune.choice(values)

    _expect_keys(value, {"type", "low", "high"}, where)
    if field_type not in ("float", "int"):
        raise SpaceError(f"{where}: {kind} needs a numeric key, but this key is {field_type}")
    low, high = value.get("low"), value.get("high")
    for name, bound in (("low", low), ("high", high)):
        if not _is_number(bound):
            raise SpaceError(f"{where}: {name} must be a number, got {bound!r}")
        if field_type == "int" and not float(bound).is_integer():
            raise SpaceError(f"{where}: {name} must be an integer for an int key, got {bound!r}")
    low, high = float(low), float(high)
    if low >= high:
        raise SpaceError(f"{where}: low must be < high, got low={low:g} high={high:g}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform bounds must be > 0, got low={low:g}")
    if field_type == "int":
        # Ray's integer upper bound is exclusive; the file's `high` is inclusive like the float case.
        sampler = tune.lograndint if kind == "loguniform" else tune.randint
        return sampler(int(low), int(high) + 1)
    return tune.loguniform(low, high) if kind == "loguniform" else tune.uniform(low, high)


def _expect_keys(value: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in value:
        if key not in allowed:
            raise SpaceError(f"{where}: unknown distribution field {key!r} (expected {', '.join(sorted(allowed))})")
    for key in sorted(allowed):
        if key not in value:
            raise SpaceError(f"{where}: missing distribution field {key!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _expect_type(item: Any, field_type: str, where: str) -> None:
    ok = {
        "int": isinstance(item, int) and not isinstance(item, bool),
        "float": _is_number(item),
        "bool": isinstance(item, bool),
        "str": isinstance(item, str),
        "str | None": item is None or isinstance(item, str),
    }.get(field_type, True)
    if not ok:
        raise SpaceError(f"{where}: choice value {item!r} is not {field_type}")


def _check_against_config(space: dict[str, Any], entries: dict[str, tuple[str, Any]], path: Path) -> None:
    """Let TrainConfig judge every fixed value and every distribution's extremes (e.g. pool_ratio <= 1)."""
    for key, (section, _) in entries.items():
        value = space[key]
        where = f"{path}: {section}.{key}"
        if isinstance(value, tune.search.sample.Categorical):
            candidates = list(value.categories)
        elif isinstance(value, tune.search.sample.Integer):
            candidates = [value.lower, value.upper - 1]
        elif isinstance(value, tune.search.sample.Float):
            candidates = [value.lower, value.upper]
        else:
            candidates = [value]
        for candidate in candidates:
            try:
                # One key at a time (TrainConfig has no cross-key rules), so the error names this key.
                TrainConfig.from_dict({key: candidate}, source=where)
            except ConfigError as error:
                raise SpaceError(str(error)) from None
