"""bench/grail.py on the tiny graph: the seeds' mean and spread, the results file it resumes from, bad input."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from nsm import ppr
from nsm.data import grail
from tests.bench_scripts import load_bench_script
from tests.nsm.grail_tiny import install_tiny_as


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("grail")


def test_seeds_are_aggregated_and_a_second_run_reuses_the_results_file(bench, tmp_path, monkeypatch, capsys):
    install_tiny_as("WN18RR_v1", tmp_path / "grail", monkeypatch)
    results = tmp_path / "grail.jsonl"
    argv = ["--splits", "wn18rr_v1", "--epochs", "1", "--seeds", "2", "--data-root", str(tmp_path / "data"),
            "--results", str(results)]
    assert bench.main(argv) == 0
    first = capsys.readouterr().out
    runs = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(run["split"], run["method"], run["seed"]) for run in runs] == [("WN18RR_v1", "NSM baseline", 0),
                                                                             ("WN18RR_v1", "NSM baseline", 1)]
    assert all(run["graphs_per_s"] > 0 and run["epochs_run"] == 1 for run in runs)
    values = [run["test_mrr"] for run in runs]
    mean, std = 100 * statistics.fmean(values), 100 * statistics.stdev(values)
    baseline = next(line for line in first.splitlines() if line.startswith("WN18RR_v1   NSM baseline"))
    assert f"{mean:.2f} ± {std:.2f}" in baseline and "2 seed(s) x 1 epochs" in baseline
    assert all(0 < run["val_mrr"] <= 1 and 0 <= run["val_hits_at_10"] <= 1 for run in runs)  # the tested epoch's
    assert f"validation MRR {100 * statistics.fmean(run['val_mrr'] for run in runs):.2f}" in baseline
    shortcut = next(line for line in first.splitlines() if line.startswith("WN18RR_v1   PPR shortcut"))
    data = grail.load_grail("WN18RR_v1", tmp_path / "data")
    true_graphs = data.test_ranking.subset(range(0, len(data.test_ranking), data.num_candidates))
    empty = sum(true_graphs[i].edge_index.shape[1] == 0 for i in range(len(true_graphs)))
    assert f"true triple's subgraph empty in {empty} of {len(true_graphs)} test rankings" in shortcut
    on_validation = ppr.evaluate(data.protocol, "valid")  # where the NSM's rows are chosen, so printed beside them
    assert f"validation MRR {100 * on_validation['val_mrr']:.2f}, Hits@10 {100 * on_validation['val_hits_at_10']:.2f}" in shortcut
    published = next(line for line in first.splitlines() if line.startswith("WN18RR_v1   GraIL (published)"))
    assert published.split()[-2:] == ["82.45", "-"] and "94.32" in published

    def no_training(*args, **kwargs):
        raise AssertionError("a run already in the results file was trained again")

    monkeypatch.setattr(bench, "train", no_training)
    with open(results, "a") as file:
        file.write('{"split": "WN18RR_v1", "met')  # a line cut by a kill mid-write: skipped, not an error
    assert bench.main(argv) == 0
    assert capsys.readouterr().out.split("\n", 1)[1] == first.split("\n", 1)[1]  # all but the load line
    assert len(results.read_text().splitlines()) == 3


def test_a_foreign_results_file_is_a_one_line_error(bench, tmp_path, monkeypatch, capsys):
    install_tiny_as("WN18RR_v1", tmp_path / "grail", monkeypatch)
    results = tmp_path / "other.jsonl"
    results.write_text('{"trial": "a", "epoch": 1}\n')
    argv = ["--splits", "WN18RR_v1", "--epochs", "1", "--data-root", str(tmp_path / "data"), "--results", str(results)]
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {results}:1: not a bench/grail.py results line"
    assert results.read_text() == '{"trial": "a", "epoch": 1}\n'


def _config_only(tmp_path, monkeypatch, config_text: str, label: str) -> tuple[list[str], Path, Path]:
    """Arguments that train only one config on the tiny split, its config file and its results file."""
    install_tiny_as("WN18RR_v1", tmp_path / "grail", monkeypatch)
    found, results = tmp_path / "found.yaml", tmp_path / "grail.jsonl"
    found.write_text(config_text)
    argv = ["--splits", "WN18RR_v1", "--epochs", "1", "--data-root", str(tmp_path / "data"), "--results", str(results),
            "--config", str(found), "--config-label", label, "--no-baseline"]
    return argv, found, results


def test_no_baseline_trains_only_the_searched_config(bench, tmp_path, monkeypatch, capsys):
    argv, _, results = _config_only(tmp_path, monkeypatch, "lr: 0.002\ncycle_weight: 0.1\nbatch_size: 32\n", "ASHA+TPE 4x1")
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    runs = [json.loads(line) for line in results.read_text().splitlines()]
    assert [run["method"] for run in runs] == ["NSM ASHA+TPE 4x1"]
    assert runs[0]["config"]["lr"] == 0.002 and runs[0]["config"]["batch_size"] == 32
    assert not any(line.startswith("WN18RR_v1   NSM baseline") for line in out.splitlines())
    assert any(line.startswith("WN18RR_v1   NSM ASHA+TPE 4x1") for line in out.splitlines())


def test_a_run_recorded_before_a_config_key_existed_is_that_keys_default(bench, tmp_path, monkeypatch, capsys):
    argv, found, results = _config_only(tmp_path, monkeypatch, "lr: 0.002\n", "found")
    assert bench.main(argv) == 0
    (run,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert run["config"]["root_context"] is True and run["config"]["train_pathless_facts"] is True
    older = {key: value for key, value in run["config"].items() if key not in ("root_context", "train_pathless_facts")}
    results.write_text(json.dumps({**run, "config": older}) + "\n")
    trained = []
    monkeypatch.setattr(bench, "_train_once", lambda *args: trained.append(args) or run)
    assert bench.main(argv) == 0
    assert trained == []  # the older line is the same point
    found.write_text("lr: 0.002\nroot_context: false\n")
    assert bench.main(argv) == 0
    assert len(trained) == 1 and trained[0][2]["root_context"] is False  # a new point is trained


def test_a_run_of_an_earlier_scoring_head_is_trained_again(bench, tmp_path, monkeypatch, capsys):
    """A results line measured with an earlier head (or before lines had revisions) is a record of that
    head, never a number for the current one."""
    install_tiny_as("WN18RR_v1", tmp_path / "grail", monkeypatch)
    results = tmp_path / "grail.jsonl"
    argv = ["--splits", "WN18RR_v1", "--epochs", "1", "--data-root", str(tmp_path / "data"), "--results", str(results)]
    assert bench.main(argv) == 0
    (run,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert run["head_revision"] == bench.LINK_HEAD_REVISION
    del run["head_revision"]
    results.write_text(json.dumps({**run, "test_mrr": 0.5}) + "\n")
    assert bench.main(argv) == 0
    runs = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(runs) == 2 and runs[1]["head_revision"] == bench.LINK_HEAD_REVISION
    baseline = next(line for line in capsys.readouterr().out.splitlines()[::-1] if line.startswith("WN18RR_v1   NSM baseline"))
    assert f"{100 * runs[1]['test_mrr']:.2f}" in baseline and "50.00" not in baseline


def test_no_baseline_without_a_config_is_a_usage_error(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--splits", "WN18RR_v1", "--no-baseline"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--no-baseline needs --config (otherwise no NSM row is left to train)")


def test_from_results_prints_a_finished_runs_row_under_its_shortcut(bench, tmp_path, monkeypatch, capsys):
    from nsm.config import TrainConfig
    from nsm.train import train

    install_tiny_as("WN18RR_v1", tmp_path / "grail", monkeypatch)
    run_dir = tmp_path / "wn1_run"
    config = TrainConfig.from_dict({"domain": "WN18RR_v1", "epochs": 2, "save_every": 0, "device": "cpu",
                                    "data_root": str(tmp_path / "data")})
    results = train(config, out_dir=run_dir)
    assert bench.main(["--from-results", str(run_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("WN18RR_v1   NSM (wn1_run)"))
    assert lines[row - 1].startswith("WN18RR_v1   PPR shortcut")
    assert f"{100 * results['test_metrics']['test_mrr']:.2f}" in lines[row]
    assert f"2 epochs, best epoch {results['best_epoch']}, " in lines[row] and "train graphs/s" in lines[row]
    assert "seed(s)" not in lines[row] and "s/run" not in lines[row]
    assert lines[row + 1].startswith("WN18RR_v1   GraIL (published)")


def test_from_results_of_a_folder_without_results_is_a_one_line_error(bench, tmp_path, capsys):
    assert bench.main(["--from-results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'final_results.json'}: not found "
                                               "(a finished nsm.train run directory is expected)")
