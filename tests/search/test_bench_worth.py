"""bench/search.py's equal-compute comparison: budget accounting, choice on validation only, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from search.stopping import EPOCH_BUDGET_SPENT, EpochBudget, stop_reason
from search.study import make_sampler

from tests.bench_scripts import load_bench_script
from tests.nsm.grail_tiny import install_tiny_as


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("search")


def record(trial: str, epoch: int, value: float | None) -> dict:
    return {"trial": trial, "epoch": epoch, "value": value}


def test_analyse_counts_each_epoch_once_and_stops_at_the_budget(bench):
    records = [record("a", 1, 0.5), record("b", 1, 0.6), record("a", 2, 0.7),
               record("a", 2, 0.7),  # re-reported after a restore: counted once
               record("b", 2, float("nan")), record("a", 3, 0.9)]  # epoch 5 is past a budget of 4
    row = bench.analyse(records, budget=4)
    assert row["epochs_counted"] == 4 and row["epochs_run"] == 5 and row["trials"] == 2
    assert row["best_val"] == 0.7 and (row["chosen_trial"], row["chosen_epoch"]) == ("a", 2)
    assert row["curve"] == [0.5, 0.6, 0.7, 0.7]
    assert bench.epochs_to_match(row["curve"], 0.6) == 2 and bench.epochs_to_match(row["curve"], 0.8) is None


def test_the_first_trial_to_reach_the_best_value_is_chosen(bench):
    row = bench.analyse([record("a", 1, 0.8), record("b", 1, 0.8), record("b", 2, 0.8)], budget=3)
    assert (row["chosen_trial"], row["chosen_epoch"]) == ("a", 1) and row["chosen_values"] == {1: 0.8}


def _checkpoint(directory: Path, epoch: int) -> None:
    directory.mkdir(parents=True)
    torch.save({"epoch": epoch, "config": {}, "model": {}, "optimizer": {}, "metrics": {}, "history": []},
               directory / "checkpoint.pt")


def test_the_tested_checkpoint_is_chosen_on_validation_only(bench, tmp_path):
    for index, epoch in enumerate((2, 3, 4)):
        _checkpoint(tmp_path / f"checkpoint_{index:06d}", epoch)
    # The chosen epoch's checkpoint when Ray kept it; nothing but validation values is consulted.
    path, epoch = bench.chosen_checkpoint(tmp_path, 3, {1: 0.5, 2: 0.6, 3: 0.9, 4: 0.7})
    assert epoch == 3 and path == tmp_path / "checkpoint_000001" / "checkpoint.pt"
    # Dropped for a later tie of the same value: that tie, never an epoch past the counted ones.
    path, epoch = bench.chosen_checkpoint(tmp_path, 1, {1: 0.9, 2: 0.6, 3: 0.9})
    assert epoch == 3
    with pytest.raises(RuntimeError):
        bench.chosen_checkpoint(tmp_path, 1, {1: 0.9})


def test_epoch_budget_stopper_counts_distinct_epochs_and_stops_everything():
    stopper = EpochBudget("exp-budget", budget=3)
    assert not stopper("a", {"epoch": 1}) and not stopper("a", {"epoch": 1}) and not stopper("b", {"epoch": 1})
    assert stopper.epochs == 2 and not stopper.stop_all()
    assert stopper("a", {"epoch": 2}) and stopper.stop_all() and stopper.epochs == 3
    assert stopper("b", {"epoch": 2}) and stopper.epochs == 3  # past the budget: stopped, not counted
    assert stop_reason("exp-budget") == EPOCH_BUDGET_SPENT


def test_tpe_mv_is_multivariate_with_a_constant_liar():
    sampler = make_sampler("tpe-mv", seed=0, num_samples=24)
    assert sampler._multivariate and sampler._constant_liar and sampler._n_startup_trials == 6


@pytest.mark.parametrize(("argv", "message"), [
    (["--methods", "nope"], "error: --methods: unknown nope"),
    (["--methods", "asha+tpe", "random"], "error: --methods must start with random"),
    (["--domains", "mars"], "error: --domains: unknown mars"),
    (["--random-trials", "0"], "error: --random-trials must be >= 1"),
    (["--seeds", "x"], "error: argument --seeds: invalid int value"),
])
def test_bad_input_exits_2_with_one_line(bench, capsys, argv, message):
    assert bench.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(message) and captured.err.count("\n") == 1


def test_each_method_stays_within_the_budget_and_random_uses_all_of_it(bench, tmp_path, ray_session):
    args = bench.parse_args(["--random-trials", "2", "--max-epochs", "2", "--num-graphs", "120", "--hidden-dim", "16",
                             "--methods", "random", "asha+tpe", "--results", str(tmp_path / "rows.jsonl")])
    budget = 4
    rows = {name: bench.run_one(args, bench.METHODS[name], "planning", 0, tmp_path) for name in args.methods}
    assert rows["random"]["epochs_counted"] == budget and rows["random"]["trials"] == 2
    asha = rows["asha+tpe"]
    # ASHA's grace of 1 epoch buys more trials with the same epochs; a trial running alongside the one
    # that spent the budget may report one more epoch, which the comparison leaves out.
    assert asha["epochs_counted"] <= budget and asha["epochs_run"] <= budget + args.max_concurrent - 1
    for row in rows.values():
        assert row["budget"] == budget and row["best_val"] is not None and 0.0 <= row["test"] <= 1.0
        assert row["test_epoch"] is not None and len(row["curve"]) == row["epochs_counted"]


def test_a_grail_split_is_chosen_on_val_mrr_and_judged_on_test_mrr(bench, tmp_path, ray_session, monkeypatch):
    install_tiny_as("WN18RR_v1", tmp_path / "grail", monkeypatch)
    args = bench.parse_args(["--domains", "wn18rr_v1", "--random-trials", "2", "--max-epochs", "2", "--hidden-dim", "16",
                             "--methods", "random", "--data-root", str(tmp_path / "data"),
                             "--results", str(tmp_path / "rows.jsonl")])
    assert args.domains == ["WN18RR_v1"]
    assert bench.selection_metric("WN18RR_v1") == ("val_mrr", "test_mrr")
    row = bench.run_one(args, bench.METHODS["random"], "WN18RR_v1", 0, tmp_path)
    assert row["epochs_counted"] == 4 and row["trials"] == 2
    trial_dir = next((tmp_path / "eff").glob(f"*/trial_{row['chosen_trial']}"))
    results = json.loads((trial_dir / "final_results.json").read_text())
    history = json.loads((trial_dir / "training_history.json").read_text())
    # The comparison ranks on the split's own metric, and tests the chosen weights on its candidates:
    # the trainer kept the same epoch (ties keep the first) and tested it the same way.
    assert row["best_val"] == pytest.approx(max(epoch["val_mrr"] for epoch in history))
    assert row["test_epoch"] == results["best_epoch"]
    assert row["test"] == pytest.approx(results["test_metrics"]["test_mrr"], abs=1e-6)
    assert row["head_revision"] == bench.LINK_HEAD_REVISION


def test_rows_of_an_earlier_scoring_head_are_not_this_setup(bench):
    """A GraIL row measured with an earlier link-prediction head (or before rows had revisions) is not
    reused or tabled as the current head's; synthetic rows have no head revision."""
    args = bench.parse_args(["--domains", "WN18RR_v1", "planning", "--random-trials", "4", "--max-epochs", "10"])
    setup = {"budget": 40, "max_epochs": 10, "num_graphs": args.num_graphs, "hidden_dim": args.hidden_dim}
    assert bench._same_setup({**setup, "domain": "WN18RR_v1", "head_revision": bench.LINK_HEAD_REVISION}, args)
    assert not bench._same_setup({**setup, "domain": "WN18RR_v1"}, args)
    assert not bench._same_setup({**setup, "domain": "WN18RR_v1", "head_revision": bench.LINK_HEAD_REVISION - 1}, args)
    assert bench._same_setup({**setup, "domain": "planning"}, args)
