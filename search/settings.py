"""The resolved settings of one search experiment, saved as ``search.json`` for ``--resume``."""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search import storage
from search.errors import SearchError

SETTINGS_FILE = "search.json"


@dataclass
class SearchSettings:
    """Everything a search needs, after defaults are chosen; one experiment (one domain)."""

    domain: str
    name: str
    storage_path: str  # absolute path, or a URI (s3://..., gs://...) that Ray and pyarrow write to
    space: str  # absolute path of the space file
    num_samples: int
    max_epochs: int
    scheduler: str  # "asha" | "none"
    searcher: str  # "tpe" | "random"
    metric: str
    mode: str  # "max" | "min"
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int
    seed: int
    wandb: str  # "auto" | "online" | "offline" | "disabled"
    wandb_project: str
    time_budget_s: float | None = None
    warm_start: str | None = None  # absolute path of a config file evaluated right after the baseline
    address: str | None = None
    grace_period: int = 1  # ASHA: epochs every trial runs before it can be stopped
    reduction_factor: int = 3  # ASHA: keep the top 1/reduction_factor at each rung

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
        return dataclasses.asdict(self)

    def save(self) -> Path:
        path = self.experiment_dir / SETTINGS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, location: str | Path) -> SearchSettings:
        """The settings stored in an experiment (a directory or a URI)."""
        path = storage.experiment_location(str(location), SETTINGS_FILE)
        try:
            values = json.loads(storage.read_text(str(location), SETTINGS_FILE))
            known = {field.name for field in dataclasses.fields(cls)}
            return cls(**{key: value for key, value in values.items() if key in known})
        except (OSError, ValueError, TypeError) as error:
            raise SearchError(f"{path}: unreadable search settings ({error})") from None

    def resume_command(self) -> str:
        """The exact command that continues this search."""
        command = ["python", "search/run.py", "--resume", self.name, "--storage-path", self.storage_path]
        if self.address:
            command += ["--address", self.address]
        return shlex.join(command)
