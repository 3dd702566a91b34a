"""The radiomics baseline: extraction (count, finiteness, cache, failures), Boruta selection
(keeps signal, drops noise, never sees validation or test rows) and the comparison with a
CNN run through ``usmtl compare``."""

import json
import os
import shutil
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke, tiny_config_dict, train_tiny_run
from usmtl.errors import UsmtlError

pytest.importorskip("radiomics", reason="the radiomics extra is not installed")
pytest.importorskip("boruta", reason="the radiomics extra is not installed")

from usmtl.radiomics.extract import (FEATURE_COUNT, RadiomicsSettings,  # noqa: E402
                                     extract_features, read_features)
from usmtl.radiomics.model import RadiomicsModelSettings, fit_radiomics, select_features  # noqa: E402

FAST = RadiomicsModelSettings(boruta_iterations=20, trees=50)


@pytest.fixture(scope="module")
def small_phantoms(tmp_path_factory):
    from usmtl.data.phantoms import make_phantoms

    out = tmp_path_factory.mktemp("radiomics_phantoms")
    make_phantoms(str(out), n_patients=6, images_per_patient=1, size=96, seed=3, progress=False)
    return out / "manifest.csv"


# ---------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------


def test_extraction_gives_the_documented_finite_features(small_phantoms, tmp_path):
    out = tmp_path / "features.csv"
    table = extract_features(str(small_phantoms), str(out), progress=False)
    assert table.failures == []
    assert table.n_features == FEATURE_COUNT == 93
    per_class = Counter(name.split("_")[1] for name in table.feature_names)
    assert per_class == {"firstorder": 18, "glcm": 24, "glrlm": 16, "glszm": 16, "gldm": 14, "ngtdm": 5}
    values = table.frame[table.feature_names].to_numpy(float)
    assert values.shape == (6, 93) and np.isfinite(values).all()
    assert not any("shape" in name for name in table.feature_names)  # no shape features
    frame, meta = read_features(str(out))
    assert meta["n_features"] == 93 and meta["settings"]["bin_width"] == 8.0
    assert list(frame["row"]) == list(range(6))
    # different lesions give different texture
    assert values[:, table.feature_names.index("original_firstorder_Mean")].std() > 0


def test_cache_extracts_only_what_is_new(small_phantoms, tmp_path):
    out = str(tmp_path / "features.csv")
    first = extract_features(str(small_phantoms), out, progress=False)
    again = extract_features(str(small_phantoms), out, progress=False)
    assert (first.extracted, again.extracted) == (6, 0)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    # one new row: only it is extracted; the cache follows content, not the path
    manifest = pd.read_csv(small_phantoms, dtype=str, keep_default_na=False)
    image = small_phantoms.parent / manifest.at[0, "image"]
    shutil.copy(image, small_phantoms.parent / "copy.png")
    extra = manifest.iloc[[0]].assign(image="copy.png", patient_id="NEW")
    grown = tmp_path / "grown.csv"
    pd.concat([manifest, extra]).assign(
        image=lambda f: [str(small_phantoms.parent / p) for p in f["image"]],
        annotation=lambda f: [str(small_phantoms.parent / p) for p in f["annotation"]],
    ).to_csv(grown, index=False)
    more = extract_features(str(grown), out, progress=False)
    assert more.extracted == 0 and len(more.frame) == 7  # same bytes and box: a cache hit
    # other settings: everything again
    coarse = extract_features(str(small_phantoms), out, RadiomicsSettings(bin_width=16), progress=False)
    assert coarse.extracted == 6


