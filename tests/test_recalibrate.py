"""usmtl calibrate: Platt and temperature recalibration, checked against scikit-learn and a
direct likelihood search, and applied wherever a run's scores are read."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke
from usmtl.errors import UsmtlError
from usmtl.evaluation import calibration_maps


def _sample(n=3000, slope=0.5, intercept=-0.4, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    truth = 1 / (1 + np.exp(-(intercept + slope * calibration_maps.logit(p))))
    return (rng.uniform(size=n) < truth).astype(float), p


def test_platt_matches_scikit_learn_unpenalised_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    y, p = _sample()
    fitted = calibration_maps.fit_task(y, p, "platt")
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(
        calibration_maps.logit(p)[:, None], y)
    assert fitted["a"] == pytest.approx(reference.coef_[0, 0], abs=1e-5)
    assert fitted["b"] == pytest.approx(reference.intercept_[0], abs=1e-5)
    assert np.allclose(calibration_maps.apply_task(fitted, p), reference.predict_proba(
        calibration_maps.logit(p)[:, None])[:, 1], atol=1e-6)


def test_temperature_is_the_likelihood_minimum_over_a_grid():
    y, p = _sample(intercept=0.0)
    t = calibration_maps.fit_task(y, p, "temperature")["temperature"]
    z = calibration_maps.logit(p)

    def nll(temp):
        q = 1 / (1 + np.exp(-z / temp))
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    grid = np.linspace(0.5, 4, 3501)
    assert t == pytest.approx(grid[np.argmin([nll(g) for g in grid])], abs=2e-3)
    assert t > 1  # the sample is over-confident (slope 0.5): T about 2


def test_recalibration_keeps_the_ranking_and_nan():
    y, p = _sample(n=200)
    p[3] = np.nan
    for method in calibration_maps.METHODS:
        q = calibration_maps.apply_task(calibration_maps.fit_task(y, p, method), p)
        assert np.isnan(q[3])
        known = ~np.isnan(p)
        assert (np.argsort(q[known], kind="stable") == np.argsort(p[known], kind="stable")).all()


@pytest.mark.parametrize("y,why", [([1, 1, 1, 1, 0], "2 labelled positives and 2 negatives"),
                                   ([np.nan] * 5, "0 labels"),
                                   ([1, 0, 1, np.nan, np.nan], "2 labelled positives")])
def test_too_few_labels_is_a_clear_error(y, why):
    with pytest.raises(UsmtlError, match=why):
        calibration_maps.fit_task(np.array(y, float), np.linspace(0.1, 0.9, 5), "platt")


def test_unknown_method_is_named():
    with pytest.raises(UsmtlError, match="Received: 'isotonic'"):
        calibration_maps.fit_task([0, 1, 0, 1], [0.1, 0.8, 0.3, 0.7], "isotonic")


def test_apply_calibration_keeps_raw_scores_and_recomputes_violations():
    frame = pd.DataFrame({"image": ["a", "b"], "patient_id": ["1", "2"], "split": ["test"] * 2,
                          "p_malignancy": [0.45, 0.9], "p_alnm": [0.55, 0.2],
                          "hierarchy_violation": [1, 0], "violated_edges": ["malignancy>alnm", ""],
                          "hierarchy_excess": [0.1, -0.7]})
    calibration = {"method": "platt", "fitted_on": "val",
                   "tasks": {"malignancy": {"a": 1.0, "b": 2.0}}}
    out = calibration_maps.apply_calibration(frame, calibration, [("malignancy", "alnm")])
    assert list(out["raw_malignancy"]) == [0.45, 0.9]
    assert out["p_malignancy"].iloc[0] > 0.5  # shifted up by b = 2 on the logit scale
    # Only the parent is calibrated: the edge is checked on both raw scores (issue 23: a
    # calibrated parent against a raw child measures the calibration, not the model).
    assert list(out["hierarchy_violation"]) == [1, 0]
    assert calibration_maps.apply_calibration(out, calibration) is out  # never twice
    both = {**calibration, "tasks": {"malignancy": {"a": 1.0, "b": 2.0},
                                     "alnm": {"a": 1.0, "b": 0.0}}}
    out = calibration_maps.apply_calibration(frame, both, [("malignancy", "alnm")])
    assert list(out["hierarchy_violation"]) == [0, 0]  # both calibrated: on calibrated scores


@pytest.mark.slow
def test_calibrate_command_stores_and_every_reader_applies_it(trained_run, phantoms, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = invoke("calibrate", run, "--method", "platt")
    assert result.exit_code == 0, result.output
    assert "->" in result.output and "in-sample" in result.output
    stored = json.loads((run / "calibration.json").read_text())
    assert stored["method"] == "platt" and "malignancy" in stored["tasks"]

    result = invoke("predict", run, phantoms, "--split", "test", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "calibrated (platt, fitted on the val split" in result.output
    calibrated = pd.read_csv(tmp_path / "p.csv")
    params = stored["tasks"]["malignancy"]
    assert np.allclose(calibrated["p_malignancy"],
                       calibration_maps.apply_task(params, calibrated["raw_malignancy"]), atol=1e-9)

    invoke("predict", run, phantoms, "--split", "test", "--uncalibrated", "--out", tmp_path / "r.csv")
    raw = pd.read_csv(tmp_path / "r.csv")
    assert "raw_malignancy" not in raw and np.allclose(raw["p_malignancy"], calibrated["raw_malignancy"])

    # the cache holds raw scores; evaluate reads them calibrated
    from usmtl.evaluation.run_scores import run_predictions

    cached = pd.read_csv(run / "test_predictions.csv")
    assert "raw_malignancy" not in cached
    assert np.allclose(run_predictions(str(run))["p_malignancy"], calibrated["p_malignancy"])

    assert invoke("calibrate", run, "--remove").exit_code == 0
    assert not (run / "calibration.json").exists()


def test_a_head_that_does_not_rank_is_not_inverted():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.1, 0.9, 400)
    y = (rng.uniform(size=400) < 0.9 - 0.3 * p).astype(float)  # higher score, fewer positives
    with pytest.raises(UsmtlError, match="slope is -.*would invert"):
        calibration_maps.fit_task(y, p, "platt")


@pytest.mark.slow
def test_an_export_carries_the_calibration_and_predict_on_it_applies_it(trained_run, phantoms,
                                                                        tmp_path):
    from usmtl.export import export
    from usmtl.predict import predict

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert invoke("calibrate", run, "--method", "temperature").exit_code == 0
    said = []
    result = export(str(run), "savedmodel", str(tmp_path / "exports"), manifest=str(phantoms),
                    images=3, calibration_images=1, latency_runs=1, log=said.append)
    assert result.passed
    assert any("the exported graph returns the heads' raw scores" in line for line in said)
    meta = json.loads((tmp_path / result.sidecar / "usmtl_export.json").read_text())
    assert meta["calibration_in_graph"] is False
    assert meta["calibration"] == json.loads((run / "calibration.json").read_text())
    from_export = predict(result.path, str(phantoms), split="test")
    from_run = predict(str(run), str(phantoms), split="test")
    assert np.allclose(from_export["p_malignancy"], from_run["p_malignancy"], atol=1e-5)
    assert np.allclose(from_export["raw_malignancy"], from_run["raw_malignancy"], atol=1e-5)
