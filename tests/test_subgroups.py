"""Subgroup metrics, Cochran's Q between groups' AUCs, and ``evaluate --by``."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from usmtl.errors import UsmtlError
from usmtl.evaluation.subgroups import (heterogeneity_test, plot_forest, subgroup_metrics,
                                        table_heterogeneity)


def _binormal(d, n_pos, n_neg, rng):
    """Scores N(d, 1) for positives, N(0, 1) for negatives: AUC = Phi(d / sqrt(2))."""
    scores = np.concatenate([rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)])
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)])
    return y, 1 / (1 + np.exp(-scores))  # a monotone map: probabilities, same AUC


def _frame(groups, seed=0):
    """A prediction frame with one block of binormal rows per ``(name, d, n_pos, n_neg)``."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, d, n_pos, n_neg in groups:
        y, p = _binormal(d, n_pos, n_neg, rng)
        parts.append(pd.DataFrame({"y_malignancy": y, "p_malignancy": p, "site": name}))
    frame = pd.concat(parts, ignore_index=True)
    frame["patient_id"] = [f"p{i}" for i in range(len(frame))]
    frame["image"] = [f"i{i}.png" for i in range(len(frame))]
    return frame


def _auc_and_delong_variance(y, p):
    """Independent reference: AUC and DeLong variance from the pairwise comparison matrix."""
    x, z = p[y == 1], p[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(z)


def test_heterogeneity_between_groups_with_different_aucs():
    frame = _frame([("A", 1.5, 700, 700), ("B", 0.5, 700, 700)])
    table = subgroup_metrics(frame, "malignancy", frame["site"].to_numpy(), n_boot=30)
    groups = table[table["kind"] == "group"].set_index("group")
    truth = {"A": sps.norm.cdf(1.5 / math.sqrt(2)), "B": sps.norm.cdf(0.5 / math.sqrt(2))}
    for name in ("A", "B"):
        assert groups.loc[name, "auc"] == pytest.approx(truth[name], abs=0.035)
        assert groups.loc[name, "n"] == 1400 and groups.loc[name, "positives"] == 700
        assert groups.loc[name, "auc_ci_low"] < groups.loc[name, "auc"] < groups.loc[name, "auc_ci_high"]
    result = table_heterogeneity(table)
    assert result["k"] == 2 and result["df"] == 1 and result["p"] < 0.01
    # Q of two groups is z^2 of the two-sample z-test, computed here independently
    refs = {}
    for name in ("A", "B"):
        inside = frame["site"] == name
        refs[name] = _auc_and_delong_variance(frame.loc[inside, "y_malignancy"].to_numpy(),
                                              frame.loc[inside, "p_malignancy"].to_numpy())
        assert groups.loc[name, "auc"] == pytest.approx(refs[name][0], abs=1e-12)
        assert groups.loc[name, "auc_var"] == pytest.approx(refs[name][1], rel=1e-9)
    z = (refs["A"][0] - refs["B"][0]) / math.sqrt(refs["A"][1] + refs["B"][1])
    assert result["q"] == pytest.approx(z ** 2, rel=1e-9)
    assert result["p"] == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-6)
    assert result["i2"] == pytest.approx((z ** 2 - 1) / z ** 2)


def test_no_heterogeneity_between_groups_from_one_distribution():
    # Under the null the p-value is uniform: over 40 simulated pairs of groups it should
    # reject at 5% rarely (2 expected) and sit around 0.5 in the middle.
    p_values = []
    for seed in range(40):
        frame = _frame([("A", 1.0, 150, 150), ("B", 1.0, 150, 150)], seed=seed)
        result = table_heterogeneity(subgroup_metrics(frame, "malignancy", "site", n_boot=0))
        assert result["k"] == 2
        p_values.append(result["p"])
    p_values = np.array(p_values)
    assert np.sum(p_values < 0.05) <= 6
    assert 0.3 < np.median(p_values) < 0.7


def test_heterogeneity_test_leaves_out_untestable_groups():
    r = heterogeneity_test([0.8, math.nan, 0.7, 0.9], [0.001, 0.002, 0.0, 0.001])
    assert r["k"] == 2  # NaN AUC and zero variance left out
    one = heterogeneity_test([0.8], [0.001])
    assert one["k"] == 1 and one["df"] == 0 and math.isnan(one["q"]) and math.isnan(one["p"])
    with pytest.raises(UsmtlError, match="One variance per AUC"):
        heterogeneity_test([0.8, 0.7], [0.001])


