"""Grad-CAM / Grad-CAM++ maps, overlays, the radial profile and the explain commands."""

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke, tiny_config_dict

from usmtl.explain.gradcam import ExplainError, GradCam, cam_from_gradients, conv_layers, task_heads
from usmtl.explain.profile import radial_profile

METHODS = ["gradcam", "gradcam++"]


# ---------------------------------------------------------------------------------------
# The heatmap math
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_maps_have_the_requested_shape_and_lie_in_unit_interval(method):
    rng = np.random.default_rng(0)
    features = rng.random((3, 5, 7, 4)).astype(np.float16)  # float16, as under mixed precision
    grads = rng.standard_normal((3, 5, 7, 4)).astype(np.float16)
    maps = cam_from_gradients(features, grads, method, size=(40, 56))
    assert maps.shape == (3, 40, 56) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    for m in maps:  # each non-empty map is scaled by its own maximum
        assert m.max() == 0.0 or np.isclose(m.max(), 1.0)


@pytest.mark.parametrize("method", METHODS)
def test_zero_gradients_and_constant_features_give_an_all_zero_map_not_nan(method):
    features = np.ones((2, 4, 4, 3), np.float32)
    maps = cam_from_gradients(features, np.zeros_like(features), method, size=(16, 16))
    assert maps.shape == (2, 16, 16)
    assert np.isfinite(maps).all() and not maps.any()
    # Only negative evidence: ReLU leaves nothing, still no NaN.
    maps = cam_from_gradients(features, -np.ones_like(features), method)
    assert np.isfinite(maps).all() and not maps.any()


@pytest.mark.parametrize("method", METHODS)
def test_map_follows_the_channel_with_positive_gradient(method):
    # Channel 0 fires top-left and helps the score; channel 1 fires bottom-right and hurts it.
    features = np.zeros((1, 4, 4, 2), np.float32)
    features[0, 0, 0, 0] = 1.0
    features[0, 3, 3, 1] = 1.0
    grads = np.zeros_like(features)
    grads[..., 0], grads[..., 1] = 0.5, -0.5
    cam = cam_from_gradients(features, grads, method)[0]
    assert cam[0, 0] == 1.0 and cam[3, 3] == 0.0
    # Swapping the gradients' signs moves the map to the other corner.
    cam = cam_from_gradients(features, -grads, method)[0]
    assert cam[3, 3] == 1.0 and cam[0, 0] == 0.0


def test_gradcam_weights_are_mean_gradients():
    # One map per channel; Grad-CAM is ReLU(sum_k mean(g_k) A_k), normalised.
    features = np.zeros((1, 2, 2, 2), np.float32)
    features[0, :, :, 0] = [[1.0, 0.0], [0.0, 0.0]]
    features[0, :, :, 1] = [[0.0, 1.0], [0.0, 0.0]]
    grads = np.zeros_like(features)
    grads[0, :, :, 0] = 0.4  # mean 0.4
    grads[0, 0, 0, 1] = 0.8  # mean 0.2
    cam = cam_from_gradients(features, grads, "gradcam")[0]
    np.testing.assert_allclose(cam, [[1.0, 0.5], [0.0, 0.0]], atol=1e-6)


# ---------------------------------------------------------------------------------------
# The radial profile
# ---------------------------------------------------------------------------------------


def test_radial_profile_of_a_centred_blob_decreases_and_of_a_ring_does_not():
    yy, xx = np.mgrid[0:64, 0:48]  # not square: distances are normalised per axis
    u, v = (xx + 0.5 - 24) / 24, (yy + 0.5 - 32) / 32
    blob = np.exp(-(u ** 2 + v ** 2) / 0.1)
    frame = radial_profile(blob, bins=10)
    assert list(frame.columns) == ["r_lo", "r_hi", "r_mid", "mean", "sem", "n_images"]
    assert np.isclose(frame["r_hi"].iloc[-1], np.sqrt(2))
    assert np.all(np.diff(frame["mean"]) < 0)
    assert frame["mean"].iloc[0] > 0.9 and frame["mean"].iloc[-1] < 0.01
    ring = np.exp(-((np.sqrt(u ** 2 + v ** 2) - 0.8) ** 2) / 0.01)
    means = radial_profile(ring, bins=10)["mean"].to_numpy()
    assert means.argmax() == 5 and means[0] < 0.01  # the bin holding r = 0.8


