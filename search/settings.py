"""The settings of one search experiment: the one schema of the search CLI, saved as ``search.json``.

Every ``search/run.py`` flag is a field of :class:`SearchSettings` whose metadata holds its help text
(:func:`search.run.build_parser` generates the parser from them), so each flag and its default are
defined once. The CLI fills a ``SearchSettings`` with the flags as given, None meaning "choose the
default"; the driver resolves it (budget, absolute paths, experiment name, metric mode) with
``dataclasses.replace`` and saves the result in the experiment for ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nsm.config import PROJECT_NAME
from nsm.domains import DOMAINS, GROUPS
from nsm.files import write_json
from search import storage
from search.errors import SearchError
from spaces import DEFAULT_SPACE

SETTINGS_FILE = "search.json"
SEARCHERS = ("tpe", "tpe-mv", "random")


def _flag(default: Any, help: str, metavar: str | None = None, choices: tuple[str, ...] | None = None,
          stored: bool = True) -> Any:
    """A setting that is also a CLI flag (``--name-with-dashes``); ``stored=False``: not saved in search.json."""
    return field(default=default, metadata={"help": help, "metavar": metavar, "choices": choices, "stored": stored})


def _derived(default: Any) -> Any:
    """A setting the driver derives; not a flag."""
    return field(default=default, metadata={"stored": True})


@dataclass
class SearchSettings:
    """Everything a search needs; one experiment (one domain) once resolved by the driver."""

    domain: str | None = _flag(
        None, "domain to search, any case: a synthetic domain (planning, causal, kg) or a GraIL split (WN18RR_v1..v4, "
        "fb237_v1..v4, nell_v1..v4); 'all' runs the three synthetic domains and 'grail' the 12 splits, as one experiment "
        "each in one Ray session (required unless --resume)",
        metavar="{" + ",".join((*DOMAINS, *GROUPS)) + "}")
    space: str = _flag(  # resolved: absolute path of the space file
        str(DEFAULT_SPACE), "search-space YAML (distributions and fixed trainer keys, per-domain overrides)", metavar="FILE")
    num_samples: int | None = _flag(None, "trials to run (default: 24 on CPUs, 64 when trials use GPUs)", metavar="N")
    max_epochs: int | None = _flag(
        None, "epochs of a trial that is never stopped early; ASHA's max_t (default: the space file's `epochs`, "
        "else 20 on CPUs, 50 on GPUs)", metavar="E")
    scheduler: str = _flag(
        "asha", "early stopping: ASHA on the metric (default: with TPE, at equal compute, its mean best val_acc beat random "
        "search's on all three synthetic domains, within one std; bench/search.py; see --grace-period, --reduction-factor), "
        "or none",
        choices=("asha", "none"))
    searcher: str = _flag(
        "tpe", "Optuna sampler (seeded with --seed); the baseline config is always the first trial. tpe (default: "
        "tpe-mv only tied it at equal compute, bench/search.py): independent TPE; tpe-mv: multivariate TPE with "
        "constant_liar for concurrent trials; random", choices=SEARCHERS)
    grace_period: int | None = _flag(
        None, "ASHA: epochs every trial runs before it can be stopped (default: max_epochs/4, at least 1; see "
        "search.preflight.asha_grace_period)", metavar="E")
    reduction_factor: int = _flag(3, "ASHA: keep the top 1/F of the trials at each rung", metavar="F")
    epoch_budget: int | None = _flag(
        None, "stop once the trials have run this many epochs in all, counted as reported (equal-compute "
        "comparisons, bench/search.py); a resumed search gets the same allowance again (default: no limit)", metavar="E")
    metric: str | None = _flag(  # resolved: the domain's task's default metric when not given
        None, "metric to rank and prune on (one of nsm's metric names); maximised for accuracies and ranking metrics, "
        "minimised for losses (default: val_acc on the synthetic domains, val_mrr on GraIL's splits)")
    cpus_per_trial: float | None = _flag(
        None, "CPUs per trial, also the trial's torch threads (default: 1; with GPUs, the node's CPUs shared among its "
        "trials, at most 4)")
    gpus_per_trial: float | None = _flag(
        None, "GPUs per trial, at most 1; fractions such as 0.25 pack trials onto one GPU and cap each trial's CUDA memory to its "
        "share (default: 0.25 when the cluster has GPUs, else 0)")
    max_concurrent: int | None = _flag(None, "trials running at once (default: as many as the cluster's resources fit)")
    address: str | None = _flag(
        None, "join an existing Ray cluster: 'auto' or 'ray://host:port' (default: start a local one)")
    storage_path: str = _flag(  # resolved: an absolute path, or a URI (s3://..., gs://...) that Ray and pyarrow write to
        "./results", "directory holding one subdirectory per experiment, or a cloud URI that pyarrow opens "
        "(s3://bucket/path, gs://bucket/path), as Ray's storage_path accepts")
    name: str | None = _flag(
        None, "experiment name (default: <domain>-<UTC timestamp>; with --domain all, <name>-<domain>); an existing "
        "name is refused unless resumed")
    resume: str | None = _flag(
        None, "continue the experiment NAME under --storage-path with its stored settings: unfinished and errored "
        "trials continue from their last checkpoint, the Optuna study continues", metavar="NAME", stored=False)
    seed: int = _flag(0, "seed of the Optuna sampler")
    wandb: str = _flag(
        "auto", "W&B logging via Ray's WandbLoggerCallback; auto = online when an API key is configured, offline otherwise",
        choices=("auto", "online", "offline", "disabled"))
    wandb_project: str = _flag(PROJECT_NAME, "W&B project (the group is the experiment name)")
    time_budget_s: float | None = _flag(
        None, "stop starting and running trials after this many seconds (default: no limit)")
    warm_start: str | None = _flag(  # resolved: absolute path of a config file evaluated right after the baseline
        None, "config file (YAML/JSON of trainer keys, e.g. an exported best config) whose searched values are "
        "evaluated right after the baseline", metavar="FILE")
    console: str = _flag(
        "live", "what the search prints: a live view (redrawn in place on a terminal, one line per event otherwise), "
        "Ray's own detailed output (verbose, also -v), or only the final summary and errors (quiet, also -q)",
        choices=("live", "verbose", "quiet"), stored=False)

    mode: str | None = _derived(None)  # "max" | "min": the metric's direction (nsm.metrics)
    searched_keys: list[str] | None = _derived(None)  # the space's sampled keys, in file order; None: older search

    @property
    def experiment_path(self) -> str:
        """Where Ray keeps the experiment: a local path or a URI (see :mod:`search.storage`)."""
        return storage.experiment_location(self.storage_path, self.name)

    @property
    def experiment_dir(self) -> Path:
        """The local directory of the driver's own files: the experiment itself, or its mirror for a URI."""
        if self.remote:
            return storage.local_mirror(self.storage_path, self.name)
        return Path(self.storage_path) / self.name

    @property
    def remote(self) -> bool:
        return storage.is_uri(self.storage_path)

    def to_dict(self) -> dict[str, Any]:
        """The stored settings (what ``search.json`` holds)."""
        return {key.name: getattr(self, key.name) for key in dataclasses.fields(self) if key.metadata["stored"]}

    def save(self) -> Path:
        return write_json(self.experiment_dir / SETTINGS_FILE, self.to_dict())

    @classmethod
    def load(cls, location: str | Path) -> SearchSettings:
        """The settings stored in an experiment (a directory or a URI)."""
        path = storage.experiment_location(str(location), SETTINGS_FILE)
        try:
            values = json.loads(storage.read_text(str(location), SETTINGS_FILE))
            stored = {key.name for key in dataclasses.fields(cls) if key.metadata["stored"]}
            return cls(**{key: value for key, value in values.items() if key in stored})
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise SearchError(f"{path}: unreadable search settings ({error})") from None

    def resume_command(self) -> str:
        """The exact command that continues this search."""
        command = ["python", "search/run.py", "--resume", self.name, "--storage-path", self.storage_path]
        if self.address:
            command += ["--address", self.address]
        return shlex.join(command)


def flags() -> list[dataclasses.Field]:
    """The fields of :class:`SearchSettings` that are CLI flags, in the order ``--help`` lists them."""
    return [key for key in dataclasses.fields(SearchSettings) if "help" in key.metadata]

