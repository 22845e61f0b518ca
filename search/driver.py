"""Run a search from the CLI's request: validate, connect to Ray, run each experiment, report.

Order matters: every argument, file and name is checked before Ray starts or any directory is
created, so a bad command leaves nothing behind; the cluster's resources are checked right after
connecting, before the first trial.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nsm import metrics as nsm_metrics
from nsm.config import BASELINE, TrainConfig, baseline_values, load_config_file
from nsm.domains import is_link_prediction, resolve_domains, task_of
from nsm.errors import ConfigError, first_line
from search import console, driver_lock, preflight, report, stopping, storage, wandb_workspace
from search.errors import SearchError
from search.outcome import NOT_STARTED, TERMINAL_STATUSES, UNFINISHED
from search.settings import SETTINGS_FILE, SearchSettings
from search.study import STUDY_FILE
from search.tuner import WANDB_DIR, build_tuner, resolve_wandb_mode, restore_tuner
from spaces import load_space, searched_keys

EXIT_OK = 0
EXIT_INTERRUPTED = 130


@dataclass
class _ExperimentPlan:
    """One experiment to run: new (settings still missing the budget) or resumed."""

    settings: SearchSettings | None  # set for a resumed experiment
    domain: str
    name: str
    param_space: dict[str, Any] | None = None
    points_to_evaluate: list[dict[str, Any]] | None = None
    max_epochs_from_space: int | None = None
    new_time_budget_s: float | None = None  # --resume NAME --time-budget-s S: a fresh allowance


def run_experiments(request: SearchSettings, callbacks: list[Any] | None = None) -> int:
    """Run (or resume) the experiments of the search the CLI asked for (``request``: the flags as given,
    None meaning "choose the default"); returns the exit code. User mistakes raise SearchError."""
    plans = _plan_experiments(request)
    try:
        _prepare_data(plans)
    except ConfigError as error:
        raise SearchError(str(error)) from None
    address = request.address
    if request.resume and address is None:
        address = plans[0].settings.address
    if address is not None:
        preflight.check_address(address)
    elif not _ray_is_initialized():
        # Before starting a local Ray: catch impossible GPU/CPU requests without starting anything.
        _check_explicit_resources(request, plans, preflight.local_resources())

    with _ray_session(address) as started_here:
        resources = preflight.live_cluster_resources()
        settings_list = [_finalize(plan, request, resources, address) for plan in plans]
        for settings in settings_list:
            preflight.check_trial_resources(settings.cpus_per_trial, settings.gpus_per_trial, resources)
        _print_budget(settings_list[0], resources, started_here)

        summaries = []
        for index, settings in enumerate(settings_list):
            try:
                summary, ending = _run_experiment(settings, plans[index], callbacks or [])
            except KeyboardInterrupt:  # outside Tuner.fit, which handles Ctrl-C itself
                if not settings.experiment_dir.exists():
                    raise
                summary, ending = None, stopping.INTERRUPTED
            if summary is not None:
                summaries.append(summary)
            if ending == stopping.BUDGET_SPENT:
                _print_budget_spent(settings, summary)
            if ending == stopping.INTERRUPTED:
                print(f"\nsearch interrupted; resume it with:\n  {settings.resume_command()}")
                remaining = [s.domain for s in settings_list[index + 1:]]
                if remaining:
                    print(f"domains not started yet: {', '.join(remaining)}")
                return EXIT_INTERRUPTED
        if len(summaries) > 1:
            print()
            print(report.format_cross_domain(summaries))
    return EXIT_OK


# ------------------------------------------------------------------------------------------------
# Planning (no side effects)


def _plan_experiments(request: SearchSettings) -> list[_ExperimentPlan]:
    preflight.check_counts(request.num_samples, request.max_epochs, request.cpus_per_trial,
                           request.gpus_per_trial, request.max_concurrent, request.time_budget_s,
                           grace_period=request.grace_period, reduction_factor=request.reduction_factor,
                           epoch_budget=request.epoch_budget)
    preflight.check_storage_path(request.storage_path)
    storage_path = _absolute_storage_path(request.storage_path)
    if request.metric is not None:
        _check_metric(request.metric)
    if request.resume is not None:
        return [_plan_resume(request, storage_path)]

    if request.domain is None:
        raise SearchError("--domain is required (or --resume NAME)")
    try:
        domains = list(resolve_domains(request.domain))  # any case; 'all' and 'grail' stand for several
    except ConfigError as error:
        raise SearchError(str(error)) from None
    if request.name is not None:
        preflight.check_name(request.name)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    warm_start = _read_warm_start(request.warm_start)
    plans = []
    for domain in domains:
        if request.name is None:
            name = f"{domain}-{stamp}"
        else:
            name = request.name if len(domains) == 1 else f"{request.name}-{domain}"
        location = storage.experiment_location(storage_path, name)
        if storage.exists(location):
            driver_lock.check_free(location, name, wait_s=0)  # a running driver is named, not "already exists"
            raise SearchError(f"experiment {name!r} already exists in {storage_path} (continue it with --resume {name}, or pick another --name)")
        _check_metric(_metric_of(request, domain), domain)
        space = load_space(request.space, domain)
        max_epochs_from_space = space.pop("epochs", None)
        plans.append(_ExperimentPlan(
            settings=None, domain=domain, name=name, param_space=space,
            points_to_evaluate=_points_to_evaluate(space, warm_start, request.space),
            max_epochs_from_space=max_epochs_from_space,
        ))
    return plans


def _metric_of(request: SearchSettings, domain: str) -> str:
    """``--metric``, or the default metric of the domain's task (val_acc, val_mrr)."""
    return request.metric if request.metric is not None else task_of(domain).default_metric


