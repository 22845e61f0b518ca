"""The persisted Optuna study of a search, and the searcher that keeps it truthful.

The study lives in ``<experiment_dir>/study.journal`` (JournalStorage + JournalFileBackend), named
after the experiment, so ``optuna-dashboard`` can open it and a resumed search continues it.

Ray's stock ``OptunaSearch`` tells every trial that ends without an error as COMPLETE with its last
value, including trials ASHA stopped after a few epochs: TPE then ranks a 2-epoch score against
full runs. :class:`PruneAwareOptunaSearch` tells those trials PRUNED (their per-epoch values are
already in the study as intermediate values), diverged and out-of-memory trials FAIL, and full runs
COMPLETE with their best value.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

# Optuna's own file lock, so that the journal written here stays compatible with its readers.
from optuna.storages.journal._file import get_lock_file
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from nsm import metrics as nsm_metrics
from nsm.files import atomic_write
from search.errors import SearchError
from search.outcome import COMPLETED, PRUNED, trial_outcome

STUDY_FILE = "study.journal"

logger = logging.getLogger(__name__)


class SnapshotDurableJournalBackend(JournalFileBackend):
    """Optuna's journal file, made durable at each of Ray's experiment snapshots instead of at every write.

    The stock backend fsyncs after every append, and the searcher appends several times per reported
    epoch: at hundreds of trials those fsyncs were a fifth of the driver's time (``bench/scale.py``).
    A killed driver loses nothing either way, since its writes are already in the page cache. Only a
    host crash could lose them, and Ray's own experiment state is no more durable than its last
    snapshot, which is when :meth:`PruneAwareOptunaSearch.save` syncs this file.
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        # Optuna's append_logs, less the fsync: same lock, same line format.
        with get_lock_file(self._lock):
            lines = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with open(self._file_path, "ab") as file:
                file.write(lines.encode("utf-8"))


# study name -> journal path, for searchers that Ray unpickles on --resume (see relocate_journal).
_relocated_journals: dict[str, str] = {}


def relocate_journal(study_name: str, journal_path: str | Path) -> None:
    """Where a searcher of ``study_name`` that Ray restores must find its journal.

    Ray pickles the searcher, and with it the journal's path, into the experiment; an experiment that
    was moved (or copied down from a bucket) is restored from wherever it is now.
    """
    _relocated_journals[study_name] = str(journal_path)


def open_storage(experiment_dir: str | Path) -> JournalStorage:
    """The journal storage of an experiment (the file is created if missing)."""
    return JournalStorage(JournalFileBackend(str(Path(experiment_dir) / STUDY_FILE)))


def load_study(experiment_dir: str | Path) -> optuna.Study:
    """Open the Optuna study of a search; its name is the experiment directory's name."""
    experiment_dir = Path(experiment_dir)
    if not (experiment_dir / STUDY_FILE).is_file():
        raise SearchError(f"{experiment_dir}: no {STUDY_FILE} (not a search experiment directory)")
    return optuna.load_study(study_name=experiment_dir.name, storage=open_storage(experiment_dir))


