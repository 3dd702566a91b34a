"""Fail safe (issue 13): no pickle from a user-supplied folder, labels carried by
'radiomics predict', no empty success from 'evaluate' and 'compare' on unlabelled tasks, and
all-zero Grad-CAM maps said in words, not drawn as blank heatmaps. No GPU, no training."""

import json
import os
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke, tiny_config_dict
from usmtl.errors import UsmtlError

# ---------------------------------------------------------------------------------------
# Radiomics: a real fit on synthetic features (Boruta and skops, not PyRadiomics)
# ---------------------------------------------------------------------------------------


def _features(manifest_path, out):
    """A feature file for every manifest row: a noisy copy of the malignancy label and noise,
    with a sidecar naming the manifest, as 'usmtl radiomics extract' writes it."""
    from usmtl.data.manifest import read_manifest

    manifest = read_manifest(str(manifest_path))
    y = manifest.frame["malignant"].astype(float).to_numpy()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"row": range(len(y)), "image": manifest.frame["image"],
                          "patient_id": manifest.patient_ids(), "cache_key": "k"})
    frame["original_firstorder_Signal"] = y + rng.normal(0, 0.5, len(y))
    for k in range(4):
        frame[f"original_glcm_Noise{k}"] = rng.normal(size=len(y))
    frame.to_csv(out, index=False)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump({"manifest": str(manifest_path)}, f)
    return str(out)


@pytest.fixture(scope="module")
def radiomics_fit(phantoms, tmp_path_factory):
    pytest.importorskip("boruta", reason="the radiomics extra is not installed")
    pytest.importorskip("skops", reason="the radiomics extra is not installed")
    from usmtl.config import config_from_dict
    from usmtl.radiomics.model import RadiomicsModelSettings, fit_radiomics

    folder = tmp_path_factory.mktemp("failsafe_radiomics")
    features = _features(phantoms, folder / "features.csv")
    out = folder / "fit"
    fit_radiomics(features, str(out), config_from_dict(tiny_config_dict()),
                  settings=RadiomicsModelSettings(boruta_iterations=10, trees=20))
    return out, features


def _copy_fit(fit, destination, without=("models.skops",)):
    """A copy of a fit folder, less the files ``without``."""
    shutil.copytree(fit, destination)
    for name in without:
        os.remove(destination / name)
    return destination