def _prepare_data(plans: list[_ExperimentPlan]) -> None:
    """Extract (or find cached) every GraIL split a new experiment needs, once, before any trial
    starts: trials then load the disk cache, and never extract the same split side by side."""
    from nsm.data.grail import load_grail
    from nsm.train import EXTRACTION_KEYS, GRAIL_DATA_SEED

    for plan in plans:
        if plan.param_space is None or not is_link_prediction(plan.domain):
            continue
        data_root = plan.param_space.get("data_root")
        defaults = TrainConfig()
        options = [_prepared_values(plan.param_space.get(key, getattr(defaults, key))) for key in EXTRACTION_KEYS]
        for values in itertools.product(*options):
            started = time.perf_counter()
            variant = ", ".join(f"{key} {value}" for key, value in zip(EXTRACTION_KEYS, values)
                                if value != getattr(defaults, key))
            print(f"preparing {plan.domain}'s enclosing subgraphs{f' ({variant})' if variant else ''} ...", flush=True)
            # load_grail, not the trainer's per-process copy: the driver keeps none of them in memory.
            data = load_grail(plan.domain, data_root if isinstance(data_root, str) else None, seed=GRAIL_DATA_SEED,
                              **dict(zip(EXTRACTION_KEYS, values)))
            print(f"{plan.domain}: {sum(len(getattr(data, part)) for part in ('train', 'valid', 'valid_ranking', 'test', 'test_ranking'))} "
                  f"subgraphs ready in {time.perf_counter() - started:.1f} s")


def _prepared_values(value: Any) -> list[Any]:
    """Every value of an extraction key a space can give a trial: a constant, or a choice's values (each
    is a separate extraction). A range is not prepared, nor any combination with it: its trials extract
    what they draw."""
    categories = getattr(value, "categories", None)
    if categories is None:
        return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []
    return sorted({v for v in categories if isinstance(v, (int, float)) and not isinstance(v, bool)})


