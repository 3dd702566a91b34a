"""usmtl bench (pipeline, train on TF and on JAX without TensorFlow, predict), the cache
rule and the RoiAugment layer. Speed is measured by the benchmarks, never asserted here."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, invoke, tiny_config_dict, write_config

keras = pytest.importorskip("keras")


# ---------------------------------------------------------------------------------------
# RoiAugment
# ---------------------------------------------------------------------------------------


def images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("uint8")


def test_augment_is_identity_at_inference():
    from usmtl.model.augment import RoiAugment

    layer = RoiAugment(seed=1)
    x = images()
    for training in (None, False):
        out = np.asarray(layer(x, training=training))
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, x.astype("float32"))


def test_augment_in_training_keeps_shape_range_and_varies():
    from usmtl.model.augment import RoiAugment

    layer = RoiAugment(seed=1)
    x = images()
    first = np.asarray(layer(x, training=True))
    second = np.asarray(layer(x, training=True))
    assert first.shape == x.shape and first.dtype == np.float32
    assert first.min() >= 0 and first.max() <= 255
    assert not np.allclose(first, second)  # a new draw per call
    assert not np.allclose(first[0], first[1] * 0 + first[0].mean())  # not a constant image
    # Each image of the batch gets its own parameters.
    same = [np.allclose(first[i], x[i].astype("float32"), atol=1) for i in range(len(x))]
    assert not all(same)


def test_augment_without_random_ops_is_exact_and_flips_mirror():
    from usmtl.model.augment import RoiAugment

    x = images(n=8)
    still = RoiAugment(crop_scale=(1, 1), crop_aspect=(1, 1), horizontal_flip=False,
                       brightness=0, contrast=0, gamma=(1, 1))
    np.testing.assert_allclose(np.asarray(still(x, training=True)), x, atol=0.01)
    flips = RoiAugment(crop_scale=(1, 1), crop_aspect=(1, 1), horizontal_flip=True,
                       brightness=0, contrast=0, gamma=(1, 1), seed=3)
    out = np.asarray(flips(x, training=True))
    mirrored = [np.allclose(out[i], x[i, :, ::-1], atol=0.01) for i in range(len(x))]
    kept = [np.allclose(out[i], x[i], atol=0.01) for i in range(len(x))]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_augment_serializes_and_lives_in_the_model(tmp_path, tiny_config):
    from usmtl.model.augment import RoiAugment
    from usmtl.model.multitask import AUGMENT_LAYER, build_model

    layer = RoiAugment(crop_scale=(0.5, 0.9), contrast=0.2, seed=7)
    clone = RoiAugment.from_config(layer.get_config())
    assert clone.crop_scale == [0.5, 0.9] and clone.contrast == 0.2 and clone.seed == 7
    model = build_model(tiny_config)
    assert model.layers[1].name == AUGMENT_LAYER
    x = images(n=3)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer(AUGMENT_LAYER), RoiAugment)
    after = loaded.predict(x.astype("float32"), verbose=0)  # float32 0..255 works as well
    for name in before:
        np.testing.assert_allclose(after[name], before[name], atol=1e-6)


def test_augment_compiles_with_xla_on_tensorflow():
    tf = pytest.importorskip("tensorflow")
    from usmtl.model.augment import RoiAugment

    layer = RoiAugment(seed=0)
    fn = tf.function(lambda x: layer(x, training=True), jit_compile=True,
                     input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.uint8)])
    out = fn(tf.constant(images()))
    assert tuple(out.shape) == (6, 32, 32, 3)


# ---------------------------------------------------------------------------------------
# Cache rule
# ---------------------------------------------------------------------------------------


def test_cache_auto_uses_memory_when_it_fits_else_a_file(tmp_path):
    from usmtl.data.pipeline import cache_bytes, resolve_cache

    need = cache_bytes(1000, 64)
    assert need == 1000 * 64 * 64 * 3
    assert resolve_cache("auto", 1000, 64, str(tmp_path), "train", available=10 * need) == "memory"
    path = resolve_cache("auto", 1000, 64, str(tmp_path), "train", available=need)
    assert path == os.path.join(str(tmp_path), "train_64px")
    assert resolve_cache("disk", 10, 64, str(tmp_path), "val") == os.path.join(str(tmp_path), "val_64px")
    assert resolve_cache("auto", 1000, 64, None, available=need) == "none"
    assert resolve_cache("memory", 10, 64) == "memory" and resolve_cache("none", 10, 64) == "none"


def test_disk_cache_pipeline_delivers_uint8_batches(tmp_path, phantoms):
    from usmtl.config import config_from_dict
    from usmtl.data.manifest import read_manifest
    from usmtl.data.pipeline import make_dataset

    cfg = config_from_dict(tiny_config_dict(data={"cache": "disk"}))
    manifest = read_manifest(str(phantoms))
    paths, boxes = manifest.image_paths()[:20], manifest.boxes()[:20]
    labels = {"malignancy": np.zeros(20, np.float32)}
    ds = make_dataset(paths, boxes, labels, cfg.data, 8, training=True, cache_dir=str(tmp_path),
                      name="train")
    for _ in range(2):
        batches = list(ds)
        assert len(batches) == 2
        x, y, w = batches[0]
        assert x.dtype.name == "uint8" and tuple(x.shape) == (8, 32, 32, 3)
    assert any(name.startswith("train_32px") for name in os.listdir(tmp_path))


# ---------------------------------------------------------------------------------------
# Benchmarks
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_pipeline_reports_positive_rates_and_json(tmp_path, phantoms):
    out = tmp_path / "pipeline.json"
    config = write_config(tmp_path / "c.yaml")
    result = invoke("bench", "pipeline", "--manifest", phantoms, "--config", config, "--limit", 40,
                    "--epochs", 1, "--batch-size", 8, "--out", out)
    assert result.exit_code == 0, result.output
    assert "plain loop" in result.output and "peak host RSS" in result.output
    data = json.loads(out.read_text())
    for key in ("plain_loop_images_per_s", "cold_images_per_s", "cached_images_per_s",
                "cached_augmented_images_per_s", "cached_vs_plain"):
        assert data[key] > 0, key
    assert data["images"] == 40 and data["image_size"] == 32 and data["cache"] == "memory"
    assert data["memory"]["host_peak_rss_mb"] > 0 and "machine" in data
    assert len(data["rows"]) == 4


@pytest.mark.slow
def test_bench_train_on_tensorflow(tmp_path):
    out = tmp_path / "train.json"
    config = write_config(tmp_path / "c.yaml")
    result = invoke("bench", "train", "--backend", "tensorflow", "--config", config,
                    "--batch-size", 8, "--steps", 2, "--warmup", 1, "--no-jit", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["backend"] == "tensorflow" and data["images_per_s"] > 0
    assert data["batch_size"] == 8 and data["image_size"] == 32 and data["jit_compile"] is False
    assert data["tasks"] == ["malignancy", "alnm", "aln_ge_2"] and data["hinge"]
    assert data["memory"]["host_peak_rss_mb"] > 0


BLOCK_TENSORFLOW = r"""
import importlib.abc, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name} is blocked: this machine has no TensorFlow")
        return None

