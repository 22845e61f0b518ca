"""evaluate.py: the test-split numbers, recomputed independently from the exported checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from analysis import evaluate
from nsm.data import load_domain
from nsm.train import BASELINE, load_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluation(experiment, exported) -> dict:
    # One run of the CLI covers the checkpoint evaluation and the seed study (2 seeds keep it fast).
    assert evaluate.main([str(experiment), "--seeds", "2"]) == 0
    return json.loads((experiment / "analysis" / "evaluation" / "evaluation.json").read_text())


def test_numbers_match_an_independent_recomputation(evaluation, exported):
    # Independent path: torch.load of best_model.pt, the model's own forward pass, sklearn's metrics.
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    checkpoint = torch.load(exported / "best_model.pt", map_location="cpu", weights_only=True)
    model, config = load_model(checkpoint)
    data = load_domain(config.domain, num_graphs=config.num_graphs, seed=config.seed, root=config.data_root)
    logits, labels = [], []
    with torch.no_grad():
        for batch in DataLoader(list(data.test), batch_size=7):
            out = model(batch.x, batch.edge_index, batch.edge_type, batch.edge_attr, batch.batch)
            logits.append(out.logits)
            labels.append(batch.y.view(-1))
    probs = torch.cat(logits).softmax(-1).numpy()
    labels = torch.cat(labels).numpy()
    predictions = probs.argmax(1)

    assert evaluation["trial_id"] == json.loads((exported / "final_results.json").read_text())["source"]["trial_id"]
    assert evaluation["epoch"] == checkpoint["epoch"]
    assert evaluation["num_graphs"] == len(data.test)
    assert evaluation["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    matrix = confusion_matrix(labels, predictions, labels=[0, 1])
    assert evaluation["confusion_matrix"] == matrix.tolist()
    per_class = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
    assert list(evaluation["per_class_accuracy"].values()) == pytest.approx(per_class.tolist())
    report = classification_report(labels, predictions, labels=[0, 1], target_names=list(evaluate.CLASS_NAMES),
                                   output_dict=True, zero_division=0)
    for name in (*evaluate.CLASS_NAMES, "macro avg", "weighted avg"):
        for key in ("precision", "recall", "f1-score", "support"):
            assert evaluation["classification_report"][name][key] == pytest.approx(report[name][key]), (name, key)
    histogram = evaluation["confidence_histogram"]
    assert sum(histogram["correct"]) == int((predictions == labels).sum())
    assert sum(histogram["incorrect"]) == int((predictions != labels).sum())
    assert histogram["mean_confidence"] == pytest.approx(probs.max(1).mean(), rel=1e-5)


def test_accuracy_agrees_with_the_trainers_own_test_metrics(evaluation, exported):
    # nsm tests the best-val_acc weights at the end of training; the exported checkpoint holds them.
    results = json.loads((exported / "final_results.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(results["test_metrics"]["test_acc"])


def test_figures_are_png(evaluation, experiment):
    for name in ("confusion_matrix", "confidence_histogram"):
        path = experiment / "analysis" / "evaluation" / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_MAGIC, name
        assert evaluation["figures"][name] == str(path)


def test_seeds_retrain_best_and_baseline(evaluation, experiment):
    seeds = evaluation["seeds"]
    assert seeds["seeds"] == [0, 1]
    assert seeds["baseline"]["config"] == BASELINE
    assert seeds["best"]["config"] == {key: evaluation["config"][key] for key in BASELINE}
    for name in ("best", "baseline"):
        values = np.asarray(seeds[name]["test_acc"])
        assert len(values) == 2 and ((0 <= values) & (values <= 1)).all()
        assert seeds[name]["mean"] == pytest.approx(values.mean())
        assert seeds[name]["std"] == pytest.approx(values.std(ddof=1))
    assert seeds["gain"] == pytest.approx(seeds["best"]["mean"] - seeds["baseline"]["mean"])
    assert (experiment / "analysis" / "evaluation" / "seeds.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_prints_mean_and_std(evaluation):
    text = evaluate.format_evaluation(evaluation)
    for name in ("best", "baseline"):
        seeds = evaluation["seeds"][name]
        assert f"{name:<9}{seeds['mean']:.4f} +- {seeds['std']:.4f}" in text
    assert "confusion matrix" in text and "precision" in text