def _check_metric(metric: str, domain: str | None = None) -> None:
    """``--metric`` must be a registered metric with a direction that the domain's task reports every epoch."""
    try:
        nsm_metrics.ranking_metric(metric, task_of(domain).name if domain is not None else None)
    except ConfigError as error:
        where = f" on {domain}" if domain is not None else ""
        raise SearchError(f"--metric{where} {error}") from None


def _plan_resume(request: SearchSettings, storage_path: str) -> _ExperimentPlan:
    preflight.check_name(request.resume)
    location = storage.experiment_location(storage_path, request.resume)
    if not storage.exists(location):
        raise SearchError(f"--resume {request.resume}: no experiment of that name in {storage_path}")
    driver_lock.check_free(location, request.resume)
    if not storage.is_file(location, SETTINGS_FILE):
        raise SearchError(f"--resume {request.resume}: {location} is not a search (no {SETTINGS_FILE})")
    from ray.tune import Tuner

    if not Tuner.can_restore(location):
        raise SearchError(f"--resume {request.resume}: {location} holds no Ray Tune experiment state to restore")
    settings = SearchSettings.load(location)
    # The experiment may have been moved or its storage path spelled differently: trust where it is now.
    settings = replace(settings, storage_path=storage_path, name=request.resume)
    if request.time_budget_s is not None:
        settings = replace(settings, time_budget_s=request.time_budget_s)
    return _ExperimentPlan(settings=settings, domain=settings.domain, name=settings.name, new_time_budget_s=request.time_budget_s)


def _absolute_storage_path(storage_path: str) -> str:
    if storage.is_uri(storage_path):
        return storage_path
    return str(Path(storage_path).expanduser().resolve())


def _read_warm_start(path: str | None) -> TrainConfig | None:
    if path is None:
        return None
    try:
        return load_config_file(path)
    except ConfigError as error:
        raise SearchError(f"--warm-start: {error}") from None


def _points_to_evaluate(space: dict[str, Any], warm_start: TrainConfig | None, space_path: str) -> list[dict[str, Any]]:
    """The baseline first, then the warm-start config, each restricted to the searched keys."""
    keys = searched_keys(space)
    baseline = baseline_values(keys)
    points = [baseline]
    if warm_start is not None:
        point = {key: getattr(warm_start, key) for key in keys}
        if point != baseline:
            points.append(point)
    for point, source in zip(points, ("the baseline (research default)", "--warm-start")):
        for key, value in point.items():
            categories = getattr(space[key], "categories", None)
            if categories is not None and value not in categories:
                raise SearchError(f"{space_path}: {key}: {source} value {value!r} is not among the choices {list(categories)}")
    return points


# ------------------------------------------------------------------------------------------------
# Resources and Ray


def _ray_is_initialized() -> bool:
    import ray

    return ray.is_initialized()


def _check_explicit_resources(request: SearchSettings, plans: list[_ExperimentPlan], resources: preflight.ClusterResources) -> None:
    gpus = request.gpus_per_trial
    cpus = request.cpus_per_trial
    if plans[0].settings is not None:  # resumed: the stored request
        gpus, cpus = plans[0].settings.gpus_per_trial, plans[0].settings.cpus_per_trial
    preflight.check_trial_resources(cpus or 0.0, gpus or 0.0, resources)


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator[bool]:
    """Use the caller's Ray session if there is one; otherwise start (or join) one and shut it down after."""
    import ray

    if ray.is_initialized():
        preflight.check_connected_cluster(address)
        yield False
        return
    attempts = 1 if address else 2  # a local start can time out on a busy machine (Ray waits 30 s)
    console.hide_token_auth_notice()
    for attempt in range(1, attempts + 1):
        try:
            # "local" starts a fresh instance; Ray's own default would join whatever cluster a
            # `ray start` or a crashed run left recorded in /tmp/ray. RAY_ADDRESS still wins.
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local",
                     include_dashboard=False, logging_level=logging.WARNING)
            break
        except Exception as error:  # Ray raises bare Exception for a startup timeout
            ray.shutdown()
            if attempt < attempts and "timed out during startup" in str(error):
                print("Ray's local start timed out (busy machine?); trying once more")
                continue
            where = f"at {address}" if address else "locally"
            raise SearchError(f"cannot start or connect to a Ray cluster {where}: {first_line(error)}") from None
    try:
        yield True
    finally:
        ray.shutdown()


