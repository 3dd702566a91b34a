"""Cross-validation on patient folds (usmtl experiment --folds/--cv): the fold tables, each
fold's split, and the out-of-fold predictions of every scored model."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PAPER_TASKS, invoke, tiny_config_dict
from usmtl.data.folds import fold_split, folds_from_file, folds_from_rows, make_folds, resolve_folds
from usmtl.errors import ManifestError, UsmtlError


def _manifest(phantoms):
    from usmtl.data.manifest import read_manifest

    return read_manifest(str(phantoms))


# -- fold tables -------------------------------------------------------------------------


def test_make_folds_are_balanced_stratified_and_seeded():
    pids = np.array([f"p{i}" for i in range(50)])
    labels = np.array([1.0] * 20 + [0.0] * 30)
    folds = make_folds(pids, labels, k=5, seed=3)
    assert sorted(set(folds.values())) == ["1", "2", "3", "4", "5"]
    sizes = pd.Series(folds).value_counts()
    assert sizes.min() == sizes.max() == 10
    positives = pd.Series({p: folds[p] for p in pids[:20]}).value_counts()
    assert positives.min() == positives.max() == 4  # every fold 4 of the 20 positives
    assert make_folds(pids, labels, k=5, seed=3) == folds
    assert make_folds(pids, labels, k=5, seed=4) != folds


@pytest.mark.parametrize("k", [1, 0, 2.5, 11])
def test_make_folds_refuses_bad_k(k):
    with pytest.raises(UsmtlError, match="--cv"):
        make_folds([f"p{i}" for i in range(10)], [1.0, 0.0] * 5, k=k)


@pytest.mark.parametrize("values, message", [
    (["1", "", "2"], "line 2: no fold"),
    (["1", "2", "2"], "patient 'a' is in fold '2' here and '1'"),
    ([float("nan"), "1", "2"], "line 1: no fold"),
])
def test_folds_from_rows_names_the_bad_row(values, message):
    with pytest.raises(ManifestError) as info:
        folds_from_rows(["a", "a", "b"], values, lambda i: f"m.csv line {i + 1}", "m.csv")
    assert message in str(info.value)


def test_one_fold_is_refused():
    with pytest.raises(UsmtlError, match="at least 2 folds"):
        folds_from_rows(["a", "b"], ["1", "1"], str, "m.csv")


def test_numeric_folds_read_as_floats_are_the_same_fold():
    folds = folds_from_rows(["a", "b", "c"], [3.0, "3", 1], str, "m.csv")
    assert folds == {"a": "3", "b": "3", "c": "1"}


def test_folds_file_by_patient_or_image(phantoms, tmp_path):
    manifest = _manifest(phantoms)
    pids = sorted(set(manifest.patient_ids()))
    by_patient = tmp_path / "folds.csv"
    pd.DataFrame({"patient_id": pids, "fold": [i % 3 + 1 for i in range(len(pids))]}).to_csv(by_patient, index=False)
    folds = folds_from_file(str(by_patient), manifest)
    assert set(folds) == set(pids) and sorted(set(folds.values())) == ["1", "2", "3"]
    by_image = tmp_path / "images.csv"
    frame = manifest.frame[["image"]].assign(fold=[folds[p] for p in manifest.patient_ids()])
    frame.to_csv(by_image, index=False)
    assert folds_from_file(str(by_image), manifest) == folds
    frame.iloc[1:].to_csv(by_image, index=False)
    with pytest.raises(ManifestError, match="no fold for 1 row"):
        folds_from_file(str(by_image), manifest)
    (tmp_path / "bad.csv").write_text("patient,group\na,1\n")
    with pytest.raises(ManifestError, match="patient_id,fold or image,fold"):
        folds_from_file(str(tmp_path / "bad.csv"), manifest)


def test_resolve_folds_needs_exactly_one_source(phantoms):
    manifest = _manifest(phantoms)
    for folds, cv in ((None, None), ("fold", 3)):
        with pytest.raises(UsmtlError, match="one of --folds"):
            resolve_folds(manifest, folds, cv, np.zeros(len(manifest)), 0)
    with pytest.raises(UsmtlError, match="neither a column"):
        resolve_folds(manifest, "no_such_column", None, np.zeros(len(manifest)), 0)


def test_fold_split_tests_the_fold_and_validates_on_the_rest():
    folds = {f"p{i}": str(i % 4 + 1) for i in range(40)}
    strata = {p: float(i % 2) for i, p in enumerate(folds)}
    seen = set()
    for fold in "1234":
        split = fold_split(folds, fold, strata, val_fraction=0.2, seed=0)
        test = {p for p, s in split.items() if s == "test"}
        assert test == {p for p, f in folds.items() if f == fold}
        assert sum(s == "val" for s in split.values()) == 6  # 20% of the 30 others
        seen |= test
    assert seen == set(folds)  # every patient tested once
    with pytest.raises(UsmtlError, match="No fold '9'"):
        fold_split(folds, "9", strata, 0.2)


# -- a cross-validation on the phantoms ---------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """30 phantom patients: enough for two folds with both classes of every task."""
    from usmtl.data.phantoms import make_phantoms

    out = tmp_path_factory.mktemp("cv_phantoms")
    make_phantoms(str(out), n_patients=30, size=64, seed=2, progress=False)
    return out / "manifest.csv"


@pytest.fixture(scope="module")
def cv_run(small, tmp_path_factory):
    """Multi-Task + HL, 2 drawn folds x 2 repeats, 1 epoch each, scored with flip TTA."""
    from usmtl.config import config_from_dict
    from usmtl.crossval import run_cv

    out = tmp_path_factory.mktemp("cv") / "exp"
    tasks = [dict(t) for t in PAPER_TASKS]
    tasks[2]["display_name"] = "Nodal burden >= 2"  # cv.md's heading for aln_ge_2
    cfg = config_from_dict(tiny_config_dict(tasks=tasks, train={"epochs": 1}))
    result = run_cv(cfg, str(small), str(out), cv=2, repeats=2, variants=["multitask-hl"],
                    tta="flip", n_boot=50)
    return out, result, cfg


def test_out_of_fold_predictions_cover_every_row_exactly_once(cv_run, small):
    _, result, _ = cv_run
    manifest = pd.read_csv(small)
    oof = result["oof"]
    models = oof.groupby(["variant", "model", "tta"])
    assert len(models) == 6  # repeat-1, repeat-2, ensemble-2; each without and with flip
    for _, rows in models:
        assert sorted(rows["image"]) == sorted(manifest["image"])


def test_each_fold_tests_its_own_patients(cv_run):
    out, result, _ = cv_run
    folds = pd.read_csv(out / "folds.csv", dtype=str)
    oof = result["oof"]
    merged = oof.merge(folds, on="patient_id", suffixes=("", "_table"))
    assert (merged["fold"].astype(str) == merged["fold_table"]).all()


def test_the_ensemble_is_the_mean_of_the_repeats(cv_run):
    _, result, _ = cv_run
    oof = result["oof"]
    pick = lambda model: oof[(oof["model"] == model) & (oof["tta"] == "none")].sort_values("image")
    a, b, ens = pick("repeat-1"), pick("repeat-2"), pick("ensemble-2")
    np.testing.assert_allclose(ens["p_malignancy"].to_numpy(),
                               (a["p_malignancy"].to_numpy() + b["p_malignancy"].to_numpy()) / 2)


def test_pooled_auc_is_the_auc_of_the_out_of_fold_rows(cv_run):
    from usmtl.evaluation.metrics import roc_auc

    _, result, _ = cv_run
    oof, summary = result["oof"], result["summary"]
    row = summary[(summary["model"] == "repeat-1") & (summary["tta"] == "flip")
                  & (summary["task"] == "malignancy") & (summary["metric"] == "auc")].iloc[0]
    rows = oof[(oof["model"] == "repeat-1") & (oof["tta"] == "flip")]
    assert row["pooled"] == pytest.approx(roc_auc(rows["y_malignancy"], rows["p_malignancy"]))
    assert row["folds"] == 2 and row["pooled_low"] <= row["pooled"] <= row["pooled_high"]
    folds = result["folds"]
    per_fold = folds[(folds["model"] == "repeat-1") & (folds["tta"] == "flip")
                     & (folds["task"] == "malignancy") & (folds["metric"] == "auc")]["value"]
    assert row["mean"] == pytest.approx(per_fold.mean())
    # the child is scored within its cohort, as in a single run
    child = oof[(oof["model"] == "repeat-1") & (oof["tta"] == "none")]
    assert child["y_alnm"].notna().sum() < len(child)


def test_cv_markdown_and_rerun_reuses_every_run(cv_run, small, capsys):
    from usmtl.crossval import run_cv

    out, result, cfg = cv_run
    text = (out / "cv.md").read_text()
    assert "| multitask-hl | ensemble-2 | flip |" in text and "fold 2" in text
    # headings by display name: the config's, else derived; the CSV keeps the task names
    assert "## Nodal burden >= 2 (n = " in text and "## Malignancy (n = " in text
    assert "## ALNM (n = " in text and "## aln_ge_2" not in text
    summary = pd.read_csv(out / "cv_summary.csv")
    assert dict(zip(summary["task"], summary["display_name"])) == {
        "malignancy": "Malignancy", "alnm": "ALNM", "aln_ge_2": "Nodal burden >= 2"}
    again = run_cv(cfg, str(small), str(out), cv=2, repeats=2, variants=["multitask-hl"],
                   tta="flip", n_boot=50)
    assert capsys.readouterr().out.count("reused") == 4
    run = out / "runs" / "multitask-hl" / "fold-1" / "repeat-1"
    assert (run / "test-tta-flip_predictions.csv").is_file()  # the flipped scores are cached
    pd.testing.assert_frame_equal(again["summary"], result["summary"])


def test_other_folds_in_the_same_directory_are_refused(cv_run, small):
    from usmtl.crossval import run_cv

    out, _, cfg = cv_run
    with pytest.raises(UsmtlError, match="other folds"):
        run_cv(cfg, str(small), str(out), cv=3, repeats=2, variants=["multitask-hl"])


@pytest.mark.parametrize("args, message", [
    (["--cv", "2", "--protocol", "burden"], "take none of"),
    (["--cv", "2", "--paper"], "take none of"),
    (["--tta", "flip"], "cross-validation"),
])
def test_experiment_cli_refuses_mixed_options(phantoms, tmp_path, args, message):
    from tests.conftest import write_config

    config = write_config(tmp_path / "c.yaml")
    result = invoke("experiment", "--config", config, "--manifest", phantoms, "--out",
                    tmp_path / "e", *args)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "e" / "runs").exists()
