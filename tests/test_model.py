"""The hierarchical hinge against a NumPy reference, and the model's structure."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from usmtl.config import config_from_dict  # noqa: E402
from usmtl.model.hinge import HierarchicalHinge, HingedChild, hinge_value  # noqa: E402
from usmtl.model.multitask import build_model, head_layer, last_conv_layer  # noqa: E402
from tests.conftest import tiny_config_dict  # noqa: E402


def numpy_hinge(probs, edges, margin):
    """Reference: sum over edges of mean(max(0, p_child - p_parent - m)) and its gradient."""
    value = 0.0
    grads = {name: np.zeros_like(p) for name, p in probs.items()}
    for parent, child in edges:
        gap = probs[child] - probs[parent] - margin
        value += np.mean(np.maximum(gap, 0.0))
        active = (gap > 0).astype(float) / gap.size  # the hinge masks inactive rows
        grads[child] += active
        grads[parent] -= active
    return value, grads


CASES = [
    # one edge: active, inactive inside the margin, inactive below
    ({"a": [0.2, 0.5, 0.9], "b": [0.9, 0.55, 0.1]}, [("a", "b")], 0.1),
    # zero margin: any excess counts
    ({"a": [0.2, 0.5], "b": [0.3, 0.5]}, [("a", "b")], 0.0),
    # a chain: 'b' is child of 'a' and parent of 'c'
    ({"a": [0.1, 0.8, 0.5, 0.3], "b": [0.6, 0.2, 0.5, 0.9], "c": [0.9, 0.9, 0.1, 0.95]},
     [("a", "b"), ("b", "c")], 0.1),
    # two children of one parent
    ({"a": [0.3, 0.3], "b": [0.9, 0.0], "c": [0.0, 0.7]}, [("a", "b"), ("a", "c")], 0.05),
    # every row within the margin: zero loss, zero gradient
    ({"a": [0.5, 0.5], "b": [0.55, 0.45]}, [("a", "b")], 0.1),
]


@pytest.mark.parametrize("probs,edges,margin", CASES)
def test_hinge_value_and_gradient_match_numpy(probs, edges, margin):
    probs_np = {k: np.array(v, float).reshape(-1, 1) for k, v in probs.items()}
    expected_value, expected_grads = numpy_hinge(probs_np, edges, margin)
    variables = {k: tf.Variable(v, dtype=tf.float32) for k, v in probs_np.items()}
    with tf.GradientTape() as tape:
        value = hinge_value(variables, edges, margin)
    grads = tape.gradient(value, variables)
    np.testing.assert_allclose(float(value), expected_value, atol=1e-6)
    for name in probs_np:
        got = np.zeros_like(probs_np[name]) if grads[name] is None else grads[name].numpy()
        np.testing.assert_allclose(got, expected_grads[name], atol=1e-6)


def test_hinge_layer_adds_weighted_loss_and_passes_inputs_through():
    probs = {"a": np.array([[0.2], [0.6]], "float32"), "b": np.array([[0.9], [0.1]], "float32")}
    layer = HierarchicalHinge([("a", "b")], margin=0.1, weight=0.05)
    out = layer(probs)
    np.testing.assert_allclose(out["a"], probs["a"])
    np.testing.assert_allclose(out["b"], probs["b"])
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), 0.05 * (0.6 / 2), atol=1e-6)
    clone = HierarchicalHinge.from_config(layer.get_config())
    assert clone.edges == [("a", "b")] and clone.margin == 0.1 and clone.weight == 0.05


def test_hinged_child_adds_its_edge_loss_and_passes_the_child_through():
    parent = np.array([[0.2], [0.6]], "float32")
    child = np.array([[0.9], [0.1]], "float32")
    layer = HingedChild(margin=0.1, weight=0.05)
    np.testing.assert_allclose(layer([parent, child]), child)
    np.testing.assert_allclose(float(layer.losses[0]), 0.05 * (0.6 / 2), atol=1e-6)
    clone = HingedChild.from_config(layer.get_config())
    assert (clone.margin, clone.weight, clone.parent_gradient) == (0.1, 0.05, True)


def test_outputs_are_named_after_tasks_and_hinge_is_in_losses(tiny_config):
    model = build_model(tiny_config)
    assert sorted(model.output_names) == ["aln_ge_2", "alnm", "malignancy"]
    assert set(model.output.keys()) == {"malignancy", "alnm", "aln_ge_2"}
    for name in ("malignancy", "alnm", "aln_ge_2"):
        head = head_layer(model, name)
        assert isinstance(head, keras.layers.Dense) and head.units == 1
    assert isinstance(model.get_layer("malignancy"), keras.layers.Dense)
    assert isinstance(model.get_layer("alnm"), HingedChild)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (4, 1) for k in out}
    assert len(model.losses) == 2  # one hinge term per edge, added inside the layers' call
    probs = {k: np.asarray(v) for k, v in out.items()}
    expected = 0.05 * hinge_value(probs, [("malignancy", "alnm"), ("alnm", "aln_ge_2")], 0.1)
    np.testing.assert_allclose(float(sum(model.losses)), float(expected), atol=1e-6)
    assert last_conv_layer(model) == "stage2_block1_out"


def test_no_hinge_layer_without_hinge_or_edges():
    cfg = config_from_dict(tiny_config_dict(model={"hinge": False}))
    model = build_model(cfg)
    assert not any(isinstance(layer, (HingedChild, HierarchicalHinge)) for layer in model.layers)
    assert sorted(model.output_names) == ["aln_ge_2", "alnm", "malignancy"]
    model(np.zeros((2, 32, 32, 3), "float32"))
    assert len(model.losses) == 0


def test_backbone_layers_live_in_the_top_level_graph():
    """ResNet50 is built with input_tensor, so Grad-CAM can reach conv5_block3_out."""
    cfg = config_from_dict(tiny_config_dict(data={"image_size": 64},
                                            model={"backbone": "resnet50", "weights": "none"}))
    model = build_model(cfg)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert last_conv_layer(model) == "conv5_block3_out"
    model.get_layer("conv5_block3_out")


def test_mixed_precision_heads_and_hinge_are_float32():
    from usmtl.model.precision import precision_policy

    with precision_policy("mixed_float16"):
        model = build_model(config_from_dict(tiny_config_dict()))
    assert model.get_layer("stage1_block1_conv1").compute_dtype == "float16"
    for name in ("malignancy", "alnm", "aln_ge_2", "alnm_head", "aln_ge_2_head"):
        assert model.get_layer(name).compute_dtype == "float32"
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    out = model(x)
    assert all(v.dtype == "float32" for v in out.values())
    assert model.losses[0].dtype == "float32"
    # One optimisation step: the BCE terms and the HL sum without a dtype clash.
    model.compile(optimizer="adam", loss={k: "binary_crossentropy" for k in out})
    y = {k: np.ones((8, 1), "float32") for k in out}
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_unknown_backbone_weights_file_is_a_clear_error(tmp_path):
    from usmtl.errors import ConfigError

    cfg = config_from_dict(tiny_config_dict(model={"backbone": "resnet50",
                                                   "weights": str(tmp_path / "nope.h5")}))
    with pytest.raises(ConfigError, match="nope.h5"):
        build_model(cfg)


def test_model_survives_save_and_load(tmp_path, tiny_config):
    model = build_model(tiny_config)
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    after = loaded.predict(x, verbose=0)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], atol=1e-6)
    assert loaded.get_layer("alnm").margin == tiny_config.model.hinge_margin
    assert sorted(loaded.output_names) == ["aln_ge_2", "alnm", "malignancy"]


@pytest.mark.slow
def test_backbone_weights_from_a_local_file(tmp_path):
    """Offline machines pass a weights file instead of 'imagenet'."""
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "resnet50_notop.weights.h5"
    source.save_weights(path)
    cfg = config_from_dict(tiny_config_dict(data={"image_size": 64},
                                            model={"backbone": "resnet50", "weights": str(path)}))
    model = build_model(cfg)
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  source.get_layer("conv1_conv").get_weights()[0])