def _finalize(plan: _ExperimentPlan, request: SearchSettings, resources: preflight.ClusterResources,
              address: str | None) -> SearchSettings:
    """Settings with the budget chosen for the cluster (a resumed search keeps its stored settings)."""
    if plan.settings is not None:
        return replace(plan.settings, address=address, console=request.console)
    budget = preflight.choose_budget(
        resources,
        num_samples=request.num_samples,
        max_epochs=request.max_epochs if request.max_epochs is not None else plan.max_epochs_from_space,
        cpus_per_trial=request.cpus_per_trial,
        gpus_per_trial=request.gpus_per_trial,
        max_concurrent=request.max_concurrent,
    )
    return replace(
        request,
        domain=plan.domain,
        name=plan.name,
        storage_path=_absolute_storage_path(request.storage_path),
        space=str(Path(request.space).resolve()),
        num_samples=budget.num_samples,
        max_epochs=budget.max_epochs,
        cpus_per_trial=budget.cpus_per_trial,
        gpus_per_trial=budget.gpus_per_trial,
        max_concurrent=budget.max_concurrent,
        warm_start=str(Path(request.warm_start).resolve()) if request.warm_start else None,
        address=address,
        resume=None,
        metric=_metric_of(request, plan.domain),
        mode=nsm_metrics.mode(_metric_of(request, plan.domain)),
        grace_period=request.grace_period or preflight.asha_grace_period(budget.max_epochs),
        searched_keys=searched_keys(plan.param_space),
    )


def _print_budget(settings: SearchSettings, resources: preflight.ClusterResources, started_here: bool) -> None:
    if resources.gpus == 0:
        print("no GPU in the cluster: trials run on CPU")  # a fallback: said even with --console quiet
    if settings.console == console.QUIET:
        return
    where = "local Ray" if started_here else "connected Ray cluster"
    print(f"{where}: {resources.describe()}")
    scheduler = (f"ASHA (grace {settings.grace_period} epochs, reduction factor {settings.reduction_factor})"
                 if settings.scheduler == "asha" else "no early stopping")
    budget = f", time budget {settings.time_budget_s:g} s" if settings.time_budget_s else ""
    if settings.epoch_budget:
        budget += f", epoch budget {settings.epoch_budget}"
    print(f"budget: {settings.num_samples} trials x {settings.max_epochs} epochs, "
          f"{settings.cpus_per_trial:g} CPU + {settings.gpus_per_trial:g} GPU per trial, "
          f"{settings.max_concurrent} at a time; {settings.searcher.upper()} (seed {settings.seed}), {scheduler}{budget}")


# ------------------------------------------------------------------------------------------------
# One experiment


def _run_experiment(settings: SearchSettings, plan: _ExperimentPlan, callbacks: list[Any]) -> tuple[dict[str, Any], str | None]:
    """Run one experiment under its driver lock; returns its summary and how it ended early (or None)."""
    resumed = plan.param_space is None
    wandb_mode = resolve_wandb_mode(settings.wandb)
    if settings.console != console.QUIET:
        print(f"\n{'resuming' if resumed else 'starting'} {settings.name} ({settings.domain}) in {settings.experiment_path}; W&B {wandb_mode}")
    lock = driver_lock.ExperimentLock(settings.experiment_path, settings.name)
    if resumed:
        note = lock.acquire()  # before the first write: a second driver changes nothing
    else:
        note = _create_experiment(settings, lock)
    if note:
        print(note)
    with lock:
        return _fit_and_report(settings, plan, callbacks, wandb_mode)


