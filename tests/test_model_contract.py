"""The contract every registered backbone keeps, and the registry that lists them.

The model tests are parameterised over :func:`usmtl.registry.backbone_names`, so a
newly registered backbone is covered without editing this file. Each backbone is built at
the smallest ``data.image_size`` it allows (the cheapest model that must still work), with
two heads (malignancy -> alnm, with the hierarchical hinge) and augmentation on, and must:
build; take a training step with a finite loss in float32 (through the traced loop of
``usmtl fit``) and in mixed_float16 (eagerly, for time); survive ``.keras`` save and load with
identical predictions; give Grad-CAM its default layer; and export to a SavedModel whose
signature matches the Keras model. Those tests are marked slow (about two minutes of CPU,
mostly ResNet50 and EfficientNet); the registry and config tests above them are not.
"""

import doctest

import numpy as np
import pytest

from tests.conftest import tiny_config_dict
from usmtl.config import config_from_dict
from usmtl.errors import ConfigError
from usmtl.registry import (NORMALIZATION_MODES, backbone_names, get_backbone,
                                  register_backbone, unregister_backbone)

TASKS = [
    {"name": "malignancy", "label": "malignant"},
    {"name": "alnm", "label": "alnm", "parent": "malignancy", "cohort": "parent_positive"},
]
HEADS = ("malignancy", "alnm")
BATCH = 4


def contract_config(backbone: str, size: int | None = None):
    """The smallest config a backbone allows: its minimum size, no pretrained weights."""
    size = get_backbone(backbone).min_input_size if size is None else size
    return config_from_dict(tiny_config_dict(
        name=f"contract_{backbone}", tasks=TASKS,
        data={"image_size": size, "augment": {"enabled": True}},
        model={"backbone": backbone, "weights": "none", "small_widths": [8, 16],
               "small_blocks": [1, 1], "hinge": True},
        train={"batch_size": BATCH, "learning_rate": 1e-3}))


