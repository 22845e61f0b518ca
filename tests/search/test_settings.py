"""One flag schema: the search CLI is generated from SearchSettings, whose defaults live there once."""

from __future__ import annotations

import dataclasses
import json

import pytest

from search.run import build_parser, main
from search.settings import SETTINGS_FILE, SearchSettings, flags


def test_every_flag_is_a_setting_with_the_settings_default():
    parser = build_parser()
    # -v and -q are short spellings of --console verbose / quiet.
    options = {action.dest: action for action in parser._actions
               if action.dest != "help" and action.option_strings[0].startswith("--")}
    assert list(options) == [setting.name for setting in flags()]
    for setting in flags():
        assert options[setting.name].default == setting.default, setting.name
        assert options[setting.name].help == setting.metadata["help"]
    # The bare command is the default settings.
    assert SearchSettings(**vars(parser.parse_args([]))) == SearchSettings()
    parsed = SearchSettings(**vars(parser.parse_args(["--domain", "kg", "--num-samples", "8", "--cpus-per-trial", "0.5"])))
    assert (parsed.domain, parsed.num_samples, parsed.cpus_per_trial) == ("kg", 8, 0.5)
    assert [parser.parse_args(args).console for args in ([], ["-v"], ["-q"], ["--console", "quiet"])] == \
        ["live", "verbose", "quiet", "quiet"]


def test_search_json_keeps_the_searched_keys_and_not_the_resume_flag(tmp_path):
    settings = SearchSettings(domain="planning", name="exp", storage_path=str(tmp_path), num_samples=4, max_epochs=2,
                              mode="max", resume="exp", searched_keys=["lr", "dropout"])
    (tmp_path / "exp").mkdir()
    settings.save()
    stored = json.loads((tmp_path / "exp" / SETTINGS_FILE).read_text())
    assert stored["searched_keys"] == ["lr", "dropout"] and "resume" not in stored
    assert SearchSettings.load(tmp_path / "exp") == dataclasses.replace(settings, resume=None)


def test_search_json_written_before_the_searched_keys_were_recorded_loads(tmp_path):
    old = {"domain": "kg", "name": "old", "storage_path": str(tmp_path), "space": "/s.yaml", "num_samples": 3,
           "max_epochs": 2, "scheduler": "asha", "searcher": "tpe", "metric": "val_acc", "mode": "max",
           "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "max_concurrent": 2, "seed": 0, "wandb": "disabled",
           "wandb_project": "nsm-search", "time_budget_s": None, "warm_start": None, "address": None,
           "grace_period": 1, "reduction_factor": 3}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / SETTINGS_FILE).write_text(json.dumps(old))
    settings = SearchSettings.load(tmp_path / "old")
    assert settings.searched_keys is None and settings.domain == "kg" and settings.max_concurrent == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--metric", "epoch"], "--metric must be one of nsm's ranking metrics"),  # bookkeeping: no direction
        (["--metric", "lr"], "--metric must be one of nsm's ranking metrics"),
        (["--metric", "val_mrr"], "ranking metrics (train_loss"),  # registered for link prediction, not reported here
    ],
)
def test_metrics_that_cannot_rank_a_planning_search_are_refused(tmp_path, capsys, args, expected):
    storage = tmp_path / "results"
    assert main(["--domain", "planning", *args, "--storage-path", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --metric") and "\n" not in err and expected in err and f"got '{args[1]}'" in err
    assert not storage.exists()