def _fit_and_report(settings: SearchSettings, plan: _ExperimentPlan, callbacks: list[Any], wandb_mode: str) -> tuple[dict[str, Any], str | None]:
    if plan.param_space is None:
        if settings.remote:
            # The location holds the truth: Ray's snapshots there were taken together with its journal.
            storage.reset_mirror(settings.experiment_dir)
            storage.pull(settings.experiment_path, settings.experiment_dir, [STUDY_FILE])
        if plan.new_time_budget_s is not None:
            stopping.set_time_budget(settings.name, plan.new_time_budget_s)  # the stored one may be spent
        tuner = restore_tuner(settings, _baseline_point(settings, plan))
    else:
        tuner = build_tuner(settings, plan.param_space, plan.points_to_evaluate, wandb_mode, callbacks)
    live_on_terminal = settings.console == console.LIVE and console.stdout_is_terminal()
    try:
        with _wandb_environment(wandb_mode), _sigterm_stops_like_ctrl_c(), console.guard_terminal(live_on_terminal):
            results = tuner.fit()
    finally:
        # Tuner.fit returns on Ctrl-C; this also covers an exception escaping it.
        _push_driver_files(settings, [STUDY_FILE, WANDB_DIR])

    statuses = report.trial_statuses(settings.experiment_path)
    summary = report.summarize(results, settings, _baseline_point(settings, plan), statuses)
    report.write_summary(summary, settings.experiment_dir)
    _push_driver_files(settings, [report.SUMMARY_FILE])
    print()
    print(report.format_report(summary))
    _save_wandb_workspace(settings, wandb_mode)
    unfinished = any(status not in TERMINAL_STATUSES for status in statuses.values())
    interrupted = unfinished or len(statuses) < settings.num_samples
    if not interrupted or stopping.stop_reason(settings.name) == stopping.EPOCH_BUDGET_SPENT:
        _log_wandb_summary_run(settings, wandb_mode)
    if stopping.stop_reason(settings.name) == stopping.BUDGET_SPENT:
        return summary, stopping.BUDGET_SPENT
    if stopping.stop_reason(settings.name) == stopping.EPOCH_BUDGET_SPENT:
        # Trials the stop caught are over, not resumable: the budget is the search's whole allowance.
        print(f"\nepoch budget of {settings.epoch_budget} spent after {len(statuses)} of {settings.num_samples} trials")
        return summary, None
    return summary, stopping.INTERRUPTED if interrupted else None


def _save_wandb_workspace(settings: SearchSettings, wandb_mode: str) -> None:
    """The experiment's W&B workspace: its specification beside the results; created on W&B when online."""
    if wandb_mode == "disabled":
        return
    spec = wandb_workspace.workspace_spec(settings)
    path = wandb_workspace.save_spec(spec, settings.experiment_dir)
    _push_driver_files(settings, [wandb_workspace.SPEC_FILE])
    if wandb_mode != "online":
        if settings.console == console.QUIET:
            return
        print(f"W&B workspace: specification in {path}; after `wandb sync`, create it with "
              f"`python analysis/wandb_workspace.py {settings.experiment_dir}`")
        return
    try:
        print(f"W&B workspace: {wandb_workspace.create_workspace(spec)}")
    except Exception as error:  # no wandb-workspaces, no network: the search itself succeeded
        print(f"W&B workspace not created ({first_line(error)}); its specification is in {path}: "
              f"create it with `python analysis/wandb_workspace.py {settings.experiment_dir}`")


