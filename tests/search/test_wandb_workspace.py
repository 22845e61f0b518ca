"""The W&B workspace specification: what it shows, and (where wandb-workspaces is installed) its models accept it."""

from __future__ import annotations

import pytest

from search.settings import SearchSettings
from search.wandb_workspace import referenced_names, to_workspace, workspace_spec


def settings(metric: str = "val_acc", keys: list[str] | None = None) -> SearchSettings:
    return SearchSettings(domain="planning", name="exp", metric=metric, mode=None,
                          searched_keys=keys if keys is not None else ["lr", "cycle_weight", "batch_size"])


def test_the_spec_shows_the_searched_keys_against_the_best_metric_in_its_direction():
    spec = workspace_spec(settings())
    assert spec["project"] == SearchSettings().wandb_project and spec["group"] == "exp"
    assert spec["runset"]["order"] == [{"summary": "best_val_acc", "ascending": False}]
    panels = {panel["type"]: panel for panel in spec["sections"][0]["panels"]}
    assert [c.get("config", c.get("summary")) for c in panels["parallel_coordinates"]["columns"]] == [
        "lr", "cycle_weight", "batch_size", "best_val_acc"]
    assert panels["line"]["x"] == "epoch" and panels["line"]["y"] == ["val_acc"]
    assert panels["scatter"]["x"] == {"config": "lr"} and panels["scatter"]["log_x"]
    assert panels["parameter_importance"]["with_respect_to"] == "best_val_acc"
    assert referenced_names(spec) == {"config": {"lr", "cycle_weight", "batch_size"}, "summary": {"best_val_acc"},
                                      "history": {"epoch", "val_acc"}}
    # Without lr among the searched keys the scatter uses the first one; a loss sorts lowest first.
    spec = workspace_spec(settings("val_loss", ["dropout"]))
    assert spec["sections"][0]["panels"][2]["x"] == {"config": "dropout"}
    assert spec["runset"]["order"] == [{"summary": "best_val_loss", "ascending": True}]


def test_wandb_workspaces_models_accept_the_spec():
    pytest.importorskip("wandb_workspaces", reason="wandb-workspaces is not installed")
    workspace = to_workspace(workspace_spec(settings()), entity="someone")
    assert workspace.project == SearchSettings().wandb_project
    assert len(workspace.sections[0].panels) == 4
