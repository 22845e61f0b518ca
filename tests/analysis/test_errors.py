"""Error cases: one line `error: ...`, exit 2; nothing in the experiment changes but best/ and analysis/."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from ray.tune import ExperimentAnalysis, ResultGrid

from analysis import best, compare, evaluate, importance
from tests.analysis.conftest import REPO, set_trial_status

CLIS = {"best": best.main, "evaluate": evaluate.main, "compare": compare.main, "importance": importance.main}


def _snapshot(directory):
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.relative_to(directory).parts[0] not in ("best", "analysis")
    }


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("name", sorted(CLIS))
def test_not_an_experiment(name, tmp_path, capsys):
    assert CLIS[name]([str(tmp_path / "missing")]) == 2
    assert "no such experiment directory" in _one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert CLIS[name]([str(tmp_path / "empty")]) == 2
    _one_line_error(capsys)
    assert list((tmp_path / "empty").iterdir()) == []


def test_no_finished_trial(experiment_copy, capsys):
    set_trial_status(experiment_copy, "PENDING")
    for name in ("best", "evaluate", "compare"):
        assert CLIS[name]([str(experiment_copy)]) == 2
        assert "no finished trial" in _one_line_error(capsys)
    assert not (experiment_copy / "best").exists()


def _best_checkpoint_file(experiment_dir):
    result = ResultGrid(ExperimentAnalysis(str(experiment_dir))).get_best_result("val_acc", "max", "all")
    return result.get_best_checkpoint("val_acc", "max").path + "/checkpoint.pt"


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_checkpoint(experiment_copy, damage, capsys):
    path = _best_checkpoint_file(experiment_copy)
    if damage == "missing":
        import os

        os.unlink(path)
    else:
        with open(path, "wb") as handle:
            handle.write(b"not a checkpoint")
    for name in ("best", "evaluate"):
        assert CLIS[name]([str(experiment_copy)]) == 2
        err = _one_line_error(capsys)
        assert ("not found" in err) if damage == "missing" else ("corrupt" in err)
    assert not (experiment_copy / "best").exists()


def test_script_entry_points(tmp_path):
    # `python analysis/<tool>.py --help` for every tool, and one error exit, run side by side.
    commands = [[sys.executable, str(REPO / "analysis" / f"{name}.py"), "--help"] for name in CLIS]
    commands.append([sys.executable, str(REPO / "analysis" / "best.py"), str(tmp_path)])
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [(process.wait(timeout=120), *process.communicate()) for process in processes]
    for code, out, err in outputs[:-1]:
        assert code == 0 and "usage: python analysis/" in out, err
    code, out, err = outputs[-1]
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_analysis_modifies_only_best_and_analysis(experiment_copy, capsys):
    before = _snapshot(experiment_copy)
    assert best.main([str(experiment_copy)]) == 0
    assert evaluate.main([str(experiment_copy)]) == 0
    assert compare.main([str(experiment_copy)]) == 0
    assert importance.main([str(experiment_copy)]) == 0
    capsys.readouterr()
    assert _snapshot(experiment_copy) == before
    assert {path.name for path in experiment_copy.iterdir()} - set(before) - {p.split("/")[0] for p in before} == {
        "best", "analysis"}
