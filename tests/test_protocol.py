"""evaluate, compare, experiment (with resume) and tune on phantoms with a tiny config."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import PAPER_TASKS, invoke, tiny_config_dict, train_tiny_run

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


def _filled_manifest(phantoms, path):
    """The phantoms as a hospital export often has them: ALNM 0 filled on benign masses."""
    frame = pd.read_csv(phantoms, dtype=str, keep_default_na=False)
    benign = frame["malignant"] == "0"
    frame.loc[benign, ["alnm", "aln_count"]] = "0"
    for column in ("image", "annotation"):
        frame[column] = [str(phantoms.parent / p) for p in frame[column]]
    frame.to_csv(path, index=False)
    return path, frame


def test_child_is_evaluated_within_its_cohort(trained_run, phantoms, tmp_path):
    path, frame = _filled_manifest(phantoms, tmp_path / "filled.csv")
    result = invoke("evaluate", trained_run, "--manifest", path, "--bootstrap", 50)
    assert result.exit_code == 0, result.output
    report = json.loads((trained_run / "eval-test" / "metrics.json").read_text())
    split = pd.read_csv(trained_run / "split.csv", dtype=str)
    test = frame[frame["patient_id"].isin(split.loc[split["split"] == "test", "patient_id"])]
    malignant = test[test["malignant"] == "1"]
    alnm = report["tasks"]["alnm"]
    assert alnm["cohort"] == "malignant = 1" and report["tasks"]["malignancy"]["cohort"] == "all"
    assert alnm["n"] == int((malignant["alnm"] != "").sum()) < len(test)
    assert alnm["positives"] == int((malignant["alnm"] == "1").sum())
    assert report["tasks"]["aln_ge_2"]["n"] == int((malignant["aln_count"] != "").sum())
    assert report["tasks"]["malignancy"]["n"] == len(test)
    text = (trained_run / "eval-test" / "report.md").read_text()
    assert f"| ALNM | malignant = 1 | {alnm['n']} |" in text
    # The hinge's inconsistency rates stay over every image.
    assert report["inconsistency"]["malignancy>alnm"]["n"] == len(test)


def test_prediction_csv_cohort_option(trained_run, phantoms, tmp_path):
    frame = pd.read_csv(trained_run / "test_predictions.csv")
    frame.loc[frame["y_malignancy"] == 0, "y_alnm"] = 0.0   # labels of another tool, unrestricted
    frame.to_csv(tmp_path / "p.csv", index=False)
    plain = invoke("evaluate", tmp_path / "p.csv", "--bootstrap", 20, "--out", tmp_path / "a")
    within = invoke("evaluate", tmp_path / "p.csv", "--bootstrap", 20, "--out", tmp_path / "b",
                    "--cohort", "alnm=malignancy", "--edges", "malignancy>alnm")
    assert plain.exit_code == 0 and within.exit_code == 0, within.output
    n_all = json.loads((tmp_path / "a" / "metrics.json").read_text())["tasks"]["alnm"]["n"]
    report = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert n_all == len(frame)
    assert report["tasks"]["alnm"]["n"] == int((frame["y_malignancy"] == 1).sum())
    assert report["tasks"]["alnm"]["cohort"] == "malignancy = 1"
    bad = invoke("evaluate", tmp_path / "p.csv", "--out", tmp_path / "c", "--cohort", "alnm")
    assert bad.exit_code == 2 and "child=parent" in bad.output


def test_checkpoint_last_keeps_the_last_epoch(tmp_path, phantoms):
    from usmtl.config import config_from_dict
    from usmtl.predict import predict
    from usmtl.training.fit import fit

    cfg = config_from_dict(tiny_config_dict(train={"epochs": 2, "checkpoint": "last"}))
    result = fit(cfg, str(phantoms), str(tmp_path / "run"), verbose=0)
    state = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())
    assert state["checkpoint"] == "last" and state["epoch"] == 2 == result.best_epoch
    best = predict(str(tmp_path / "run"), str(phantoms), split="val")
    last = predict(str(tmp_path / "run" / "checkpoints" / "last.keras"), str(phantoms), split="val")
    np.testing.assert_allclose(best["p_malignancy"], last["p_malignancy"], atol=1e-6)


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
    tasks = [dict(t) for t in PAPER_TASKS]
    tasks[1]["display_name"] = "Axillary metastasis"  # the tables' name for alnm
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tasks=tasks, train={"epochs": 1})))
    out = tmp_path / "exp"
    args = ("experiment", "--config", config, "--manifest", phantoms, "--out", out,
            "--repeats", 2, "--variants", "single-bm,multitask-hl", "--paper")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.output.count(": trained") == 4
    # The paper's Table 3 shape: six metrics, the paper's figure beside each cell.
    table3 = (out / "table3.md").read_text()
    assert "| Task | Model | Cohort | n | ACC | SE | Prec | SP | F1 | AUC |" in table3
    # rows by display name (the config's, else derived), the paper's role in the caption
    assert "| Malignancy | Single-BM | all |" in table3
    assert "| Axillary metastasis | Multi-Task + HL | malignant = 1 |" in table3
    assert "| ALN >= 2 | Multi-Task + HL |" in table3 and "| alnm |" not in table3
    assert "our Axillary metastasis as the paper's ALNM" in table3
    assert "; paper 0.871 ± 0.006 (0.854, 0.887)" in table3  # Single-BM's published AUC
    frame = pd.read_csv(out / "table3.csv")
    assert list(frame["task"].unique()) == ["malignancy", "alnm", "aln_ge_2"]  # the keys
    assert list(frame["display_name"].unique()) == ["Malignancy", "Axillary metastasis", "ALN >= 2"]
    assert set(frame["paper_task"].fillna("")) == {"Malignancy", "ALNM", ""}
    assert {"ACC", "SE", "Prec", "SP", "F1", "AUC", "AUC (paper)"} <= set(frame.columns)
    assert frame["AUC"].str.match(r"^\d\.\d{3} ± \d\.\d{3} \(\d\.\d{3}, \d\.\d{3}\)$").all()
    tables = (out / "tables.md").read_text()
    for text in ("## Malignancy", "## Axillary metastasis", "| single-bm |", "| multitask-hl |",
                 "±", "Inconsistent predictions", "p-values",
                 "| multitask-hl | Malignancy > Axillary metastasis |", "| Malignancy | single-bm |"):
        assert text in tables, text
    assert "## alnm" not in tables
    summary = pd.read_csv(out / "summary.csv")
    row = summary[(summary.variant == "multitask-hl") & (summary.task == "malignancy")
                  & (summary.metric == "auc")].iloc[0]
    assert row["n"] == 2
    assert list(summary.columns[:10]) == ["variant", "task", "metric", "n", "mean", "sd", "ci_low",
                                          "ci_high", "mean_ci_low", "mean_ci_high"]
    # ci_* is the paper's interval (mean ± t·SD, wider), mean_ci_* the CI of the mean
    half = 12.706 * row["sd"]
    assert row["ci_high"] == pytest.approx(min(1.0, row["mean"] + half), abs=1e-3)
    assert row["mean_ci_high"] == pytest.approx(min(1.0, row["mean"] + half / np.sqrt(2)), abs=1e-3)
    alnm = summary[(summary.task == "alnm") & (summary.metric == "auc")].iloc[0]
    assert alnm["cohort"] == "malignant = 1"
    assert alnm["n_images"] < summary[(summary.task == "malignancy")].iloc[0]["n_images"]
    pvalues = pd.read_csv(out / "pvalues.csv")
    assert len(pvalues) == 1  # malignancy: the only shared task
    assert {"unpaired_t_p", "paired_t_p", "delong_p"} <= set(pvalues.columns)
    assert "mean ± SD (mean ± t·SD, as Li et al.)" in tables and "Cohort: malignant = 1" in tables

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


def test_burden_protocol_is_table_4(tmp_path, phantoms):
    """Table 4's shape: one two-head model per threshold, each child within the malignant."""
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tasks=PAPER_TASKS[:2], train={"epochs": 1})))
    out = tmp_path / "burden"
    args = ("experiment", "--config", config, "--manifest", phantoms, "--out", out,
            "--protocol", "burden", "--thresholds", "1,2", "--repeats", 2)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.output.count(": trained") == 4  # 2 thresholds x multitask-hl x 2 repeats
    table = (out / "table4.md").read_text()
    # rows by the child's display name, as the paper's "ALNM >= 2"
    assert "| ALNM >= 1 | Multi-Task + HL | malignant = 1 |" in table
    assert "| ALNM >= 2 | Multi-Task + HL | malignant = 1 |" in table
    table4 = pd.read_csv(out / "table4.csv")
    assert list(table4["task"]) == ["alnm_ge1", "alnm_ge2"]
    assert list(table4["display_name"]) == ["ALNM >= 1", "ALNM >= 2"]
    burden = pd.read_csv(out / "burden.csv")
    assert set(burden["task"]) == {"alnm_ge1", "alnm_ge2"}
    frame = pd.read_csv(phantoms, dtype=str, keep_default_na=False)
    split = pd.read_csv(out / "split.csv", dtype=str)
    test = frame[frame["patient_id"].isin(split.loc[split["split"] == "test", "patient_id"])]
    malignant = test[test["malignant"] == "1"]
    ge2 = burden[(burden["task"] == "alnm_ge2") & (burden["metric"] == "auc")].iloc[0]
    assert ge2["n_images"] == len(malignant)
    assert ge2["positives"] == int((malignant["aln_count"].astype(int) >= 2).sum())
    for k in (1, 2):   # every threshold's runs used the one shared split
        saved = pd.read_csv(out / f"ge{k}" / "runs" / "multitask-hl" / "repeat-1" / "split.csv",
                            dtype=str)
        assert saved.equals(split)
    again = invoke(*args)
    assert again.exit_code == 0 and again.output.count(": reused") == 4
    chained = tmp_path / "chained.yaml"
    chained.write_text(yaml.safe_dump(tiny_config_dict()))
    refused = invoke("experiment", "--config", chained, "--manifest", phantoms, "--out",
                     tmp_path / "x", "--protocol", "burden")
    assert refused.exit_code == 2 and "two-head" in refused.output


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