def _log_wandb_summary_run(settings: SearchSettings, wandb_mode: str) -> None:
    """The experiment's W&B summary run (the trials table, the best config), once its search is over.

    The same run that ``python analysis/best.py <exp> --wandb`` logs, which adds the best checkpoint's
    test metrics. A bucket's trials are not on this machine, so there it is left to that command.
    """
    if wandb_mode == "disabled":
        return
    command = f"python analysis/best.py {settings.experiment_dir} --wandb {wandb_mode}"
    if settings.remote:
        if settings.console != console.QUIET:
            print(f"W&B summary run: after downloading the experiment, `{command}`")
        return
    # Imported here: analysis reads what search writes, and only a finished search has anything to read.
    from analysis._wandb import log_summary
    from analysis.experiment import open_experiment

    try:
        run_dir = log_summary(open_experiment(settings.experiment_dir), mode=wandb_mode)
    except Exception as error:  # no account, no network: the search itself succeeded
        print(f"W&B summary run not logged ({first_line(error)}); log it with `{command}`")
        return
    if settings.console != console.QUIET:
        print(f"W&B summary run: {run_dir}")


def _print_budget_spent(settings: SearchSettings, summary: dict[str, Any] | None) -> None:
    rows = (summary or {}).get("trials", [])
    unfinished = sum(row["status"] == UNFINISHED for row in rows)
    not_started = sum(row["status"] == NOT_STARTED for row in rows) + max(0, settings.num_samples - len(rows))
    if not unfinished and not not_started:
        return
    budget = settings.time_budget_s or 0
    print(f"\ntime budget of {budget:g} s spent: {unfinished} trials unfinished, {not_started} not started; "
          f"continue them with a new budget:\n  {settings.resume_command()} --time-budget-s {budget:g}")


def _create_experiment(settings: SearchSettings, lock: driver_lock.ExperimentLock) -> str | None:
    """The experiment directory (or a URI experiment's mirror) with its settings saved in it, locked
    before anything is written to it; returns the lock's note."""
    if not settings.remote:
        settings.experiment_dir.mkdir(parents=True, exist_ok=False)  # of two new drivers, one fails here
        note = lock.acquire()
        settings.save()
        return note
    note = lock.acquire()
    storage.reset_mirror(settings.experiment_dir)
    settings.save()
    try:  # before any trial: a location the driver cannot write fails the search here
        storage.push(settings.experiment_dir, settings.experiment_path, [SETTINGS_FILE])
    except SearchError:
        shutil.rmtree(settings.experiment_dir, ignore_errors=True)
        lock.release()
        raise
    return note


def _push_driver_files(settings: SearchSettings, names: list[str]) -> None:
    """Copy driver files from a URI experiment's local mirror to its location (a local one is in place)."""
    if not settings.remote:
        return
    try:
        storage.push(settings.experiment_dir, settings.experiment_path, names)
    except SearchError as error:
        # Not fatal to the run: the mirror keeps the files, and the message says where.
        print(f"warning: could not copy {', '.join(names)} from {settings.experiment_dir}: {error}")


def _baseline_point(settings: SearchSettings, plan: _ExperimentPlan) -> dict[str, Any]:
    if plan.points_to_evaluate:
        return plan.points_to_evaluate[0]
    # Resumed: the baseline on the recorded searched keys (a search older than the record: the research default).
    return baseline_values(settings.searched_keys) if settings.searched_keys is not None else dict(BASELINE)


@contextlib.contextmanager
def _sigterm_stops_like_ctrl_c() -> Iterator[None]:
    """SIGTERM (a preempted VM or container, Kubernetes, ``kill``) ends the search as Ctrl-C does.

    Ray Tune stops gracefully on SIGINT: it saves the experiment state one last time and waits for
    the upload. Killed outright by SIGTERM's default action, it could leave a half-uploaded snapshot
    on a bucket. Preemption sends SIGTERM first, so it is turned into a SIGINT. (Ray's other stop
    signal, SIGUSR1, left the driver hanging in placement-group clean-up here.)
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers live there only
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _wandb_environment(mode: str) -> Iterator[None]:
    """Ray's W&B callback reads WANDB_MODE to decide whether it needs an API key."""
    previous = os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled"):
        os.environ["WANDB_MODE"] = mode
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = previous
