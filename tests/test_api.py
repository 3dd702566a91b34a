"""The Python API: usmtl.load, the one import that registers usmtl's layers with Keras,
output names, scikit-learn-style input checks of the metrics, and usmtl.presets."""

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, invoke
from usmtl.evaluation.metrics import binary_metrics, roc_auc


# ---------------------------------------------------------------------------------------
# Array functions validate their inputs as scikit-learn does
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("function", [binary_metrics, roc_auc])
@pytest.mark.parametrize("y, score, message", [
    ([0, 2, 1], [0.1, 0.2, 0.3], r"binary labels 0 and 1.*Received: labels \[2.0\]"),
    ([0, 1], [[0.1, 0.9], [0.8, 0.2]], r"must be 1-D.*shape \(2, 2\)"),
    ([0, 1, 1], [0.1, 0.2], r"inconsistent numbers of samples: y_true has 3, y_score 2"),
    ([0, 1], [np.nan, 0.2], r"y_score contains NaN for 1 sample.*index 0"),
    ([0, 1], ["a", "b"], r"y_score must be numbers"),
])
def test_array_functions_refuse_what_scikit_learn_refuses(function, y, score, message):
    with pytest.raises(ValueError, match=message):
        function(y, score)


def test_unknown_labels_and_columns_are_still_accepted():
    m = binary_metrics([0, 1, np.nan, 1], np.array([[0.2], [0.8], [np.nan], [0.4]]))
    assert (m["n"], m["auc"], m["sensitivity"]) == (3, 1.0, 0.5)
    assert roc_auc([1, 1], [0.2, 0.3]) != roc_auc([1, 1], [0.2, 0.3])  # one class: NaN


# ---------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------

def test_presets_load_returns_the_config():
    import usmtl

    cfg = usmtl.presets.load("paper", ["train.epochs=3"])
    assert [t.name for t in cfg.tasks] == ["malignancy", "alnm"] and cfg.train.epochs == 3


def test_presets_name_prints_the_yaml_and_the_list_keeps_whole_sentences():
    from usmtl.presets import preset_path

    result = invoke("presets", "quickstart")
    assert result.exit_code == 0, result.output
    with open(preset_path("quickstart")) as f:
        assert result.output == f.read().rstrip("\n") + "\n"
    listing = invoke("presets").output
    assert "malignancy and ALNM." in listing  # paper's first sentence, not its first line
    assert "instead of ResNet50." in listing
    result = invoke("presets", "nope")
    assert result.exit_code == 2 and "Unknown preset; presets: [" in result.output


# ---------------------------------------------------------------------------------------
# Keras: one import registers every custom object; outputs are named after the tasks
# ---------------------------------------------------------------------------------------

def _save_tiny_model(path, **model):
    from tests.conftest import tiny_config_dict
    from usmtl.config import config_from_dict
    from usmtl.model.multitask import build_model

    cfg = config_from_dict(tiny_config_dict(model={**tiny_config_dict()["model"], **model}))
    keras_model = build_model(cfg)
    keras_model.save(path)
    return keras_model


@pytest.mark.parametrize("model", [{}, {"child_output": "conditional"}])
def test_keras_load_model_after_the_one_documented_import(tmp_path, model):
    pytest.importorskip("keras")
    path = tmp_path / "m.keras"
    _save_tiny_model(path, **model)
    plain = ("import keras\n"
             f"try:\n    keras.saving.load_model({str(path)!r})\n"
             "except Exception as exc:\n    print('refused', type(exc).__name__)\n")
    documented = ("import keras, usmtl.model\n"
                  f"m = keras.saving.load_model({str(path)!r})\n"
                  "print(sorted(m.output_names))\n")
    run = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO) for code in (plain, documented)]
    assert run[0].stdout.startswith("refused"), run[0].stdout + run[0].stderr
    assert run[1].returncode == 0, run[1].stderr
    assert run[1].stdout.strip().splitlines()[-1] == "['aln_ge_2', 'alnm', 'malignancy']"


def test_a_model_saved_with_the_old_hinge_layer_still_loads_and_exports_heads(tmp_path):
    """Runs saved before HingedChild wrap every head in one HierarchicalHinge layer."""
    keras = pytest.importorskip("keras")
    from usmtl.export.graph import heads_model
    from usmtl.model.hinge import HierarchicalHinge
    from usmtl.model.multitask import head_layer
    from usmtl.run import load_keras_model

    inputs = keras.Input((8,), name="image")
    heads = {t: keras.layers.Dense(1, activation="sigmoid", name=t)(inputs)
             for t in ("malignancy", "alnm")}
    outputs = HierarchicalHinge([("malignancy", "alnm")], name="hierarchical_hinge")(heads)
    keras.Model(inputs, outputs).save(tmp_path / "old.keras")
    old = load_keras_model(str(tmp_path / "old.keras"))
    assert isinstance(head_layer(old, "alnm"), keras.layers.Dense)
    x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    out, heads_out = old.predict(x, verbose=0), heads_model(old, ["malignancy", "alnm"])(x)
    for task in ("malignancy", "alnm"):
        np.testing.assert_allclose(np.asarray(heads_out[task]), out[task], atol=1e-6)


def test_a_load_error_names_the_import(tmp_path):
    from usmtl.errors import UsmtlError
    from usmtl.run import load_keras_model

    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UsmtlError, match=r"`import usmtl.model` before keras.saving.load_model"):
        load_keras_model(str(bad))


# ---------------------------------------------------------------------------------------
# usmtl.load
# ---------------------------------------------------------------------------------------

def test_import_usmtl_and_load_import_no_tensorflow(trained_run):
    code = ("import sys, usmtl\n"
            f"p = usmtl.load({str(trained_run)!r})\n"
            "print(p.tasks, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['malignancy', 'alnm', 'aln_ge_2'] False False"


def test_load_predicts_arrays_and_manifests(trained_run, phantoms):
    import usmtl
    from usmtl.predict import predict

    predictor = usmtl.load(trained_run)
    assert sorted(predictor.model.output_names) == sorted(predictor.tasks)
    frame = predictor.predict(str(phantoms), split="test")
    np.testing.assert_allclose(frame["p_malignancy"],
                               predict(str(trained_run), str(phantoms), split="test")["p_malignancy"])
    crops = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    probs = predictor.predict(crops)
    assert sorted(probs) == sorted(predictor.tasks) and probs["alnm"].shape == (3,)
    np.testing.assert_allclose(predictor.predict(crops[0])["alnm"], probs["alnm"][:1], atol=1e-6)
    with pytest.raises(ValueError, match=r"\(n, 32, 32, 3\).*Received: an array of shape \(3, 8, 8, 3\)"):
        predictor.predict(crops[:, :8, :8])