def _small_frame():
    rng = np.random.default_rng(2)
    frame = _frame([("A", 1.0, 30, 30), ("B", 1.0, 30, 30)], seed=3)
    frame["patient_id"] = [f"p{i // 2}" for i in range(len(frame))]  # two images per patient
    frame["site"] = frame["site"].astype(object)
    return frame, rng


@pytest.mark.parametrize("case", ["one class", "nan labels dropped", "empty group",
                                  "missing values", "numeric groups"])
def test_edge_cases(case):
    frame, _ = _small_frame()
    if case == "one class":
        frame.loc[frame.index[:10], "site"] = "C"
        frame.loc[frame.index[:10], "y_malignancy"] = 1.0
        row = subgroup_metrics(frame, "malignancy", "site", n_boot=20).set_index("group").loc["C"]
        assert math.isnan(row["auc"]) and not row["testable"]
        assert row["note"] == "not testable: one class only"
        assert row["sensitivity"] == pytest.approx((frame.loc[frame.index[:10], "p_malignancy"]
                                                    >= 0.5).mean())
    elif case == "nan labels dropped":
        with_unknown = frame.copy()
        with_unknown.loc[with_unknown.index[::5], "y_malignancy"] = np.nan
        table = subgroup_metrics(with_unknown, "malignancy", "site", n_boot=20)
        known = with_unknown[with_unknown["y_malignancy"].notna()]
        reference = subgroup_metrics(known, "malignancy", "site", n_boot=20)
        pd.testing.assert_frame_equal(table, reference)
        assert table["n"].iloc[0] == len(known)
    elif case == "empty group":
        frame.loc[frame.index[:4], "site"] = "D"
        frame.loc[frame.index[:4], "y_malignancy"] = np.nan  # D: no known label at all
        row = subgroup_metrics(frame, "malignancy", "site", n_boot=20).set_index("group").loc["D"]
        assert row["n"] == 0 and row["n_patients"] == 0 and math.isnan(row["auc"])
        assert row["note"] == "not testable: no labelled images"
        assert table_heterogeneity(subgroup_metrics(frame, "malignancy", "site", n_boot=0))["k"] == 2
    elif case == "missing values":
        frame.loc[frame.index[0], "site"] = ""
        frame.loc[frame.index[1], "site"] = None
        frame.loc[frame.index[2], "site"] = np.nan
        table = subgroup_metrics(frame, "malignancy", "site", n_boot=0)
        assert list(table["group"]) == ["(all)", "A", "B", "(missing)"]
        assert table.set_index("group").loc["(missing)", "n"] == 3
    else:
        values = np.where(np.arange(len(frame)) % 3 == 0, 10.0, 2.0)
        table = subgroup_metrics(frame, "malignancy", values, n_boot=0)
        assert list(table["group"]) == ["(all)", "2", "10"]  # numeric order, "2" not "2.0"


def test_a_missing_by_column_is_named():
    frame, _ = _small_frame()
    with pytest.raises(UsmtlError, match="No column 'scanner'.*Received columns: .*'site'"):
        subgroup_metrics(frame, "malignancy", "scanner")
    from usmtl.evaluation.evaluate import evaluate_predictions

    with pytest.raises(UsmtlError, match="No column 'scanner' .*--by.*Received columns"):
        evaluate_predictions(frame, n_boot=0, by=["site", "scanner"])
    with pytest.raises(UsmtlError, match="one per prediction row"):
        subgroup_metrics(frame, "malignancy", ["A", "B"])


def test_forest_plot_is_written(tmp_path):
    frame, _ = _small_frame()
    frame.loc[frame.index[:6], "site"] = "C"
    frame.loc[frame.index[:6], "y_malignancy"] = 0.0  # one class: listed as not testable
    table = subgroup_metrics(frame, "malignancy", "site", n_boot=20)
    path = plot_forest(table, "malignancy", "site", str(tmp_path / "forest.png"))
    assert path == str(tmp_path / "forest.png") and (tmp_path / "forest.png").stat().st_size > 1000


