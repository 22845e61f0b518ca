"""A saved W&B workspace per experiment, specified as data and built with W&B's ``wandb-workspaces``.

:func:`workspace_spec` describes the workspace of one experiment as a plain dict (JSON), from its
search settings alone, so it can be built with no network and no W&B package and saved next to the
experiment (``wandb_workspace.json``). :func:`to_workspace` turns it into ``wandb_workspaces``
objects, which validate it and save it to W&B (``python analysis/wandb_workspace.py
results/<experiment>``, or at the end of an online search).

The workspace shows the runs of the experiment's W&B group (one per trial, see
:mod:`search.wandb_logging`), its runs table sorted by the best metric, and one section:

- parallel coordinates of the searched keys to the best metric;
- the metric against epoch, one line per trial;
- learning rate (or the first searched key) against the best metric;
- the importance of the searched keys for the best metric.

Every name a panel uses exists in the runs: config keys are the searched keys, ``best_<metric>`` is
in each finished run's summary, and the metric and ``epoch`` are logged every epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nsm import metrics as nsm_metrics
from nsm.files import write_json
from search.settings import SearchSettings

SPEC_FILE = "wandb_workspace.json"
SPEC_VERSION = 1
EPOCH = "epoch"


def best_metric_key(metric: str) -> str:
    """The run summary key holding a trial's best value of ``metric`` (written by search.wandb_logging)."""
    return f"best_{metric}"


def workspace_spec(settings: SearchSettings, entity: str | None = None) -> dict[str, Any]:
    """The workspace of the experiment ``settings`` describes (see the module doc)."""
    metric, keys = settings.metric, list(settings.searched_keys or [])
    best = best_metric_key(metric)
    mode = settings.mode or nsm_metrics.mode(metric)
    scatter_x = "lr" if "lr" in keys else (keys[0] if keys else EPOCH)
    panels: list[dict[str, Any]] = [
        {"type": "parallel_coordinates", "title": f"searched keys -> {best}",
         "columns": [*({"config": key, "log": key == "lr"} for key in keys), {"summary": best}]},
        {"type": "line", "title": f"{metric} per epoch, one line per trial", "x": EPOCH, "y": [metric]},
        {"type": "scatter", "title": f"{scatter_x} vs {best}", "x": {"config": scatter_x}, "y": {"summary": best},
         "log_x": scatter_x == "lr"},
        {"type": "parameter_importance", "title": f"importance for {best}", "with_respect_to": best},
    ]
    return {
        "version": SPEC_VERSION,
        "name": f"{settings.name} ({settings.domain})",
        "entity": entity,
        "project": settings.wandb_project,
        "group": settings.name,
        "metric": metric,
        "mode": mode,
        "searched_keys": keys,
        "runset": {
            "filter": f"Metric('Group') == '{settings.name}'",
            "order": [{"summary": best, "ascending": mode == nsm_metrics.MIN}],
        },
        "sections": [{"name": f"{settings.name}: {metric} ({mode})", "panels": panels}],
    }


def save_spec(spec: dict[str, Any], experiment_dir: Path) -> Path:
    return write_json(Path(experiment_dir) / SPEC_FILE, spec)


def referenced_names(spec: dict[str, Any]) -> dict[str, set[str]]:
    """Every run field the spec's panels and runset use: ``config``, ``summary`` and ``history`` names."""
    names: dict[str, set[str]] = {"config": set(), "summary": set(), "history": set()}

    def field(value: Any) -> None:
        if isinstance(value, dict):
            for section in ("config", "summary"):
                if section in value:
                    names[section].add(value[section])

    for order in spec["runset"]["order"]:
        field(order)
    for section in spec["sections"]:
        for panel in section["panels"]:
            for column in panel.get("columns", []):
                field(column)
            if panel["type"] == "line":
                names["history"].update([panel["x"], *panel["y"]])
            else:
                field(panel.get("x"))
                field(panel.get("y"))
            if "with_respect_to" in panel:
                names["summary"].add(panel["with_respect_to"])
    return names


def to_workspace(spec: dict[str, Any], entity: str) -> Any:
    """The ``wandb_workspaces.workspaces.Workspace`` of ``spec`` (its models validate it); ImportError
    without the ``wandb-workspaces`` package."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    def metric(value: dict[str, Any]) -> Any:
        return wr.Config(value["config"]) if "config" in value else wr.SummaryMetric(value["summary"])

    def panel(item: dict[str, Any]) -> Any:
        kind = item["type"]
        if kind == "parallel_coordinates":
            return wr.ParallelCoordinatesPlot(
                title=item["title"],
                columns=[wr.ParallelCoordinatesPlotColumn(metric=metric(c), log=c.get("log") or None) for c in item["columns"]])
        if kind == "line":
            return wr.LinePlot(title=item["title"], x=item["x"], y=item["y"])
        if kind == "scatter":
            return wr.ScatterPlot(title=item["title"], x=metric(item["x"]), y=metric(item["y"]), log_x=item["log_x"] or None)
        if kind == "parameter_importance":
            return wr.ParameterImportancePlot(with_respect_to=item["with_respect_to"])
        raise ValueError(f"unknown panel type {kind!r}")

    order = [expr.Ordering(expr.Summary(o["summary"]), ascending=o["ascending"]) for o in spec["runset"]["order"]]
    return ws.Workspace(
        name=spec["name"],
        entity=entity,
        project=spec["project"],
        sections=[ws.Section(name=s["name"], panels=[panel(p) for p in s["panels"]], is_open=True) for s in spec["sections"]],
        runset_settings=ws.RunsetSettings(filters=spec["runset"]["filter"], order=order),
    )


def create_workspace(spec: dict[str, Any], entity: str | None = None) -> str:
    """Save the workspace of ``spec`` to W&B (online, with credentials); returns its URL.

    ImportError without ``wandb-workspaces``; W&B's own errors otherwise (no account, no network).
    """
    import wandb

    entity = entity or spec.get("entity") or wandb.Api().default_entity
    workspace = to_workspace(spec, entity).save()
    return str(workspace.url)
