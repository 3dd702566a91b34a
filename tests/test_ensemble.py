"""Ensembles and test-time augmentation: the combining rules, an ensemble through the one
door (predict, export with parity), and the flip."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke
from usmtl.errors import UsmtlError
from usmtl.evaluation.ensemble import combine, ensemble_frame


@pytest.mark.parametrize("rule", ["mean", "logit"])
def test_identical_members_combine_to_themselves(rule):
    p = np.array([0.01, 0.3, 0.5, 0.97])
    np.testing.assert_allclose(combine([p, p, p], rule), p, atol=1e-12)


def test_the_rules_differ_as_stated():
    a, b = np.array([0.9]), np.array([0.5])
    assert combine([a, b], "mean")[0] == pytest.approx(0.7)
    assert combine([a, b], "logit")[0] == pytest.approx(1 / (1 + np.exp(-np.log(9) / 2)))


@pytest.mark.parametrize("scores, rule, message", [
    ([], "mean", "one or more"),
    ([np.zeros(2), np.zeros(3)], "mean", "one length"),
    ([np.zeros(2)], "median", "rule must be one of"),
])
def test_combine_refuses(scores, rule, message):
    with pytest.raises(UsmtlError, match=message):
        combine(scores, rule)


def _frame(p, images=("a", "b")):
    return pd.DataFrame({"image": list(images), "patient_id": ["1", "2"], "split": ["test"] * 2,
                         "p_malignancy": p, "y_malignancy": [1.0, 0.0]})


def test_ensemble_frame_keeps_each_member_and_refuses_other_images():
    out = ensemble_frame([_frame([0.2, 0.4]), _frame([0.6, 0.8])])
    np.testing.assert_allclose(out["p_malignancy"], [0.4, 0.6])
    np.testing.assert_allclose(out["member2_malignancy"], [0.6, 0.8])
    with pytest.raises(UsmtlError, match="other images"):
        ensemble_frame([_frame([0.2, 0.4]), _frame([0.6, 0.8], images=("a", "c"))])


def test_mirror_layer_flips_the_width():
    from usmtl.model.ensemble import Mirror

    x = np.arange(2 * 3 * 4 * 3, dtype="float32").reshape(2, 3, 4, 3)
    np.testing.assert_array_equal(np.asarray(Mirror()(x)), x[:, :, ::-1])


@pytest.fixture(scope="module")
def ensembles(trained_run, tmp_path_factory):
    """The shared tiny run twice (an ensemble of identical runs), and with the flip."""
    from usmtl.formats.ensemble import write_ensemble

    root = tmp_path_factory.mktemp("ensembles")
    same = write_ensemble(str(root / "same"), [str(trained_run), str(trained_run)])
    flip = write_ensemble(str(root / "flip"), [str(trained_run)], rule="mean", tta="flip")
    return root, same, flip


def test_an_ensemble_of_identical_runs_equals_the_run(ensembles, trained_run, phantoms):
    from usmtl.predict import predict

    _, same, _ = ensembles
    one = predict(str(trained_run), str(phantoms), split="test")
    two = predict(same, str(phantoms), split="test")  # the members share a split: --split works
    np.testing.assert_allclose(two["p_malignancy"], one["p_malignancy"], atol=1e-6)
    np.testing.assert_allclose(two["member2_alnm"], one["p_alnm"], atol=1e-6)
    assert list(two["violated_edges"]) == list(one["violated_edges"])


def test_an_ensemble_with_flip_equals_predict_with_tta(ensembles, trained_run, phantoms):
    from usmtl.predict import predict

    _, _, flip = ensembles
    direct = predict(str(trained_run), str(phantoms), split="test", tta="flip")
    plain = predict(str(trained_run), str(phantoms), split="test")
    np.testing.assert_allclose(predict(flip, str(phantoms), split="test")["p_malignancy"],
                               direct["p_malignancy"], atol=1e-6)
    assert not np.allclose(direct["p_malignancy"], plain["p_malignancy"], atol=1e-6)
    with pytest.raises(UsmtlError, match="set when it is made"):
        predict(flip, str(phantoms), split="test", tta="flip")


def test_tta_on_a_symmetric_image_changes_nothing(trained_run, tmp_path):
    import cv2

    from usmtl.predict import predict

    rng = np.random.default_rng(0)
    half = rng.integers(0, 255, (96, 48, 3), dtype=np.uint8)
    image = np.concatenate([half, half[:, ::-1]], axis=1)  # mirror-symmetric about the middle
    cv2.imwrite(str(tmp_path / "sym.png"), image)
    box = "28,20,68,70"  # centred: 28 + 68 = 96
    plain = predict(str(trained_run), str(tmp_path / "sym.png"), box=box)
    flip = predict(str(trained_run), str(tmp_path / "sym.png"), box=box, tta="flip")
    for task in ("malignancy", "alnm", "aln_ge_2"):
        assert flip[f"p_{task}"][0] == pytest.approx(plain[f"p_{task}"][0], abs=1e-6)


def test_members_of_other_crops_are_refused(trained_run, tmp_path):
    import shutil

    import yaml

    from usmtl.formats.ensemble import write_ensemble

    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["data"]["roi_margin"] = 0.5
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(UsmtlError, match="data.roi_margin"):
        write_ensemble(str(tmp_path / "e"), [str(trained_run), str(other)])
    with pytest.raises(UsmtlError, match="neither a model nor a folder with runs"):
        write_ensemble(str(tmp_path / "e"), [str(tmp_path / "empty_dir_that_is_missing")])


def test_ensemble_cli_and_export_with_parity(trained_run, phantoms, tmp_path):
    import json

    result = invoke("ensemble", tmp_path / "ens", trained_run, trained_run, "--rule", "logit")
    assert result.exit_code == 0, result.output
    assert "Ensemble of 2 models" in result.output
    result = invoke("export", tmp_path / "ens", "--format", "tflite", "--out", tmp_path / "x",
                    "--manifest", phantoms, "--images", 16, "--latency-runs", 2)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "x" / "parity.json").read_text())
    assert report["passed"] and set(report["outputs"]) == {"malignancy", "alnm", "aln_ge_2"}


def test_explain_refuses_an_ensemble_by_name(ensembles, phantoms):
    _, same, _ = ensembles
    result = invoke("explain", same, phantoms, "--task", "malignancy", "--out", f"{same}-cams")
    assert result.exit_code == 2 and "is an ensemble of 2 models" in result.output
    assert "Traceback" not in result.output