def test_radial_profile_averages_images_with_standard_errors():
    stack = np.stack([np.full((8, 8), 0.2), np.full((8, 8), 0.6)])
    frame = radial_profile(stack, bins=4)
    np.testing.assert_allclose(frame["mean"], 0.4)
    np.testing.assert_allclose(frame["sem"], 0.2)  # sd 0.283 / sqrt(2)
    assert (frame["n_images"] == 2).all()


# ---------------------------------------------------------------------------------------
# Models: every variant, errors, mixed precision
# ---------------------------------------------------------------------------------------


def _build(variant=None, **sections):
    from usmtl.config import apply_variant, config_from_dict
    from usmtl.model.multitask import build_model

    cfg = config_from_dict(tiny_config_dict(**sections))
    if variant:
        cfg = apply_variant(cfg, variant)
    return build_model(cfg)


@pytest.fixture(scope="module")
def tiny_model():
    return _build()  # every paper task, with the hierarchical hinge


def _images(n, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_gradcam_on_a_model_matches_its_predictions(tiny_model, method):
    images = _images(3)
    cam = GradCam(tiny_model, None, None, method)
    assert cam.layer == "stage2_block1_out"
    maps, probs = cam(images)
    assert set(maps) == {"malignancy", "alnm", "aln_ge_2"}
    predicted = tiny_model.predict(images, verbose=0)
    for task in maps:
        assert maps[task].shape == (3, 32, 32)
        assert maps[task].min() >= 0.0 and maps[task].max() <= 1.0
        np.testing.assert_allclose(probs[task], np.ravel(predicted[task]), atol=1e-5)


@pytest.mark.parametrize("variant", ["single-bm", "single-alnm", "multitask", "multitask-hl"])
def test_every_variant_can_be_explained(variant):
    model = _build(variant)
    heads = task_heads(model)
    assert sorted(heads) == {"single-bm": ["malignancy"], "single-alnm": ["alnm"]}.get(
        variant, ["aln_ge_2", "alnm", "malignancy"])
    maps, _ = GradCam(model, heads, "stage1_block1_out", "gradcam++")(_images(2))
    assert all(m.shape == (2, 32, 32) and np.isfinite(m).all() for m in maps.values())


def test_unknown_task_layer_or_method_is_an_error_listing_the_valid_ones(tiny_model):
    with pytest.raises(ExplainError) as info:
        GradCam(tiny_model, ["malignancy", "nope"])
    message = str(info.value)
    assert "valid tasks" in message and "Received: nope" in message
    assert all(t in message for t in ("'malignancy'", "'alnm'", "'aln_ge_2'"))
    with pytest.raises(ExplainError) as info:
        GradCam(tiny_model, ["alnm"], layer="pool")  # 2-D output: not a CAM layer
    message = str(info.value)
    assert "Received: 'pool'" in message
    assert "stage2_block1_out" in message and "stem_conv" in message
    assert "'image'" not in message and "normalization" not in message
    assert "stage2_block1_out" in conv_layers(tiny_model)
    with pytest.raises(ExplainError, match="gradcam\\+\\+"):
        GradCam(tiny_model, ["alnm"], method="scorecam")


def test_mixed_precision_model_gives_the_float32_maps(tmp_path):
    import keras

    from usmtl.model.precision import precision_policy

    with precision_policy("mixed_float16"):
        mixed = _build()
    path = tmp_path / "mixed.keras"
    mixed.save(path)
    import usmtl.model.backbones  # noqa: F401  (registers the custom layers)
    import usmtl.model.hinge  # noqa: F401

    loaded = keras.models.load_model(path)  # loaded under float32: keeps its float16 layers
    assert loaded.get_layer("stage2_block1_out").compute_dtype == "float16"
    reference = _build()
    reference.set_weights(mixed.get_weights())
    images = _images(4, seed=3)
    for method in METHODS:
        maps, probs = GradCam(loaded, None, None, method)(images)
        expected, expected_probs = GradCam(reference, None, None, method)(images)
        for task in maps:
            assert maps[task].dtype == np.float32 and np.isfinite(maps[task]).all()
            assert maps[task].min() >= 0.0 and maps[task].max() <= 1.0
            np.testing.assert_allclose(maps[task], expected[task], atol=0.05)
            np.testing.assert_allclose(probs[task], expected_probs[task], atol=5e-3)


# ---------------------------------------------------------------------------------------
# RoI geometry
# ---------------------------------------------------------------------------------------


def test_box_outline_lands_on_the_box_in_the_roi():
    from usmtl.config import DataConfig
    from usmtl.data.manifest import Box
    from usmtl.data.roi import crop_roi
    from usmtl.explain.driver import roi_box

    image = np.zeros((120, 200), np.uint8)
    box = Box(30, 40, 110, 70)
    image[box.y_min:box.y_max, box.x_min:box.x_max] = 255
    data = DataConfig(image_size=64, roi_margin=0.2, square_roi=True)
    roi = crop_roi(image, box, data.roi_margin, data.square_roi, data.image_size)
    x0, y0, x1, y1 = roi_box(box, data)
    ys, xs = np.nonzero(roi > 127)
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1


@pytest.mark.busbra
def test_busbra_rois_masks_and_maps(busbra_root, tmp_path, tiny_model):
    from usmtl.config import config_from_dict
    from usmtl.data.io import read_mask
    from usmtl.data.manifest import Box
    from usmtl.explain.driver import load_batch, roi_box, select_inputs

    rows = []
    for name in ("0001-l", "0002-r", "0008-l", "0010-r"):
        mask = busbra_root / "Masks" / f"mask_{name}.png"
        box = Box.from_mask(read_mask(str(mask)))
        rows.append({"image": str(busbra_root / "Images" / f"bus_{name}.png"), "patient_id": name,
                     "malignant": "", "x_min": box.x_min, "y_min": box.y_min,
                     "x_max": box.x_max, "y_max": box.y_max, "mask": str(mask)})
    manifest = tmp_path / "busbra.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    cfg = config_from_dict(tiny_config_dict(data={"image_size": 32, "roi_margin": 0.1}))
    inputs = select_inputs(None, str(manifest), cfg=cfg)
    rois, masks = load_batch(inputs, range(len(inputs)), cfg.data)
    assert rois.shape == (4, 32, 32, 3) and rois.dtype == np.uint8
    for i, mask in enumerate(masks):
        x0, y0, x1, y1 = roi_box(inputs.boxes[i], cfg.data)
        ys, xs = np.nonzero(mask)
        # The mask's box is the RoI's box: the mask touches all four of its sides.
        assert abs(xs.min() - x0) <= 1.5 and abs(xs.max() + 1 - x1) <= 1.5
        assert abs(ys.min() - y0) <= 1.5 and abs(ys.max() + 1 - y1) <= 1.5
    maps, _ = GradCam(tiny_model, ["malignancy"])(rois.astype(np.float32))
    assert maps["malignancy"].shape == (4, 32, 32)
    assert maps["malignancy"].min() >= 0 and maps["malignancy"].max() <= 1


# ---------------------------------------------------------------------------------------
# A tiny run whose label lives in one known region
# ---------------------------------------------------------------------------------------

BLOB_SIZE = 48


def _blob_dataset(folder, n=240, seed=0):
    """Speckle-like noise; positives (half) carry one bright blob somewhere in the LEFT half.
    The box is the whole image and the RoI margin 0, so the RoI is the image itself."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder / "images", exist_ok=True)
    yy, xx = np.mgrid[0:BLOB_SIZE, 0:BLOB_SIZE]
    rows = []
    for i in range(n):
        image = rng.normal(100, 25, (BLOB_SIZE, BLOB_SIZE))
        positive = i % 2
        cx = cy = np.nan
        if positive:
            cx, cy = rng.uniform(6, BLOB_SIZE / 2 - 6), rng.uniform(6, BLOB_SIZE - 6)
            image += 130 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0 ** 2))
        name = f"images/b{i:03d}.png"
        cv2.imwrite(str(folder / name), np.clip(image, 0, 255).astype(np.uint8))
        rows.append({"image": name, "patient_id": f"p{i:03d}", "malignant": positive,
                     "alnm": positive, "x_min": 0, "y_min": 0, "x_max": BLOB_SIZE,
                     "y_max": BLOB_SIZE, "blob_x": cx, "blob_y": cy})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory):
    from usmtl.config import config_from_dict
    from usmtl.training.fit import fit

    folder = tmp_path_factory.mktemp("blobs")
    manifest = _blob_dataset(folder)
    cfg = config_from_dict(tiny_config_dict(
        tasks=[{"name": "malignancy", "label": "malignant"},
               {"name": "alnm", "label": "alnm", "parent": "malignancy"}],
        data={"image_size": BLOB_SIZE, "roi_margin": 0.0, "augment": {"enabled": False},
              "test_fraction": 0.25, "val_fraction": 0.15},
        train={"epochs": 6, "batch_size": 16, "learning_rate": 3e-3}))
    run = folder / "run"
    fit(cfg, str(manifest), str(run), verbose=0)
    return run, manifest


@pytest.mark.slow
def test_cam_peaks_where_the_label_lives(blob_run):
    from usmtl.predict import load_run

    run, manifest = blob_run
    model, cfg = load_run(str(run))
    frame = pd.read_csv(manifest)
    split = pd.read_csv(run / "split.csv").set_index("patient_id")["split"]
    test = frame[frame["patient_id"].map(split).eq("test") & frame["malignant"].eq(1)]
    images = np.stack([cv2.cvtColor(cv2.imread(str(manifest.parent / p), cv2.IMREAD_GRAYSCALE),
                                    cv2.COLOR_GRAY2RGB) for p in test["image"]]).astype(np.float32)
    for method in METHODS:
        maps, probs = GradCam(model, ["malignancy", "alnm"], None, method)(images)
        assert np.mean(probs["malignancy"] > 0.5) > 0.8, "the tiny model did not learn the blob"
        for task, cams in maps.items():
            peaks = [np.unravel_index(c.argmax(), c.shape) if c.any() else (-99, -99) for c in cams]
            dist = np.hypot([p[1] - x for p, x in zip(peaks, test["blob_x"])],
                            [p[0] - y for p, y in zip(peaks, test["blob_y"])])
            assert np.mean(dist < 8) >= 0.8, (method, task, np.round(dist, 1))
            # The mean response on the blob (a disc of radius 10) is well above the rest's.
            yy, xx = np.mgrid[0:BLOB_SIZE, 0:BLOB_SIZE]
            ratios = []
            for cam, x, y in zip(cams, test["blob_x"], test["blob_y"]):
                disc = np.hypot(xx - x, yy - y) < 10
                ratios.append(cam[disc].mean() / max(cam[~disc].mean(), 1e-6))
            assert np.median(ratios) > 1.4, (method, task, np.round(ratios, 2))


@pytest.mark.slow
def test_explain_and_cam_profile_commands_write_their_files(blob_run, tmp_path):
    run, manifest = blob_run
    out = tmp_path / "explain"
    last = run / "checkpoints" / "last.keras"
    result = invoke("explain", run, manifest, "--task", "malignancy", "--task", "alnm",
                    "--split", "test", "--limit", "5", "--method", "gradcam++", "--out", out,
                    "--compare", last)
    assert result.exit_code == 0, result.output
    assert "run: 10 heatmaps (5 image(s) x 2 task(s)" in result.output
    assert "run-last: 10 heatmaps" in result.output
    frame = pd.read_csv(out / "explanations.csv")
    assert len(frame) == 20 and frame["probability"].between(0, 1).all()
    assert set(frame["task"]) == {"malignancy", "alnm"}
    for stem in frame["stem"].unique():
        for task in ("malignancy", "alnm"):
            heat = np.load(out / f"{stem}_{task}.npy")
            assert heat.shape == (BLOB_SIZE, BLOB_SIZE) and heat.dtype == np.float32
            assert heat.min() >= 0 and heat.max() <= 1
            assert cv2.imread(str(out / f"{stem}_{task}.png")) is not None
    assert set(frame["run"]) == {"run", "run-last"}
    for figure in ("contact_sheet.png", "side_by_side.png", "compare-run-last/contact_sheet.png"):
        assert cv2.imread(str(out / figure)) is not None, figure
    assert len(list((out / "compare-run-last").glob("*.npy"))) == 10

    # One image and its box; every head.
    image = manifest.parent / "images" / "b001.png"
    result = invoke("explain", run, image, "--box", "0,0,48,48", "--task", "all",
                    "--out", tmp_path / "one")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "one" / "b001_alnm.npy").shape == (BLOB_SIZE, BLOB_SIZE)

    # An unknown task or layer: exit 2, the valid names listed, nothing computed.
    result = invoke("explain", run, manifest, "--task", "idc", "--out", tmp_path / "bad")
    assert result.exit_code == 2 and "valid tasks" in result.output and "Received: idc" in result.output
    assert "'alnm'" in result.output and "'malignancy'" in result.output
    result = invoke("explain", run, manifest, "--task", "alnm", "--layer", "nope",
                    "--out", tmp_path / "bad")
    assert result.exit_code == 2 and "stage2_block1_out" in result.output
    assert not (tmp_path / "bad").exists()

    prof = tmp_path / "profile"
    result = invoke("cam-profile", run, last, manifest, "--task", "malignancy", "--split", "test",
                    "--bins", "6", "--name", "best", "--name", "last", "--out", prof)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(prof / "radial_profile.csv")
    assert len(frame) == 12 and set(frame["run"]) == {"best", "last"}
    assert frame["mean"].between(0, 1).all() and (frame["n_images"] > 0).all()
    assert cv2.imread(str(prof / "radial_profile.png")) is not None


# ---------------------------------------------------------------------------------------
# The shortcut audit on a tiny (untrained) model, with data.inpaint_marks
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory, tiny_model):
    """A run folder (config.yaml with data.inpaint_marks, checkpoints/best.keras) holding the
    untrained tiny model, and a manifest of six synthetic scans with calipers, text and
    lesion masks (three patients)."""
    from tests.test_marks import marked_scan, synthetic_scan

    from usmtl.config import config_from_dict, save_config
    from usmtl.data.manifest import Box

    folder = tmp_path_factory.mktemp("audit")
    run = folder / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(config_from_dict(tiny_config_dict(data={"inpaint_marks": True})),
                str(run / "config.yaml"))
    tiny_model.save(run / "checkpoints" / "best.keras")
    rows = []
    for i in range(6):
        image, _, _ = marked_scan(seed=i)
        _, lesion = synthetic_scan(seed=i)
        cv2.imwrite(str(folder / f"scan{i}.png"), image)
        cv2.imwrite(str(folder / f"mask{i}.png"), lesion.astype(np.uint8) * 255)
        box = Box.from_mask(lesion)
        rows.append({"image": f"scan{i}.png", "mask": f"mask{i}.png", "patient_id": f"p{i // 2}",
                     "malignant": i % 2, "alnm": 0, "aln_count": 0, "x_min": box.x_min,
                     "y_min": box.y_min, "x_max": box.x_max, "y_max": box.y_max})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return run, folder / "manifest.csv"


def test_shortcut_audit_of_a_tiny_model_writes_its_numbers(audit_run, tmp_path):
    import json

    from usmtl.explain import shortcut_audit
    from usmtl.explain.audit import ABOVE, DRAWN, NOT_DRAWN, UNIFORM

    run, manifest = audit_run
    result = shortcut_audit(str(run), str(manifest), None, None, out=str(tmp_path / "audit"),
                            n_boot=50)
    frame = result["images"]
    assert len(frame) == 6 * 3 and set(frame["task"]) == {"malignancy", "alnm", "aln_ge_2"}
    for column in ("probability", "cam_in_box", "box_fraction", "cam_in_mask", "mask_fraction",
                   "cam_on_marks", "marks_fraction", "marks_image_share"):
        values = frame[column].dropna()
        assert len(values) and values.between(0, 1).all(), column
    assert (frame["marks_fraction"] > 0).all()  # every RoI holds a caliper
    assert frame["mask_fraction"].lt(frame["box_fraction"]).all()  # the ellipse in its box
    table = result["summary"]
    assert set(table["region"]) <= {"box", "mask", "marks"} and len(table)
    assert set(table["verdict"]) <= {UNIFORM, ABOVE, DRAWN, NOT_DRAWN}
    assert np.isfinite(table["ratio"]).all() and (table["ratio"] > 0).all()
    assert all(w.startswith("WARNING: ") for w in result["warnings"])
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["settings"]["inpaint_marks"] is True and saved["settings"]["n_images"] == 6
    assert saved["warnings"] == result["warnings"]
    assert set(saved["tasks"]) == {"malignancy", "alnm", "aln_ge_2"}
    assert saved["tasks"]["malignancy"]["roi_with_marks"] == 1.0
    text = (tmp_path / "audit" / "audit.md").read_text()
    assert "| task | region | images |" in text and "## Warnings" in text
    assert len(pd.read_csv(tmp_path / "audit" / "audit.csv")) == 18


def test_explain_audit_command(audit_run, tmp_path):
    run, manifest = audit_run
    result = invoke("explain", run, manifest, "--task", "all", "--audit", "--bootstrap", "20",
                    "--limit", "4", "--out", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    assert "| task | region | images |" in result.output and "maps all zero" in result.output
    assert "Wrote " in result.output and (tmp_path / "cli" / "audit.md").is_file()
    assert len(pd.read_csv(tmp_path / "cli" / "audit.csv")) == 4 * 3
    result = invoke("explain", run, manifest, "--task", "all", "--audit", "--compare", run,
                    "--out", tmp_path / "bad")
    assert result.exit_code == 2 and "Received: --compare" in result.output
    assert not (tmp_path / "bad").exists()

    from usmtl.explain import explain

    frame = explain(str(run), str(manifest), ["alnm"], limit=2, out=str(tmp_path / "fn"),
                    audit=True, n_boot=0)
    assert len(frame) == 2 and (tmp_path / "fn" / "audit.json").is_file()
    assert not list((tmp_path / "fn").glob("*.npy"))  # the audit instead of heatmaps


def test_export_of_an_inpainting_run_says_the_graph_does_not_inpaint(audit_run, tmp_path):
    import json

    from usmtl.export import export

    run, manifest = audit_run
    said = []
    result = export(str(run), "savedmodel", str(tmp_path / "exports"), manifest=str(manifest),
                    images=3, calibration_images=1, latency_runs=1, log=said.append)
    assert result.passed  # parity crops are inpainted for both sides
    assert any(line.startswith("WARNING: the run was trained with data.inpaint_marks")
               for line in said)
    meta = json.loads((Path(result.sidecar) / "usmtl_export.json").read_text())
    assert meta["inpaint_marks"]["trained_with"] is True
    assert meta["inpaint_marks"]["in_graph"] is False
    assert "NOT inpaint" in meta["inpaint_marks"]["note"]