def batch(size: int, seed: int = 0):
    """A random uint8 batch with labels and the sample weights the pipeline would give:
    ALNM is known (weight 1) for the malignant images only."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (BATCH, size, size, 3), dtype=np.uint8)
    malignant = np.array([1, 0, 1, 0], np.float32)
    alnm = np.array([1, 0, 0, 0], np.float32)
    y = {"malignancy": malignant.reshape(-1, 1), "alnm": alnm.reshape(-1, 1)}
    weights = {"malignancy": np.ones(BATCH, np.float32), "alnm": malignant.copy()}
    return images, y, weights


def train_one_step(model, cfg, images, y, weights, eager: bool = False) -> float:
    """One step, compiled as ``usmtl fit`` compiles; returns the loss.

    ``eager`` false: through the training loop that ``usmtl fit`` runs (a ``tf.function``).
    ``eager`` true: Keras' own ``train_step`` run eagerly, the same forward pass, losses,
    loss scaling and update, without tracing: tracing and optimising the step's graph takes
    about 15 s of CPU for ResNet50 or EfficientNet, the eager step 1 to 2 s.
    """
    import tensorflow as tf

    from usmtl.training.compile import compile_for_training
    from usmtl.training.loop import train

    # No XLA: compiling ResNet50's step would dominate this test on a CPU, and XLA is
    # covered by the training tests.
    compile_for_training(model, cfg, steps_per_epoch=1, jit_compile=False)
    if eager:
        model.run_eagerly = True
        return float(model.train_on_batch(images, y, weights, return_dict=True)["loss"])
    dataset = tf.data.Dataset.from_tensors((images, y, weights)).repeat()
    history = train(model, dataset, tf.distribute.get_strategy(), epochs=1, steps_per_epoch=1,
                    verbose=0)
    return float(history.history["loss"][0])


def predict(model, images):
    """Inference-mode outputs, eagerly: tracing a predict function for ResNet50 or
    EfficientNet costs seconds, an eager forward pass of four small images does not."""
    out = model(np.asarray(images, np.float32), training=False)
    return {name: np.asarray(out[name], np.float64) for name in HEADS}


@pytest.fixture(scope="module", params=backbone_names())
def trained(request):
    """``(backbone, cfg, float32 model after one training step, its loss, weights before)``,
    shared by the tests of one backbone (building and stepping ResNet50 is the slow part)."""
    import keras

    from usmtl.model.multitask import build_model

    keras.utils.set_random_seed(0)
    cfg = contract_config(request.param)
    model = build_model(cfg)
    before = [np.array(v) for v in model.trainable_variables]
    loss = train_one_step(model, cfg, *batch(cfg.data.image_size))
    return request.param, cfg, model, loss, before


# ---------------------------------------------------------------------------------------
# The registry and the config checks it drives (no model built)
# ---------------------------------------------------------------------------------------


def test_registry_docstring_examples_run():
    import usmtl.registry as registry

    result = doctest.testmod(registry, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 5, result


@pytest.mark.parametrize("name", backbone_names())
def test_registry_entry_is_complete(name):
    info = get_backbone(name)
    assert info.name == name
    assert info.normalization in NORMALIZATION_MODES
    assert isinstance(info.min_input_size, int) and info.min_input_size >= 1
    assert isinstance(info.pretrained_weights, bool) and info.description
    assert callable(info.load_builder())


def test_unknown_backbone_lists_the_registered_ones():
    with pytest.raises(ConfigError) as info:
        get_backbone("vgg16")
    message = str(info.value)
    assert message.endswith("Received: 'vgg16'")
    assert all(repr(name) in message for name in backbone_names())
    with pytest.raises(ConfigError) as info:
        contract_config("vgg16", size=32)
    message = str(info.value)
    assert "model.backbone" in message and message.endswith("Received: 'vgg16'")
    assert all(repr(name) in message for name in backbone_names())


def test_config_checks_image_size_against_the_backbone_minimum():
    register_backbone("contract_wide", "usmtl.model.backbones:build_resnet_small",
                      normalization="unit", pretrained_weights=False, min_input_size=64)
    try:
        assert "contract_wide" in backbone_names()
        with pytest.raises(ConfigError) as info:
            contract_config("contract_wide", size=48)
        message = str(info.value)
        assert "data.image_size" in message and "64" in message
        assert message.endswith("Received: 48")
        assert contract_config("contract_wide", size=64).data.image_size == 64
    finally:
        unregister_backbone("contract_wide")
    assert "contract_wide" not in backbone_names()


@pytest.mark.parametrize("name", backbone_names())
def test_config_checks_imagenet_weights_exist(name):
    data = tiny_config_dict(tasks=TASKS, data={"image_size": get_backbone(name).min_input_size},
                            model={"backbone": name, "weights": "imagenet"})
    if get_backbone(name).pretrained_weights:
        assert config_from_dict(data).model.weights == "imagenet"
    else:
        with pytest.raises(ConfigError) as info:
            config_from_dict(data)
        message = str(info.value)
        assert "model.weights" in message and message.endswith("Received: 'imagenet'")


class _WeightsRequested(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("name", backbone_names())
def test_pretrained_weights_flag_matches_the_builder(name, monkeypatch):
    """``pretrained_weights`` is what the builder does with ``weights: imagenet``: fetch
    them (stopped here, offline, at Keras' download call) or refuse with a ConfigError."""
    from keras.src.utils import file_utils

    from usmtl.model.multitask import build_model

    def no_download(*args, **kwargs):
        raise _WeightsRequested(args[0] if args else kwargs.get("fname"))

    monkeypatch.setattr(file_utils, "get_file", no_download)
    cfg = contract_config(name)
    cfg.model.weights = "imagenet"  # after validation, which refuses it without weights
    expected = _WeightsRequested if get_backbone(name).pretrained_weights else ConfigError
    with pytest.raises(expected):
        build_model(cfg)


def test_register_rejects_a_taken_name_and_bad_fields():
    good = dict(normalization="unit", pretrained_weights=False, min_input_size=32)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet50", "usmtl.model.backbones:build_resnet50", **good)
    assert get_backbone("resnet50").normalization == "caffe"  # not overwritten
    bad = [
        ("bad name", "m:f", good),
        ("contract_x", "no_colon", good),
        ("contract_x", 42, good),
        ("contract_x", "m:f", {**good, "normalization": "imagenet"}),
        ("contract_x", "m:f", {**good, "min_input_size": 0}),
        ("contract_x", "m:f", {**good, "min_input_size": 32.0}),
    ]
    for name, builder, fields in bad:
        with pytest.raises(ValueError, match="Received"):
            register_backbone(name, builder, **fields)
    assert "contract_x" not in backbone_names() and "bad name" not in backbone_names()


def test_a_builder_that_cannot_be_imported_is_a_config_error():
    info = register_backbone("contract_missing", "usmtl.no_such_module:build",
                             normalization="unit", pretrained_weights=False, min_input_size=32)
    try:
        with pytest.raises(ConfigError, match="contract_missing.*Received: 'usmtl.no_such_module"):
            info.load_builder()
    finally:
        unregister_backbone("contract_missing")


# ---------------------------------------------------------------------------------------
# The model contract, per registered backbone
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_builds_at_its_minimum_size(trained):
    import keras

    from usmtl.explain.gradcam import conv_layers
    from usmtl.model.multitask import AUGMENT_LAYER, NORMALIZATION_LAYER, last_conv_layer

    name, cfg, model, _, _ = trained
    size = get_backbone(name).min_input_size
    assert tuple(model.inputs[0].shape) == (None, size, size, 3)
    assert {k: tuple(v.shape) for k, v in model.output.items()} == {h: (None, 1) for h in HEADS}
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert model.get_layer(NORMALIZATION_LAYER).mode == get_backbone(name).normalization
    assert AUGMENT_LAYER in names and "alnm_head" in names  # the child's head before its hinge
    assert sorted(model.output_names) == sorted(HEADS)
    # Backbone layers live in the top-level graph (Grad-CAM reaches inside), not nested.
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    features = model.get_layer(last_conv_layer(model)).output
    assert len(features.shape) == 4 and min(features.shape[1:3]) >= 1
    assert last_conv_layer(model) in conv_layers(model)
    assert NORMALIZATION_LAYER not in conv_layers(model)


@pytest.mark.slow
def test_one_float32_training_step(trained):
    name, cfg, model, loss, before = trained
    assert np.isfinite(loss) and loss > 0
    after = [np.array(v) for v in model.trainable_variables]
    assert all(np.isfinite(a).all() for a in after)
    changed = {v.path for v, a, b in zip(model.trainable_variables, after, before)
               if not np.array_equal(a, b)}
    from usmtl.model.multitask import head_layer

    heads = [head_layer(model, h) for h in HEADS]
    for head in heads:  # both heads, ALNM through its sample-weighted BCE and the hinge
        assert head.kernel.path in changed
    head_paths = {h.kernel.path for h in heads} | {h.bias.path for h in heads}
    assert changed - head_paths, f"{name}: the step left every backbone weight unchanged"


@pytest.mark.slow
@pytest.mark.parametrize("name", backbone_names())
def test_one_mixed_float16_training_step(name):
    import keras

    from usmtl.model.multitask import build_model, last_conv_layer
    from usmtl.model.precision import precision_policy

    keras.utils.set_random_seed(0)
    cfg = contract_config(name)
    with precision_policy("mixed_float16"):
        model = build_model(cfg)
        # Eager: the float32 step already covers the traced loop for this backbone, and
        # test_model covers a traced mixed-precision step.
        loss = train_one_step(model, cfg, *batch(cfg.data.image_size, seed=1), eager=True)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.get_layer(last_conv_layer(model)).compute_dtype == "float16"
    for layer in (*HEADS, "alnm_head"):
        assert model.get_layer(layer).compute_dtype == "float32"
    assert np.isfinite(loss) and loss > 0
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # Loss scaling may skip a step whose float16 gradients overflow, never write inf/NaN.
    assert all(np.isfinite(np.array(v)).all() for v in model.trainable_variables)


@pytest.mark.slow
def test_keras_file_round_trip_gives_identical_predictions(trained, tmp_path):
    import keras

    from usmtl.model.multitask import last_conv_layer

    name, cfg, model, _, _ = trained
    images = batch(cfg.data.image_size, seed=2)[0]
    expected = predict(model, images)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    got = predict(loaded, images)
    for head in HEADS:
        np.testing.assert_allclose(got[head], expected[head], atol=1e-6, rtol=0)
    assert last_conv_layer(loaded) == last_conv_layer(model)


@pytest.mark.slow
def test_gradcam_finds_its_default_layer(trained):
    from usmtl.explain.gradcam import GradCam
    from usmtl.model.multitask import last_conv_layer

    name, cfg, model, _, _ = trained
    size = cfg.data.image_size
    image = batch(size, seed=3)[0][:1]
    cam = GradCam(model)
    assert cam.layer == last_conv_layer(model) and sorted(cam.tasks) == sorted(HEADS)
    maps, probs = cam(image)
    expected = predict(model, image)
    for head in HEADS:
        assert maps[head].shape == (1, size, size) and maps[head].dtype == np.float32
        assert np.isfinite(maps[head]).all()
        assert maps[head].min() >= 0.0 and maps[head].max() <= 1.0
        # The CAM scores the logit it recomputes from the head: it must be the model's.
        np.testing.assert_allclose(probs[head], expected[head][:, 0], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_savedmodel_signature_matches_keras(trained, tmp_path):
    import tensorflow as tf

    from usmtl.export.graph import heads_model, resize_like_roi, write_savedmodel

    name, cfg, model, _, _ = trained
    size = cfg.data.image_size
    infer = heads_model(model, list(HEADS))
    write_savedmodel(infer, list(HEADS), size, str(tmp_path / "savedmodel"))
    signature = tf.saved_model.load(str(tmp_path / "savedmodel")).signatures["serving_default"]
    rng = np.random.default_rng(4)
    # At the model's size (no resampling), larger (area) and smaller (bilinear) crops.
    for shape in [(size, size), (size + 13, size + 7), (size - 5, size - 9)]:
        crops = rng.integers(0, 256, (2, *shape, 3), dtype=np.uint8)
        out = signature(image=tf.constant(crops))
        assert sorted(out) == sorted(HEADS)
        pixels = resize_like_roi(tf.constant(crops), size).numpy()
        if shape == (size, size):
            np.testing.assert_array_equal(pixels, crops.astype(np.float32))
        expected = predict(model, pixels)
        for head in HEADS:
            assert out[head].shape == (2,)
            np.testing.assert_allclose(out[head].numpy(), expected[head][:, 0], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_models_saved_with_the_old_normalization_name_still_load(tmp_path, monkeypatch):
    """Before EfficientNet could build, the input scaling layer was named "normalization";
    such files must load, and Grad-CAM must still skip that layer."""
    import keras

    import usmtl.model.multitask as multitask
    from usmtl.explain.gradcam import GradCam, conv_layers

    cfg = contract_config("resnet_small")
    with monkeypatch.context() as patch:
        patch.setattr(multitask, "NORMALIZATION_LAYER", "normalization")
        old = multitask.build_model(cfg)
    assert "normalization" in [layer.name for layer in old.layers]
    old.save(tmp_path / "old.keras")
    loaded = keras.models.load_model(tmp_path / "old.keras")
    images = batch(cfg.data.image_size, seed=5)[0]
    expected, got = predict(old, images), predict(loaded, images)
    for head in HEADS:
        np.testing.assert_allclose(got[head], expected[head], atol=1e-6, rtol=0)
    assert "normalization" not in conv_layers(loaded)
    assert GradCam(loaded).layer == multitask.last_conv_layer(loaded) == "stage2_block1_out"