def make_sampler(searcher: str, seed: int | None, num_samples: int) -> optuna.samplers.BaseSampler:
    """TPE (default), multivariate TPE (``tpe-mv``) or random sampling, seeded.

    TPE's default of 10 random start-up trials would leave a 12-trial laptop search almost entirely
    random, so a quarter of the budget (at least 3) is spent on exploration instead. ``tpe-mv`` models
    the searched keys jointly and, with ``constant_liar``, treats running trials as bad so that
    concurrent trials are not all drawn next to the same optimum.
    """
    if searcher == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = min(10, max(3, num_samples // 4))
    if searcher == "tpe-mv":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=True)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


class PruneAwareOptunaSearch(OptunaSearch):
    """``OptunaSearch`` over a journal-file study that tells Optuna how each trial really ended.

    - Each epoch's metric is reported as an intermediate value at step = epoch (the trial's own
      counter, which survives checkpoint restores, unlike Ray's training_iteration).
    - A trial that stopped before ``max_epochs`` (ASHA) is told PRUNED; Optuna then
      keeps its last intermediate value, which TPE ranks among pruned trials only.
    - Diverged, out-of-memory and errored trials are told FAIL; full runs COMPLETE with the best
      value over their epochs (the value the report ranks on).
    - On restore, the study is reopened from the journal, and trials the journal holds as RUNNING
      that no Ray trial owns any more (asked just before a crash) are told FAIL.
    """

    def __init__(
        self,
        *,
        journal_path: str | Path,
        study_name: str,
        max_epochs: int,
        sampler: optuna.samplers.BaseSampler,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        copy_journal_into_snapshots: bool = False,
    ) -> None:
        self._journal_path = str(journal_path)
        self._copy_journal_into_snapshots = copy_journal_into_snapshots
        self._max_epochs = max_epochs
        self._best_values: dict[str, float] = {}
        storage = JournalStorage(SnapshotDurableJournalBackend(self._journal_path))
        # metric and mode come from TuneConfig through set_search_properties.
        super().__init__(
            sampler=sampler,
            study_name=study_name,
            storage=storage,
            points_to_evaluate=points_to_evaluate,
        )

    # -- study set-up ---------------------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        # Ray calls this on a restored Tuner too, before the searcher state is restored; enqueueing
        # the warm-start points again would make the study re-run them.
        if self._study_has_trials():
            self._points_to_evaluate = []
        return super().set_search_properties(metric, mode, config, **spec)

    def _study_has_trials(self) -> bool:
        try:
            summaries = optuna.get_all_study_summaries(self._storage)
        except Exception:  # an unreadable journal is reported by create_study with a clearer error
            return False
        return any(s.study_name == self._study_name and s.n_trials > 0 for s in summaries)

    # -- asking -----------------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            # Lets analysis map an Optuna trial back to its Ray trial directory.
            ot_trial.set_user_attr("ray_trial_id", trial_id)
        return params

    # -- telling ----------------------------------------------------------------------------------

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if result:
            # Ray does not pass the result that made the scheduler stop the trial to
            # on_trial_result, so this is the only place its value reaches the study.
            self._report(trial_id, result)
        outcome = trial_outcome(result, self._max_epochs, errored=error)
        if outcome == COMPLETED and trial_id in self._best_values:
            state, value = TrialState.COMPLETE, self._best_values[trial_id]
        elif outcome in (COMPLETED, PRUNED):
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.FAIL, None
        try:
            ot_trial.set_user_attr("outcome", outcome)
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # e.g. the journal already holds this trial as finished (after a resume)
            logger.warning("Could not tell Optuna trial %s (%s): %s", ot_trial.number, outcome, exc)
        self._completed_trials.add(trial_id)
        self._best_values.pop(trial_id, None)

    def _report(self, trial_id: str, result: dict) -> None:
        value, epoch = result.get(self._metric), result.get("epoch")
        if not _is_finite(value) or not _is_finite(epoch):
            return
        value = float(value)
        best = self._best_values.get(trial_id)
        if best is None or nsm_metrics.is_better(value, best, self._mode):
            self._best_values[trial_id] = value
        # Through the storage rather than Trial.report, which ignores a step it already holds: a
        # trial restarted from a checkpoint runs the epochs after it again, and the re-run replaces
        # the earlier value (the same one, on CPU, where a resumed run is exact).
        self._storage.set_trial_intermediate_value(self._ot_trials[trial_id]._trial_id, int(epoch), value)

    # -- persistence ------------------------------------------------------------------------------

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Tuner.restore unpickles the searcher before it sets it up: relocate first, so that set-up
        # reads the journal where the experiment is now.
        self.__dict__.update(state)
        if self._follow_relocation():
            self._storage = JournalStorage(SnapshotDurableJournalBackend(self._journal_path))

    def _follow_relocation(self) -> bool:
        """Point at the journal's registered location; whether it moved."""
        journal_path = _relocated_journals.get(self._study_name, self._journal_path)
        moved, self._journal_path = journal_path != self._journal_path, journal_path
        return moved

    def save(self, checkpoint_path: str) -> None:
        super().save(checkpoint_path)
        # Ray calls this at each experiment snapshot: the journal becomes as durable as the snapshot.
        with open(self._journal_path, "ab") as journal:
            os.fsync(journal.fileno())
        if self._copy_journal_into_snapshots:
            # Ray uploads its snapshot directory (where checkpoint_path is) to a URI experiment's
            # location in one sync: the journal then always matches the searcher state beside it.
            atomic_write(Path(checkpoint_path).with_name(STUDY_FILE), lambda tmp: shutil.copyfile(self._journal_path, tmp))

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._follow_relocation()  # the searcher state holds the journal path it was saved with
        # The pickled study's storage holds a stale view of the journal: reopen it and rebind the
        # trials so that every tell goes to the journal the experiment directory holds now.
        self._storage = JournalStorage(SnapshotDurableJournalBackend(self._journal_path))
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=self._storage, sampler=self._sampler)
        self._ot_trials = {
            trial_id: optuna.Trial(self._ot_study, ot_trial._trial_id) for trial_id, ot_trial in self._ot_trials.items()
        }
        # Trials the journal holds as finished although the searcher state does not (told just after
        # the snapshot, before a SIGKILL): Ray re-runs their last epochs, and the study keeps them as told.
        finished = {t._trial_id for t in self._ot_study.get_trials(deepcopy=False) if t.state.is_finished()}
        self._completed_trials |= {trial_id for trial_id, ot_trial in self._ot_trials.items() if ot_trial._trial_id in finished}
        owned = {ot_trial._trial_id for trial_id, ot_trial in self._ot_trials.items() if trial_id not in self._completed_trials}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in owned:
                self._ot_study.tell(frozen.number, state=TrialState.FAIL)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
