"""Issue 23: evaluation inputs that used to give an exit 0 with a wrong result (items 2, 5,
7, 9 and 10), one case per row. Each case names its outcome class and the key words its
message must hold:

- ``refused``: exit 2, an ``Error:`` naming the input, no traceback;
- ``scored``: exit 0, and the output says what was scored (the figures are checked too);
- ``warned``: exit 0 with a warning that says what was done.

The CLI runs in-process with ``catch_exceptions=False``: a traceback fails the case. A
shared trained run (``trained_run``) is copied before a case changes it.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke, tiny_config_dict


def copy_run(trained_run, tmp_path, manifest=None):
    """A copy of the shared run; with ``manifest``, its run.json names that manifest."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    if manifest is not None:
        info = json.loads((run / "run.json").read_text())
        info["manifest"] = str(manifest)
        (run / "run.json").write_text(json.dumps(info))
    return run


def manifest_copy(phantoms, path):
    """The phantoms' manifest with absolute paths, at ``path`` (the original is shared)."""
    frame = pd.read_csv(phantoms, dtype=str, keep_default_na=False)
    for column in ("image", "annotation"):
        frame[column] = [str(phantoms.parent / p) for p in frame[column]]
    frame.to_csv(path, index=False)
    return frame


def predictions_csv(trained_run, phantoms, tmp_path):
    """Predictions of every manifest row (split column: train, val, test)."""
    out = tmp_path / "all.csv"
    result = invoke("predict", trained_run, phantoms, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# ---- the cases: each returns (exit code, output, what the figures must show or None) ----


def split_honoured(trained_run, phantoms, tmp_path):
    source = predictions_csv(trained_run, phantoms, tmp_path)
    frame = pd.read_csv(source)
    n_test = int((frame["split"] == "test").sum())
    assert 0 < n_test < len(frame)
    result = invoke("evaluate", source, "--split", "test", "--bootstrap", 10,
                    "--out", tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    figures_ok = metrics["tasks"]["malignancy"]["n"] == n_test
    return result, [f"Scored {n_test} rows", f"split test ({n_test} of its {len(frame)} rows)"], figures_ok


def split_without_column(trained_run, phantoms, tmp_path):
    source = predictions_csv(trained_run, phantoms, tmp_path)
    pd.read_csv(source).drop(columns=["split"]).to_csv(tmp_path / "nosplit.csv", index=False)
    result = invoke("evaluate", tmp_path / "nosplit.csv", "--split", "test", "--bootstrap", 10)
    return result, ["nosplit.csv", "no 'split' column", "--split test", "Received"], \
        not (tmp_path / "nosplit-eval").exists()


def split_absent(trained_run, phantoms, tmp_path):
    source = predictions_csv(trained_run, phantoms, tmp_path)
    frame = pd.read_csv(source)
    frame[frame["split"] == "test"].to_csv(tmp_path / "test_only.csv", index=False)
    result = invoke("evaluate", tmp_path / "test_only.csv", "--split", "train", "--bootstrap", 10)
    return result, ["No row of", "test_only.csv", "split 'train'", "Received"], True


def all_rows_said(trained_run, phantoms, tmp_path):
    source = predictions_csv(trained_run, phantoms, tmp_path)
    n = len(pd.read_csv(source))
    result = invoke("evaluate", source, "--bootstrap", 10, "--out", tmp_path / "eval")
    return result, [f"Scored {n} rows", "every row"], True


def stale_cache_redone(trained_run, phantoms, tmp_path):
    manifest = tmp_path / "manifest.csv"
    frame = manifest_copy(phantoms, manifest)
    run = copy_run(trained_run, tmp_path, manifest)
    first = invoke("evaluate", run, "--bootstrap", 10)
    assert first.exit_code == 0, first.output
    before = pd.read_csv(run / "test_predictions.csv")["y_malignancy"].sum()
    benign = frame["malignant"] == "0"  # relabel benign masses malignant (no ALN involvement)
    frame.loc[benign, ["malignant", "alnm", "aln_count"]] = ["1", "0", "0"]
    frame.to_csv(manifest, index=False)
    result = invoke("evaluate", run, "--bootstrap", 10)
    after = pd.read_csv(run / "test_predictions.csv")
    positives = json.loads((run / "metrics.json").read_text())["tasks"]["malignancy"]["positives"]
    return result, ["predicting the test split again", "manifest changed"], \
        after["y_malignancy"].sum() > before and positives == len(after)


def run_out_honoured(trained_run, phantoms, tmp_path):
    run = copy_run(trained_run, tmp_path)
    result = invoke("evaluate", run, "--bootstrap", 10, "--out", tmp_path / "elsewhere")
    return result, [str(tmp_path / "elsewhere" / "report.md")], \
        (tmp_path / "elsewhere" / "metrics.json").is_file() and not (run / "metrics.json").exists()


def other_manifest_ids_coincide(trained_run, phantoms, tmp_path):
    """Another cohort whose patient ids are the run's (P0001...): not the run's test split."""
    from usmtl.data.phantoms import make_phantoms

    make_phantoms(str(tmp_path / "other"), n_patients=80, size=64, seed=9, progress=False)
    result = invoke("evaluate", trained_run, "--manifest", tmp_path / "other" / "manifest.csv",
                    "--bootstrap", 10)
    return result, ["only coincide", "rows have a patient id in the run's test split",
                    "usmtl validate", "Received"], True


def calibrated_stated(trained_run, phantoms, tmp_path):
    run = copy_run(trained_run, tmp_path)
    assert invoke("calibrate", run).exit_code == 0
    result = invoke("evaluate", run, "--bootstrap", 10)
    report = (run / "report.md").read_text()
    return result, ["Scores: calibrated (platt, fitted on the val split) for malignancy"], \
        "Scores: calibrated" in report


def compare_calibrated_with_raw(trained_run, phantoms, tmp_path):
    run = copy_run(trained_run, tmp_path)
    assert invoke("calibrate", run).exit_code == 0
    result = invoke("compare", run, trained_run)
    return result, ["WARNING: malignancy", "is calibrated", "is raw", "McNemar",
                    "Scores of"], True


def hierarchy_one_scale(trained_run, phantoms, tmp_path):
    """A calibration that covers the parent only: the edge is checked on raw scores."""
    run = copy_run(trained_run, tmp_path)
    assert invoke("calibrate", run).exit_code == 0
    calibration = json.loads((run / "calibration.json").read_text())
    calibration["tasks"] = {"malignancy": calibration["tasks"]["malignancy"]}
    (run / "calibration.json").write_text(json.dumps(calibration))
    result = invoke("evaluate", run, "--bootstrap", 10)
    rates = json.loads((run / "metrics.json").read_text())["inconsistency"]["malignancy>alnm"]
    raw = pd.read_csv(run / "test_predictions.csv")
    expected = np.mean((raw["p_alnm"] >= 0.5) & (raw["p_malignancy"] < 0.5))
    return result, ["Hierarchy malignancy>alnm: only malignancy is calibrated",
                    "raw scores of both"], abs(rates["hard"] - expected) < 1e-9


def no_validation_images(trained_run, phantoms, tmp_path):
    """A split without val patients and checkpoint best: fit says what it keeps."""
    import yaml

    manifest = tmp_path / "manifest.csv"
    frame = manifest_copy(phantoms, manifest)
    patients = sorted(set(frame["patient_id"]))
    split = pd.DataFrame({"patient_id": patients,
                          "split": ["test" if i % 5 == 0 else "train" for i in range(len(patients))]})
    split.to_csv(tmp_path / "split.csv", index=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(train={"epochs": 1, "checkpoint": "best"})))
    result = invoke("fit", "--config", config, "--manifest", manifest, "--split-file",
                    tmp_path / "split.csv", "--out", tmp_path / "run")
    best = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())
    return result, ["no validation images", "checkpoint=best", "last epoch's"], \
        best.get("why") == "no validation images" and best["checkpoint"] == "last"