def _prediction_csv(tmp_path):
    """A small prediction CSV (two tasks, ALNM unknown on benign) and a manifest with a
    device column (one image without a device)."""
    from usmtl.evaluation.predictions import predictions_frame

    rng = np.random.default_rng(4)
    n = 60
    y = (np.arange(n) % 2).astype(float)
    probs = {"malignancy": np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1), "alnm": rng.random(n)}
    labels = {"malignancy": y, "alnm": np.where(y == 1, (np.arange(n) // 2) % 2, np.nan)}
    images = [f"img/i{k}.png" for k in range(n)]
    frame = predictions_frame(images, [f"p{k // 2}" for k in range(n)], ["test"] * n, probs,
                              labels, [("malignancy", "alnm")])
    frame.to_csv(tmp_path / "p.csv", index=False)
    device = np.where(np.arange(n) % 3 == 0, "GE", "Siemens").astype(object)
    device[5] = ""
    manifest = pd.DataFrame({"image": images[::-1], "patient_id": [f"p{k // 2}" for k in range(n)][::-1],
                             "device": device[::-1]})  # another order: matched by image
    manifest.to_csv(tmp_path / "m.csv", index=False)
    return tmp_path / "p.csv", tmp_path / "m.csv"


def test_evaluate_file_by_writes_the_new_files(tmp_path):
    from usmtl.evaluation.evaluate import evaluate_file

    predictions, manifest = _prediction_csv(tmp_path)
    out = tmp_path / "eval"
    report = evaluate_file(str(predictions), str(out), n_boot=20, by=["device"],
                           manifest=str(manifest))
    for name in ("metrics.json", "report.md", "calibration.csv", "operating_points.csv",
                 "decision_curve_malignancy.csv", "decision_curve_malignancy.png",
                 "decision_curve_alnm.csv", "reliability_malignancy.png", "reliability_alnm.png",
                 "subgroups_device.csv", "forest_device_malignancy.png", "forest_device_alnm.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    task = saved["tasks"]["malignancy"]
    assert set(task["calibration"]) == {"brier", "ece", "intercept", "slope"}
    assert task["operating_points"][0]["chosen_on"].startswith("test (optimistic")
    device = report["subgroups"]["device"]
    assert set(device) == {"malignancy", "alnm"}
    groups = [row["group"] for row in device["malignancy"]["table"]]
    assert groups == ["(all)", "GE", "Siemens", "(missing)"]
    assert set(device["malignancy"]["heterogeneity"]) >= {"q", "df", "p", "i2"}
    table = pd.read_csv(out / "subgroups_device.csv")
    assert set(table["task"]) == {"malignancy", "alnm"}
    # ALNM within its cohort: only the malignant images count
    assert table[(table["task"] == "alnm") & (table["kind"] == "overall")]["n"].item() == 30
    text = (out / "report.md").read_text()
    for heading in ("## Calibration", "## Operating points", "## Decision curves",
                    "## Subgroups by device"):
        assert heading in text
    assert "(forest_device_malignancy.png)" in text and "Heterogeneity" in text


def test_evaluate_by_on_the_command_line(tmp_path, monkeypatch):
    import usmtl.cli.startup
    from tests.conftest import invoke

    # no model: no TensorFlow
    monkeypatch.setattr(usmtl.cli.startup, "quiet_tensorflow", lambda: None)
    predictions, manifest = _prediction_csv(tmp_path)
    result = invoke("evaluate", predictions, "--bootstrap", 10, "--out", tmp_path / "a",
                    "--manifest", manifest, "--by", "device")
    assert result.exit_code == 0, result.output
    assert "subgroups by device, malignancy" in result.output
    assert (tmp_path / "a" / "subgroups_device.csv").is_file()
    missing = invoke("evaluate", predictions, "--bootstrap", 10, "--out", tmp_path / "b",
                     "--manifest", manifest, "--by", "scanner")
    assert missing.exit_code == 2 and "'scanner'" in missing.output
    assert "device" in missing.output  # the columns available
    assert not (tmp_path / "b").exists()  # nothing written


@pytest.mark.parametrize("problem", ["no manifest", "repeated image", "image not in manifest"])
def test_manifest_merge_refuses_clearly(tmp_path, problem):
    from usmtl.evaluation.evaluate import evaluate_file

    predictions, manifest = _prediction_csv(tmp_path)
    rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    if problem == "no manifest":
        manifest, match = None, "No column 'device' .*pass --manifest.*Received columns"
    elif problem == "repeated image":
        rows = pd.concat([rows, rows.iloc[[0]].assign(device="Philips")])
        rows.to_csv(manifest, index=False)
        match = "1 image\\(s\\) repeat with different device.*Received: e.g. \\['img/i59.png'\\]"
    else:
        rows.iloc[1:].to_csv(manifest, index=False)
        match = "1 image\\(s\\) of .* are not in .*Received: e.g. \\['img/i59.png'\\]"
    with pytest.raises(UsmtlError, match=match):
        evaluate_file(str(predictions), str(tmp_path / "o"), n_boot=0, by=["device"],
                      manifest=manifest and str(manifest))
    # an image listed twice with the same device is no ambiguity
    if problem == "repeated image":
        rows = pd.concat([rows.iloc[:-1], rows.iloc[[1]]])
        rows.to_csv(manifest, index=False)
        evaluate_file(str(predictions), str(tmp_path / "o"), n_boot=0, by=["device"],
                      manifest=str(manifest))


def test_run_rows_must_match_the_predictions():
    from usmtl.evaluation.by_columns import add_manifest_columns

    frame = pd.DataFrame({"image": ["a.png", "b.png"], "patient_id": ["1", "2"],
                          "p_m": [0.2, 0.8]})
    rows = pd.DataFrame({"image": ["a.png", "b.png"], "device": ["GE", ""]})
    added = add_manifest_columns(frame, ["device"], rows, "the test rows of m.csv")
    assert added["device"].tolist() == ["GE", ""] and "device" not in frame
    with pytest.raises(UsmtlError, match="2 predictions and the 1 rows .*differ in number"):
        add_manifest_columns(frame, ["device"], rows.iloc[:1], "the test rows of m.csv")
    with pytest.raises(UsmtlError, match="not in the same order .*'a.png' against 'b.png'"):
        add_manifest_columns(frame, ["device"], rows.iloc[::-1], "the test rows of m.csv")
    with pytest.raises(UsmtlError, match="No column 'site' in the predictions or in the test rows"):
        add_manifest_columns(frame, ["site"], rows, "the test rows of m.csv")


def _fake_run(tmp_path, n_patients=40):
    """A run directory without a model: config, split, and the cached test and validation
    predictions that evaluate reads (rows in the manifest's order, as predict writes them)."""
    from tests.conftest import PAPER_TASKS, tiny_config_dict
    from usmtl.config import config_from_dict
    from usmtl.evaluation.predictions import predictions_frame
    from usmtl.run import Run

    rng = np.random.default_rng(5)
    rows = []
    for k in range(n_patients):
        for image in range(2):
            malignant = k % 2
            rows.append({"image": f"img/p{k}_{image}.png", "patient_id": f"p{k}",
                         "malignant": str(malignant), "alnm": str((k // 2) % 2) if malignant else "",
                         "x_min": 0, "y_min": 0, "x_max": 10, "y_max": 10,
                         "device": ["GE", "Siemens", ""][k % 3]})
    manifest = pd.DataFrame(rows)
    manifest.to_csv(tmp_path / "m.csv", index=False)
    split = {f"p{k}": ("test" if k < 24 else "val" if k < 32 else "train") for k in range(n_patients)}
    cfg = config_from_dict(tiny_config_dict(tasks=PAPER_TASKS[:2]))
    run = Run.create(str(tmp_path / "run"), cfg, str(tmp_path / "m.csv"), split)
    for name in ("test", "val"):
        part = manifest[manifest["patient_id"].map(split) == name]
        y = part["malignant"].astype(float).to_numpy()
        alnm = pd.to_numeric(part["alnm"], errors="coerce").to_numpy()
        probs = {"malignancy": np.clip(0.4 * y + 0.6 * rng.random(len(part)), 0, 1),
                 "alnm": rng.random(len(part))}
        frame = predictions_frame(part["image"], part["patient_id"], [name] * len(part), probs,
                                  {"malignancy": y, "alnm": alnm}, [("malignancy", "alnm")])
        frame.to_csv(run.predictions_path(name), index=False)
        run.write_predictions_stamp(name)  # as evaluate does: the cache is of this manifest
    return run


def test_evaluate_run_reads_by_from_the_manifest_rows_of_the_split(tmp_path):
    from usmtl.evaluation.evaluate import evaluate_run

    run = _fake_run(tmp_path)
    report = evaluate_run(run.path, n_boot=10, by=["device"])
    table = pd.DataFrame(report["subgroups"]["device"]["malignancy"]["table"])
    # test patients p0..p23, two images each: devices cycle GE, Siemens, (missing)
    assert table.set_index("group")["n"].to_dict() == {"(all)": 48, "GE": 16, "Siemens": 16,
                                                       "(missing)": 16}
    assert report["tasks"]["malignancy"]["operating_points"][0]["chosen_on"] == "validation"
    assert (tmp_path / "run" / "subgroups_device.csv").is_file()
    cached = pd.read_csv(run.predictions_path("test"))
    assert "device" not in cached  # the cache stays the model's predictions
    # a stale cache (another order than the manifest's rows) is refused, not mismatched
    cached.iloc[::-1].to_csv(run.predictions_path("test"), index=False)
    with pytest.raises(UsmtlError, match="not in the same order"):
        evaluate_run(run.path, n_boot=0, by=["device"])
    with pytest.raises(UsmtlError, match="No column 'scanner' in the predictions or in the test "
                                         "rows.*Received columns: .*manifest .*'device'"):
        evaluate_run(run.path, n_boot=0, by=["scanner"])
