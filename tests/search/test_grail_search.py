"""A real search on a GraIL split: the tiny knowledge graph installed as WN18RR_v1, 2 trials x 2 epochs,
ranked on val_mrr by default; bad split names are one-line errors before Ray starts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from search.run import main
from tests.nsm.grail_tiny import install_tiny_as


def test_search_on_a_split_ranks_on_val_mrr(tmp_path, ray_session, monkeypatch, capsys):
    install_tiny_as("WN18RR_v1", tmp_path / "grail", monkeypatch)
    data_root = tmp_path / "data"
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(f"""
        default:
          lr: {{type: loguniform, low: 1.0e-4, high: 3.0e-2}}
          cycle_weight: 0.01
          batch_size: {{type: choice, values: [32, 64]}}
          hidden_dim: 16
          num_bases: 4
          save_every: 0
        domains:
          grail:
            data_root: {data_root}
            root_context: {{type: choice, values: [true, false]}}
            train_corruptions: {{type: choice, values: [1, 2]}}
            train_graph_keep: 0.8
    """))
    code = main(["--domain", "wn18rr_v1", "--space", str(space), "--storage-path", str(tmp_path / "ray"),
                 "--name", "lp", "--num-samples", "2", "--max-epochs", "2", "--cpus-per-trial", "1",
                 "--gpus-per-trial", "0", "--wandb", "disabled"])
    assert code == 0
    out = capsys.readouterr().out
    assert "preparing WN18RR_v1" in out and "ranked by val_mrr (max)" in out
    assert "(train_corruptions 2, train_graph_keep 0.8)" in out
    summary = json.loads((tmp_path / "ray" / "lp" / "summary.json").read_text())
    assert summary["domain"] == "WN18RR_v1" and summary["metric"] == "val_mrr" and summary["num_trials"] == 2
    settings = json.loads((tmp_path / "ray" / "lp" / "search.json").read_text())
    assert settings["metric"] == "val_mrr" and settings["mode"] == "max"
    assert summary["searched_keys"] == ["lr", "batch_size", "root_context", "train_corruptions"]  # a boolean key is searched too
    assert all(isinstance(row["root_context"], bool) for row in summary["trials"])
    assert all(0 < row["val_mrr"] <= 1 for row in summary["trials"])
    # The trials read the split the driver extracted once per combination of the keys that shape its training
    # graphs (each training-corruption count, at the kept fraction the space fixes): one processed file each.
    names = sorted(path.name for path in (data_root / "grail" / "processed").iterdir())
    assert [name.split("-v100-")[1].split("-s0")[0] for name in names] == ["n1-g0.8", "n2-g0.8"], names
    completed = [row for row in summary["trials"] if row["status"] == "completed"]  # ASHA may stop one after epoch 1
    assert completed
    for row in completed:
        results = json.loads((Path(row["trial_dir"]) / "final_results.json").read_text())
        assert {"test_hits_at_10", "test_mrr", "test_auc_pr"} <= set(results["test_metrics"])
        assert "shortcut_metrics" in results

    # analysis/evaluate.py scores the best checkpoint by GraIL's protocol, beside the shortcut.
    from analysis.evaluate import evaluate_experiment, format_evaluation
    from analysis.experiment import open_experiment

    evaluation = evaluate_experiment(open_experiment(tmp_path / "ray" / "lp"), tmp_path / "evaluation")
    assert evaluation["task"] == "link_prediction" and evaluation["metric"] == "val_mrr"
    assert {"test_auc_pr", "test_hits_at_10", "test_mrr"} <= set(evaluation["test_metrics"])
    assert set(evaluation["shortcut_metrics"]) == {"test_auc_pr", "test_hits_at_10", "test_mrr"}
    text = format_evaluation(evaluation)
    assert "PPR shortcut" in text and "GraIL (published)" in text


@pytest.mark.parametrize("domain", ["WN18RR_v9", "grail_v1"])
def test_unknown_split_is_a_one_line_error(tmp_path, domain, capsys):
    assert main(["--domain", domain, "--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown domain") and "\n" not in err and "grail" in err
    assert list(tmp_path.iterdir()) == []