class _WritesMarker:
    """Unpickling this creates ``path``: what a crafted models.joblib could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_fit_saves_skops_with_only_random_forest_types(radiomics_fit):
    from usmtl.radiomics.model import ALLOWED_TYPES, load_models, skops_types

    fit, _ = radiomics_fit
    assert (fit / "models.skops").is_file() and not (fit / "models.joblib").exists()
    assert skops_types(str(fit / "models.skops")) <= ALLOWED_TYPES
    summary = json.loads((fit / "radiomics.json").read_text())
    assert summary["models"] == "models.skops"
    models = load_models(str(fit / "models.skops"),
                         {t: s["selected"] for t, s in summary["tasks"].items()})
    assert set(models) == set(summary["tasks"])


def test_crafted_models_joblib_is_never_unpickled(radiomics_fit, tmp_path):
    import joblib

    fit, features = radiomics_fit
    # The payload works: loading it the old way creates its marker.
    control = tmp_path / "CONTROL"
    joblib.dump(_WritesMarker(control), tmp_path / "control.joblib")
    joblib.load(tmp_path / "control.joblib")
    assert control.exists()

    marker = tmp_path / "MARKER"
    old = _copy_fit(fit, tmp_path / "old")  # an older fit: side files and models.joblib only
    joblib.dump(_WritesMarker(marker), old / "models.joblib")
    result = invoke("radiomics", "predict", old, features)
    assert result.exit_code == 2, result.output
    assert not marker.exists()
    assert "models.joblib" in result.output and "not loaded" in result.output
    assert "usmtl radiomics fit" in result.output and f"--split-file {old}" in result.output

    # A folder that is not a fit at all, or whose side files are broken: refused before any
    # model file is looked at.
    bare = tmp_path / "bare"
    bare.mkdir()
    joblib.dump(_WritesMarker(marker), bare / "models.joblib")
    result = invoke("radiomics", "predict", bare, features)
    assert result.exit_code == 2 and "Not a folder of 'usmtl radiomics fit'" in result.output
    broken = _copy_fit(old, tmp_path / "broken", without=())
    (broken / "radiomics.json").write_text('{"tasks": "rm -rf"}')
    result = invoke("radiomics", "predict", broken, features)
    assert result.exit_code == 2 and "is not the summary of a radiomics fit" in result.output
    # A pickle under the skops name is not a skops file: refused, not unpickled.
    renamed = _copy_fit(fit, tmp_path / "renamed")
    with open(renamed / "models.skops", "wb") as f:
        pickle.dump(_WritesMarker(marker), f)
    with pytest.raises(UsmtlError, match="is not a skops file"):
        _predict(renamed, features)
    assert not marker.exists()


def _predict(fit, features, manifest=None):
    from usmtl.radiomics.model import predict_radiomics

    return predict_radiomics(str(fit), features, manifest)


def test_skops_file_with_a_type_outside_the_allow_list_is_refused(radiomics_fit, tmp_path):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from usmtl.radiomics.model import load_models

    fit, features = radiomics_fit
    models = load_models(str(fit / "models.skops"))
    name = next(iter(models))
    # A function (untrusted by skops too) and an estimator skops trusts by default but a
    # random-forest fit never holds: both refused, the types named, nothing loaded.
    cases = {"function": ({**models, name: {**models[name], "hook": os.system}}, "system"),
             "estimator": ({**models, name: {"features": models[name]["features"],
                                             "forest": LogisticRegression()}},
                           "sklearn.linear_model._logistic.LogisticRegression")}
    for case, (crafted, type_name) in cases.items():
        folder = _copy_fit(fit, tmp_path / case)
        sio.dump(crafted, folder / "models.skops")
        with pytest.raises(UsmtlError, match="is refused: it names types") as info:
            _predict(folder, features)
        assert type_name in str(info.value), case
        result = invoke("radiomics", "predict", folder, features)
        assert result.exit_code == 2 and type_name in result.output


def test_radiomics_predict_carries_the_cohort_restricted_labels(radiomics_fit, phantoms, tmp_path):
    fit, features = radiomics_fit
    frame = _predict(fit, features)
    fitted = pd.read_csv(fit / "predictions.csv").set_index("image")
    new = frame.set_index("image").loc[fitted.index]
    for task in ("malignancy", "alnm", "aln_ge_2"):
        np.testing.assert_array_equal(new[f"y_{task}"].to_numpy(float),
                                      fitted[f"y_{task}"].to_numpy(float))
    # ALNM is labelled within the malignant masses only, as for a CNN's predictions.
    manifest = pd.read_csv(phantoms, dtype=str, keep_default_na=False).set_index("image")
    benign = manifest.loc[frame["image"], "malignant"].to_numpy() == "0"
    assert benign.any() and frame.loc[benign, "y_alnm"].isna().all()
    assert frame.loc[~benign, "y_alnm"].notna().any()
    # Through the command line, the file 'usmtl evaluate' then scores.
    out = tmp_path / "new.csv"
    result = invoke("radiomics", "predict", fit, features, "--out", out)
    assert result.exit_code == 0, result.output
    assert {"y_malignancy", "y_alnm", "y_aln_ge_2"} <= set(pd.read_csv(out).columns)
    evaluated = invoke("evaluate", out, "--bootstrap", 20, "--out", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output
    # A manifest without the label columns: no labels, and the frame says why.
    unlabelled = pd.read_csv(phantoms, dtype=str, keep_default_na=False).drop(
        columns=["malignant", "alnm", "aln_count"])
    for column in ("image", "annotation"):
        unlabelled[column] = [str(phantoms.parent / p) for p in unlabelled[column]]
    unlabelled.to_csv(tmp_path / "unlabelled.csv", index=False)
    plain = _predict(fit, features, str(tmp_path / "unlabelled.csv"))
    assert not [c for c in plain.columns if c.startswith("y_")]
    assert "no label column" in plain.attrs["labels"]
    with pytest.raises(UsmtlError, match="Manifest not found"):
        _predict(fit, features, str(tmp_path / "missing.csv"))


# ---------------------------------------------------------------------------------------
# evaluate and compare: a task they are asked to score must have labels
# ---------------------------------------------------------------------------------------


def _prediction_file(path, labelled=("malignancy",), n=40, seed=0, shift=0.0):
    from usmtl.evaluation.predictions import predictions_frame

    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    probs = {"malignancy": np.clip(0.3 * y + rng.random(n) * 0.7 + shift, 0, 1),
             "alnm": rng.random(n)}
    labels = {"malignancy": y, "alnm": np.where(y == 1, rng.integers(0, 2, n), np.nan)}
    frame = predictions_frame([f"i{k}.png" for k in range(n)], [f"p{k}" for k in range(n)],
                              ["test"] * n, probs, {t: labels[t] for t in labelled},
                              [("malignancy", "alnm")])
    frame.to_csv(path, index=False)
    return path


def test_evaluate_refuses_a_task_without_labels_unless_asked_to_skip(tmp_path):
    from usmtl.evaluation.evaluate import evaluate_file

    path = _prediction_file(tmp_path / "p.csv", labelled=("malignancy",))
    with pytest.raises(UsmtlError, match="Task\\(s\\) alnm of .*p.csv have no labels") as info:
        evaluate_file(str(path), str(tmp_path / "a"), n_boot=20)
    assert "no y_alnm column" in str(info.value) and "--skip-unlabelled" in str(info.value)
    assert not (tmp_path / "a").exists()  # nothing written
    report = evaluate_file(str(path), str(tmp_path / "b"), n_boot=20, skip_unlabelled=True)
    assert list(report["tasks"]) == ["malignancy"]
    assert report["skipped_tasks"] == {"alnm": "no y_alnm column"}
    assert "## Tasks not scored" in (tmp_path / "b" / "report.md").read_text()
    # The command line: exit 2, the task named.
    result = invoke("evaluate", path, "--bootstrap", 20, "--out", tmp_path / "c")
    assert result.exit_code == 2 and "alnm" in result.output and "no labels" in result.output
    # A label column with no known label is no label either; no label at all is always an
    # error, skip or not.
    frame = pd.read_csv(path)
    frame["y_alnm"] = np.nan
    frame.to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(UsmtlError, match="y_alnm has no known label"):
        evaluate_file(str(tmp_path / "empty.csv"), str(tmp_path / "d"), n_boot=20)
    none = _prediction_file(tmp_path / "none.csv", labelled=())
    for skip in (False, True):
        with pytest.raises(UsmtlError, match="Nothing to evaluate: no task of .* has labels"):
            evaluate_file(str(none), str(tmp_path / "e"), n_boot=20, skip_unlabelled=skip)
    result = invoke("evaluate", none, "--out", tmp_path / "f")
    assert result.exit_code == 2 and "Nothing to evaluate" in result.output
    # The command line's --skip-unlabelled scores the rest and says what it skipped.
    result = invoke("evaluate", path, "--bootstrap", 20, "--out", tmp_path / "h", "--skip-unlabelled")
    assert result.exit_code == 0, result.output
    assert "skipped alnm: no y_alnm column" in result.output
    # Labelled everywhere: as before.
    full = _prediction_file(tmp_path / "full.csv", labelled=("malignancy", "alnm"))
    result = invoke("evaluate", full, "--bootstrap", 20, "--out", tmp_path / "g")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "g" / "metrics.json").read_text())["skipped_tasks"] == {}


def test_compare_needs_a_shared_labelled_task_and_names_the_unlabelled(tmp_path):
    from usmtl.evaluation.compare import compare

    a = _prediction_file(tmp_path / "a.csv", labelled=())
    b = _prediction_file(tmp_path / "b.csv", labelled=(), shift=0.1)
    result = invoke("compare", a, b)
    assert result.exit_code == 2, result.output
    assert "share no labelled task" in result.output
    assert "malignancy: y_malignancy in neither" in result.output and "alnm: y_alnm in neither" in result.output
    # Labels in one file only are enough (the join keeps them under their plain name).
    labelled = _prediction_file(tmp_path / "l.csv", labelled=("malignancy", "alnm"))
    both = compare(str(labelled), str(b))
    assert set(both) == {"malignancy", "alnm"} and both["malignancy"]["n"] == 40
    # One shared task without labels: named, unless skipped on request.
    partial = _prediction_file(tmp_path / "m.csv", labelled=("malignancy",))
    with pytest.raises(UsmtlError, match="Task\\(s\\) alnm have no labels") as info:
        compare(str(partial), str(b))
    assert "y_alnm in neither" in str(info.value)
    result = invoke("compare", partial, b)
    assert result.exit_code == 2 and "alnm" in result.output
    assert set(compare(str(partial), str(b), skip_unlabelled=True)) == {"malignancy"}


# ---------------------------------------------------------------------------------------
# Explain: an all-zero map is said, counted, and the negative evidence can be asked for
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_model(tmp_path_factory):
    """An untrained two-head model saved with its config, whose malignancy head reads every
    pooled feature positively and whose alnm head negatively: at the last block (post-ReLU
    features, then global pooling) alnm's Grad-CAM is all zero, malignancy's is not."""
    from usmtl.config import config_from_dict, save_config
    from usmtl.model.multitask import build_model, head_layer

    cfg = config_from_dict(tiny_config_dict(
        tasks=[{"name": "malignancy", "label": "malignant"},
               {"name": "alnm", "label": "alnm", "parent": "malignancy"}]))
    model = build_model(cfg)
    for task, sign in (("malignancy", 1.0), ("alnm", -1.0)):
        head = head_layer(model, task)
        kernel, *rest = head.get_weights()
        head.set_weights([sign * (np.abs(kernel) + 0.05), *rest])
    folder = tmp_path_factory.mktemp("signed")
    save_config(cfg, str(folder / "config.yaml"))
    model.save(folder / "model.keras")
    return folder / "model.keras"


def _capture_figures(monkeypatch):
    """Every figure's texts (titles, panel words), by file name, as it is saved."""
    from usmtl.explain import plots

    texts = {}
    real = plots._save

    def save(fig, path):
        found = [t.get_text() for t in fig.texts]
        for ax in fig.axes:
            found += [ax.get_title()] + [t.get_text() for t in ax.texts]
        texts[os.path.basename(path)] = " ".join(" ".join(found).split())
        real(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    return texts


def test_all_zero_maps_are_labelled_and_counted(signed_model, phantoms, tmp_path, monkeypatch):
    from usmtl.explain import explain
    from usmtl.explain.gradcam import all_zero

    texts = _capture_figures(monkeypatch)
    out = tmp_path / "explain"
    frame = explain(str(signed_model), str(phantoms), tasks=["malignancy", "alnm"], limit=3,
                    out=str(out))
    layer = frame["layer"].iloc[0]
    written = pd.read_csv(out / "explanations.csv")
    assert "cam_all_zero" in written.columns and set(written["evidence"]) == {"positive"}
    by_task = written.groupby("task")["cam_all_zero"].sum()
    assert by_task["alnm"] == 3 and by_task["malignancy"] == 0
    for row in written.itertuples():
        heat = np.load(out / row.heatmap)
        assert bool(all_zero(heat)) == bool(row.cam_all_zero)
        said = f"no positive evidence at {layer}" in texts[row.overlay]
        assert said == bool(row.cam_all_zero), (row.overlay, texts[row.overlay])
    assert np.isnan(written.loc[written["task"] == "alnm", "cam_in_box"]).all()
    sheet = texts["contact_sheet.png"]
    assert "3 of 6 maps all zero" in sheet and sheet.count(f"no positive evidence at {layer}") >= 3

    # The negative evidence: what lowers each head's logit; the signs swap.
    negative = explain(str(signed_model), str(phantoms), tasks=["malignancy", "alnm"], limit=3,
                       out=str(tmp_path / "negative"), evidence="negative")
    by_task = negative.groupby("task")["cam_all_zero"].sum()
    assert by_task["alnm"] == 0 and by_task["malignancy"] == 3
    assert set(negative["evidence"]) == {"negative"}
    assert all(name.endswith("_negative.npy") for name in negative["heatmap"])
    assert f"no negative evidence at {layer}" in texts[negative["overlay"].iloc[0]]
    with pytest.raises(UsmtlError, match="Unknown evidence"):
        explain(str(signed_model), str(phantoms), tasks=["alnm"], out=str(tmp_path / "x"),
                evidence="both")