def test_failing_image_is_reported_by_row_and_the_others_go_on(small_phantoms, tmp_path):
    manifest = pd.read_csv(small_phantoms, dtype=str, keep_default_na=False)
    root = small_phantoms.parent
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    manifest["image"] = [str(root / p) for p in manifest["image"]]
    manifest["annotation"] = [str(root / p) for p in manifest["annotation"]]
    manifest.loc[2, "image"] = str(broken)
    path = tmp_path / "manifest.csv"
    manifest.to_csv(path, index=False)
    out = tmp_path / "features.csv"
    result = invoke("radiomics", "extract", path, "--out", out, "--jobs", 2)
    assert result.exit_code == 1
    assert "manifest.csv line 4" in result.output and "broken.png" in result.output
    frame, meta = read_features(str(out))
    assert list(frame["row"]) == [0, 1, 3, 4, 5] and len(meta["failures"]) == 1
    # two worker processes give the same numbers as one
    single = extract_features(str(path), None, jobs=1, cache_dir=None, progress=False)
    np.testing.assert_allclose(single.frame[single.feature_names].to_numpy(float),
                               frame[single.feature_names].to_numpy(float), rtol=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    ({"mask": "outline"}, "mask must be 'box' or 'mask'"),
    ({"margin": -0.1}, "margin must be >= 0"),
    ({"bin_width": 0}, "bin_width must be > 0"),
    ({"feature_classes": ("shape2D",)}, "Unknown feature class"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(UsmtlError, match=message):
        RadiomicsSettings(**kwargs)


def test_pixel_mask_needs_a_mask_column(small_phantoms):
    with pytest.raises(UsmtlError, match="needs a 'mask' column"):
        extract_features(str(small_phantoms), None, RadiomicsSettings(mask="mask"), progress=False)


def test_missing_pyradiomics_says_how_to_install(monkeypatch):
    from usmtl.radiomics.extract import require_radiomics

    monkeypatch.setitem(sys.modules, "radiomics", None)
    with pytest.raises(UsmtlError, match="no-build-isolation"):
        require_radiomics()


# ---------------------------------------------------------------------------------------
# Selection and the forest
# ---------------------------------------------------------------------------------------


def test_boruta_keeps_the_informative_feature_and_drops_noise():
    rng = np.random.default_rng(0)
    n = 240
    y = rng.integers(0, 2, n)
    informative = y + rng.normal(0, 0.4, n)
    x = np.column_stack([informative, rng.normal(size=(n, 12))])
    chosen = select_features(x, y, RadiomicsModelSettings(boruta_iterations=30))
    assert chosen["status"] == "confirmed"
    assert chosen["selected"] == [0]


def test_boruta_falls_back_to_best_ranked_when_nothing_is_confirmed():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 8)), rng.integers(0, 2, 60)
    chosen = select_features(x, y, RadiomicsModelSettings(boruta_iterations=10, fallback_k=3))
    assert chosen["status"] in ("tentative", "fallback")
    assert 1 <= len(chosen["selected"]) <= 8


def synthetic_features(manifest_path, out, leak_splits=None, seed=0):
    """A feature file for every manifest row: a noisy copy of the malignancy label, noise,
    and (with ``leak_splits``) a column equal to the label on those splits' rows and constant
    elsewhere: selection that sees only training rows can never pick it, whatever the task's
    size (random values there let Boruta confirm it by chance on a small child cohort)."""
    from usmtl.data.manifest import read_manifest

    manifest = read_manifest(str(manifest_path))
    y = manifest.frame["malignant"].astype(float).to_numpy()
    rng = np.random.default_rng(seed)
    n = len(y)
    frame = pd.DataFrame({"row": range(n), "image": manifest.frame["image"],
                          "patient_id": manifest.patient_ids(), "cache_key": "k"})
    frame["original_firstorder_Signal"] = y + rng.normal(0, 0.5, n)
    for k in range(6):
        frame[f"original_glcm_Noise{k}"] = rng.normal(size=n)
    if leak_splits is not None:
        frame["original_glcm_Leak"] = np.where(leak_splits, y, 0.5).astype(float)
    frame.to_csv(out, index=False)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump({"manifest": str(manifest_path)}, f)
    return out


@pytest.fixture(scope="module")
def radiomics_config():
    from usmtl.config import config_from_dict

    return config_from_dict(tiny_config_dict())


def test_selection_never_sees_validation_or_test_rows(phantoms, radiomics_config, tmp_path, monkeypatch):
    from usmtl.data.manifest import read_manifest
    from usmtl.data.splits import load_split
    from usmtl.radiomics import model as radiomics_model
    from usmtl.data.prepare import prepare_data

    # the split fit will use, made the same way beforehand
    rows = prepare_data(radiomics_config, str(phantoms)).row_split
    held_out = rows != "train"
    features = synthetic_features(phantoms, str(tmp_path / "f.csv"), leak_splits=held_out)
    seen = []
    real = radiomics_model.select_features

    def spy(x, y, settings):
        seen.append(x.shape[0])
        return real(x, y, settings)

    monkeypatch.setattr(radiomics_model, "select_features", spy)
    result = fit_radiomics(features, str(tmp_path / "out"), radiomics_config, settings=FAST)
    known_train = [(np.isfinite(prepare_data(radiomics_config, str(phantoms)).labels[t]) & ~held_out).sum()
                   for t in result["tasks"]]
    assert seen == known_train
    for task in result["tasks"].values():
        assert "original_glcm_Leak" not in task["selected"]
    assert "original_firstorder_Signal" in result["tasks"]["malignancy"]["selected"]
    split = load_split(str(tmp_path / "out"))
    manifest = read_manifest(str(phantoms))
    assert {split[p] for p in manifest.patient_ids()[~held_out]} == {"train"}