def test_tune_child_weight_selected_on_the_parent(tmp_path, phantoms):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tasks=PAPER_TASKS[:2], train={"epochs": 1})))
    result = invoke("tune", "--config", config, "--manifest", phantoms, "--out", tmp_path / "t",
                    "--margins", "0.1", "--weights", "0.05", "--child-weights", "1,0.1",
                    "--select", "malignancy")
    assert result.exit_code == 0, result.output
    grid = pd.read_csv(tmp_path / "t" / "grid.csv")
    assert list(grid["child_weight"]) == [1.0, 0.1]
    assert list(grid["score"]) == list(grid["val_auc_malignancy"])
    best = json.loads((tmp_path / "t" / "best.json").read_text())
    assert best["select"] == "malignancy" and best["score"] == pytest.approx(grid["score"].max())
    saved = yaml.safe_load((tmp_path / "t" / "runs" / "m0.1_lambda0.05_child0.1" / "config.yaml")
                           .read_text())
    assert [t["loss_weight"] for t in saved["tasks"]] == [1.0, 0.1]
    refused = invoke("tune", "--config", config, "--manifest", phantoms, "--out", tmp_path / "u",
                     "--select", "nodes")
    assert refused.exit_code == 2 and "select must be" in refused.output


def test_experiment_with_radiomics_writes_table_2(tmp_path, phantoms):
    """Table 2's shape: the CNN (Multi-Task + HL) against radiomics fitted on the same split,
    with DeLong's p on the same test images."""
    from tests.test_radiomics import synthetic_features

    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tasks=PAPER_TASKS[:2], train={"epochs": 1})))
    features = synthetic_features(phantoms, str(tmp_path / "f.csv"))
    out = tmp_path / "exp"
    result = invoke("experiment", "--config", config, "--manifest", phantoms, "--out", out,
                    "--repeats", 2, "--variants", "multitask-hl", "--radiomics", features, "--paper")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "table2.csv")
    assert list(table["model"]) == ["Radiomics", "Multi-Task + HL"] * 2
    assert table["delong_p"].between(0, 1).all()
    text = (out / "table2.md").read_text()
    assert "| Malignancy | Radiomics | all |" in text and "; paper 0.848" in text
    radiomics = pd.read_csv(out / "radiomics" / "test_predictions.csv")
    cnn = pd.read_csv(out / "runs" / "multitask-hl" / "repeat-1" / "test_predictions.csv")
    assert set(radiomics["image"]) == set(cnn["image"])
    refused = invoke("experiment", "--config", config, "--manifest", phantoms, "--out",
                     tmp_path / "other", "--variants", "single-bm", "--radiomics", features)
    assert refused.exit_code == 2 and "add it to --variants" in refused.output
    assert not (tmp_path / "other").exists()  # refused before anything was written