CASES = [
    ("evaluate PRED.csv --split test", "scored", split_honoured),
    ("evaluate PRED.csv without a split column --split test", "refused", split_without_column),
    ("evaluate PRED.csv --split train with no train row", "refused", split_absent),
    ("evaluate PRED.csv without --split says every row", "scored", all_rows_said),
    ("evaluate RUN after its manifest's labels changed", "scored", stale_cache_redone),
    ("evaluate RUN --out DIR", "scored", run_out_honoured),
    ("evaluate RUN --manifest other cohort with the same patient ids", "refused",
     other_manifest_ids_coincide),
    ("evaluate RUN after calibrate", "scored", calibrated_stated),
    ("compare calibrated RUN with raw RUN", "warned", compare_calibrated_with_raw),
    ("hierarchy with a calibrated parent and a raw child", "warned", hierarchy_one_scale),
    ("fit with no validation image and checkpoint best", "warned", no_validation_images),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,outcome,case", CASES, ids=[c[0] for c in CASES])
def test_bad_evaluation_input(name, outcome, case, trained_run, phantoms, tmp_path):
    result, words, figures_ok = case(trained_run, phantoms, tmp_path)
    output = result.output
    assert "Traceback" not in output, output
    if outcome == "refused":
        assert result.exit_code == 2, output
        assert "Error:" in output, output
    else:
        assert result.exit_code == 0, output
    if outcome == "warned":
        assert "warning" in output.lower() or "only" in output, output
    for word in words:
        assert word in output, f"{word!r} not in:\n{output}"
    assert figures_ok, output


def test_stale_cache_of_a_run_without_a_model_is_refused(tmp_path):
    """A cached prediction file is stamped with the manifest's hash; when the manifest
    changed and there is no model to predict again (a radiomics run), evaluate refuses."""
    from usmtl.config import config_from_dict
    from usmtl.errors import UsmtlError
    from usmtl.evaluation.run_scores import run_predictions
    from usmtl.run import Run

    manifest = tmp_path / "m.csv"
    manifest.write_text("image,patient_id,malignant\na.png,p1,1\nb.png,p2,0\n")
    run = Run.create(str(tmp_path / "run"), config_from_dict(tiny_config_dict()), str(manifest),
                     {"p1": "test", "p2": "test"})
    pd.DataFrame({"image": ["a.png", "b.png"], "patient_id": ["p1", "p2"], "split": ["test"] * 2,
                  "p_malignancy": [0.8, 0.3], "y_malignancy": [1.0, 0.0]}).to_csv(
        run.predictions_path("test"), index=False)
    assert "does not record" in run.stale_predictions("test")
    run.write_predictions_stamp("test")
    assert run.stale_predictions("test") is None
    assert list(run_predictions(run.path, None, "test")["p_malignancy"]) == [0.8, 0.3]
    manifest.write_text("image,patient_id,malignant\na.png,p1,0\nb.png,p2,0\n")
    assert "manifest changed" in run.stale_predictions("test")
    with pytest.raises(UsmtlError, match=r"cannot be reused \(the run's manifest changed.*"
                                         r"holds no checkpoints/best.keras.*Received: "):
        run_predictions(run.path, None, "test")