sys.meta_path.insert(0, NoTensorFlow())
from click.testing import CliRunner
from usmtl.cli import main
result = CliRunner().invoke(main, sys.argv[1:], catch_exceptions=False)
print(result.output)
assert result.exit_code == 0, result.output
print("TF_IMPORTED", "tensorflow" in sys.modules)
"""


@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True])
def test_bench_train_on_jax_without_tensorflow(tmp_path, on_device):
    pytest.importorskip("jax")
    out = tmp_path / "train.json"
    config = write_config(tmp_path / "c.yaml")
    args = ["bench", "train", "--backend", "jax", "--config", config, "--batch-size", "8",
            "--steps", "2", "--warmup", "1", "--out", str(out)]
    if on_device:
        args.append("--data-on-device")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW, *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "TF_IMPORTED False" in proc.stdout
    data = json.loads(out.read_text())
    assert data["backend"] == "jax" and data["images_per_s"] > 0
    assert data["data_on_device"] is on_device and data["jit_compile"] is True
    assert data["machine"]["keras_backend"] == "jax" and "jax" in data["machine"]
    assert "host_peak_rss_mb" in data["memory"]


@pytest.mark.slow
def test_bench_predict_keras_savedmodel_and_tflite(tmp_path, tiny_config):
    tf = pytest.importorskip("tensorflow")
    from usmtl.bench import bench_predict
    from usmtl.config import save_config
    from usmtl.model.multitask import build_model

    model = build_model(tiny_config)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(tiny_config, str(run / "config.yaml"))
    model.save(run / "checkpoints" / "best.keras")

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="image")])
    def serve(image):
        return model(tf.cast(image, tf.float32), training=False)

    module = tf.Module()
    module.model = model
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    (tmp_path / "m.tflite").write_bytes(converter.convert())

    result = bench_predict(str(run), str(tmp_path / "sm"), str(tmp_path / "m.tflite"),
                           batch_size=4, batches=2, runs=3)
    kinds = [row["model"].split()[0] for row in result["rows"]]
    assert kinds == ["keras", "savedmodel", "tflite"]
    for row in result["rows"]:  # every kind, TFLite included (a batch-1 interpreter)
        assert row["images_per_s"] > 0 and row["single_image_ms"] > 0
    assert result["image_size"] == 32
