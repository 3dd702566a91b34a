"""evaluate, compare, experiment (with resume) and tune on phantoms with a tiny config."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import invoke, tiny_config_dict, train_tiny_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, phantoms):
    return train_tiny_run(tmp_path_factory.mktemp("run") / "run", phantoms, epochs=2)


def test_evaluate_run_writes_reports(trained_run):
    result = invoke("evaluate", trained_run, "--bootstrap", 100)
    assert result.exit_code == 0, result.output
    assert "malignancy" in result.output and "inconsistent malignancy>alnm" in result.output
    for name in ("metrics.json", "metrics.csv", "report.md", "roc_all.png", "roc_malignancy.png",
                 "test_predictions.csv"):
        assert (trained_run / name).is_file(), name
    report = json.loads((trained_run / "metrics.json").read_text())
    task = report["tasks"]["malignancy"]
    auc = task["image"]["auc"]
    assert auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    assert set(task) >= {"image", "patient", "confusion", "youden_threshold", "image_youden"}
    assert sum(task["confusion"].values()) == task["n"]
    assert set(report["inconsistency"]) == {"malignancy>alnm", "alnm>aln_ge_2"}
    text = (trained_run / "report.md").read_text()
    assert "Patient level" in text and "Youden" in text


def test_compare_runs_and_prediction_files(trained_run, tmp_path):
    frame = pd.read_csv(trained_run / "test_predictions.csv")
    other = frame.copy()
    other["p_malignancy"] = np.clip(other["p_malignancy"] + 0.1, 0, 1)
    other.to_csv(tmp_path / "other.csv", index=False)
    result = invoke("compare", trained_run, tmp_path / "other.csv", "--out", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "c.json").read_text())
    # a monotone shift keeps the ranking: same AUC, DeLong p = 1
    assert comparison["malignancy"]["delong"]["diff"] == pytest.approx(0.0, abs=1e-12)
    other.iloc[:-3].to_csv(tmp_path / "short.csv", index=False)
    result = invoke("compare", trained_run, tmp_path / "short.csv")
    assert result.exit_code == 2 and "do not cover the same images" in result.output


def test_experiment_produces_tables_and_resumes(tmp_path, phantoms):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(train={"epochs": 1})))
    out = tmp_path / "exp"
    args = ("experiment", "--config", config, "--manifest", phantoms, "--out", out,
            "--repeats", 2, "--variants", "single-bm,multitask-hl")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.output.count(": trained") == 4
    tables = (out / "tables.md").read_text()
    for text in ("## malignancy", "| single-bm |", "| multitask-hl |", "±",
                 "Inconsistent predictions", "p-values"):
        assert text in tables, text
    summary = pd.read_csv(out / "summary.csv")
    row = summary[(summary.variant == "multitask-hl") & (summary.task == "malignancy")
                  & (summary.metric == "auc")].iloc[0]
    assert row["n"] == 2
    assert len(pd.read_csv(out / "pvalues.csv")) == 1  # malignancy: the only shared task

    # Interrupt one run: mark it running again and drop its checkpoints' state.
    broken = out / "runs" / "multitask-hl" / "repeat-2"
    run = json.loads((broken / "run.json").read_text())
    run["status"] = "running"
    (broken / "run.json").write_text(json.dumps(run))
    untouched = out / "runs" / "single-bm" / "repeat-1" / "checkpoints" / "best.keras"
    mtime = os.path.getmtime(untouched)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.output.count(": reused") == 3 and result.output.count(": resumed") == 1
    assert os.path.getmtime(untouched) == mtime
    assert json.loads((broken / "run.json").read_text())["status"] == "finished"

    # Another config in the same directory is refused rather than mixed in.
    config.write_text(yaml.safe_dump(tiny_config_dict(train={"epochs": 2})))
    result = invoke(*args)
    assert result.exit_code == 2 and "another config" in result.output


def test_tune_grid(tmp_path, phantoms):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(train={"epochs": 1})))
    result = invoke("tune", "--config", config, "--manifest", phantoms, "--out", tmp_path / "t",
                    "--margins", "0,0.1", "--weights", "0.05")
    assert result.exit_code == 0, result.output
    grid = pd.read_csv(tmp_path / "t" / "grid.csv")
    assert list(grid["margin"]) == [0.0, 0.1] and list(grid["weight"]) == [0.05, 0.05]
    best = json.loads((tmp_path / "t" / "best.json").read_text())
    assert best["val_auc_mean"] == pytest.approx(grid["val_auc_mean"].max())
    saved = yaml.safe_load((tmp_path / "t" / "runs" / "m0.1_lambda0.05" / "config.yaml").read_text())
    assert saved["model"]["hinge_margin"] == 0.1 and saved["model"]["hinge"] is True