def test_fit_errors_leave_nothing_behind(phantoms, radiomics_config, tmp_path):
    features = synthetic_features(phantoms, str(tmp_path / "f.csv"))
    out = tmp_path / "out"
    # features of another manifest
    frame = pd.read_csv(features)
    frame.loc[3, "image"] = "elsewhere.png"
    frame.to_csv(tmp_path / "g.csv", index=False)
    shutil.copy(tmp_path / "f.json", tmp_path / "g.json")
    with pytest.raises(UsmtlError, match="does not match"):
        fit_radiomics(str(tmp_path / "g.csv"), str(out), radiomics_config, settings=FAST)
    assert not out.exists()
    # no task has both classes among training images
    from usmtl.config import config_from_dict

    never = config_from_dict(tiny_config_dict(tasks=[{"name": "huge", "label": "aln_count >= 99"}]))
    with pytest.raises(UsmtlError, match="No task can be fitted"):
        fit_radiomics(features, str(out), never, settings=FAST)
    assert not out.exists()
    with pytest.raises(UsmtlError, match="needs a config"):
        fit_radiomics(features, str(out), None, settings=FAST)


@pytest.mark.slow
def test_radiomics_compares_with_a_cnn_run(phantoms, tmp_path):
    run = train_tiny_run(tmp_path / "cnn", phantoms, epochs=1)
    features = synthetic_features(phantoms, str(tmp_path / "f.csv"))
    out = tmp_path / "radiomics"
    result = invoke("radiomics", "fit", features, "--split-file", run, "--out", out,
                    "--boruta-iterations", 20, "--trees", 50)
    assert result.exit_code == 0, result.output
    assert "malignancy:" in result.output and "test:" in result.output
    assert (out / "split.csv").read_text() == (run / "split.csv").read_text()
    test = pd.read_csv(out / "test_predictions.csv")
    assert set(test["split"]) == {"test"} and {"p_malignancy", "y_malignancy", "hierarchy_violation"} <= set(test.columns)
    compared = invoke("compare", run, out, "--out", tmp_path / "c.json")
    assert compared.exit_code == 0, compared.output
    comparison = json.loads((tmp_path / "c.json").read_text())
    assert set(comparison) == {"malignancy", "alnm", "aln_ge_2"}
    assert 0 <= comparison["malignancy"]["delong"]["p"] <= 1
    assert comparison["malignancy"]["n"] == len(test)
    evaluated = invoke("evaluate", out, "--bootstrap", 50)
    assert evaluated.exit_code == 0, evaluated.output
    assert (out / "metrics.json").is_file()
    # The fitted forests predict new images from their features, exactly as in the fit.
    predicted = invoke("radiomics", "predict", out, features, "--out", tmp_path / "new.csv")
    assert predicted.exit_code == 0, predicted.output
    new = pd.read_csv(tmp_path / "new.csv").set_index("image")
    fitted = pd.read_csv(out / "predictions.csv").set_index("image")
    assert len(new) == len(fitted) and set(new["split"]) == {"train", "val", "test"}
    for column in ("p_malignancy", "p_alnm"):
        np.testing.assert_allclose(new.loc[fitted.index, column], fitted[column], rtol=0, atol=1e-12)
    short = pd.read_csv(features).drop(columns=["original_firstorder_Signal"])
    short.to_csv(tmp_path / "short.csv", index=False)
    failed = invoke("radiomics", "predict", out, tmp_path / "short.csv")
    assert failed.exit_code != 0 and "original_firstorder_Signal" in failed.output
    not_fit = invoke("radiomics", "predict", tmp_path, features)
    assert not_fit.exit_code != 0 and "models.joblib" in not_fit.output


@pytest.mark.busbra
def test_busbra_extraction(busbra_root, tmp_path):
    from usmtl.data.importers import import_busbra

    manifest = tmp_path / "busbra.csv"
    import_busbra(str(busbra_root), str(manifest), progress=False, duplicates=False, log=None)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False).head(8)
    small = tmp_path / "small.csv"  # beside the full manifest: its relative paths hold
    frame.to_csv(small, index=False)
    for mask in ("box", "mask"):
        table = extract_features(str(small), None, RadiomicsSettings(mask=mask), progress=False)
        assert table.failures == [] and table.n_features == 93
        assert np.isfinite(table.frame[table.feature_names].to_numpy(float)).all()


def test_predict_refuses_features_extracted_with_other_settings(phantoms, tmp_path):
    from usmtl.errors import UsmtlError
    from usmtl.radiomics.model import _check_same_extraction

    fitted = synthetic_features(phantoms, str(tmp_path / "fitted.csv"))
    with open(tmp_path / "fitted.json", "w") as f:
        json.dump({"manifest": str(phantoms), "settings": {"bin_width": 8}}, f)
    _check_same_extraction(fitted, {"settings": {"bin_width": 8}}, "new.csv")  # same: fine
    _check_same_extraction(fitted, {}, "new.csv")  # no sidecar to compare: fine
    with pytest.raises(UsmtlError, match="other settings"):
        _check_same_extraction(fitted, {"settings": {"bin_width": 16}}, "new.csv")
