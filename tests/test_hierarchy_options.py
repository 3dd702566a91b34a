"""The multi-task controls of issue 22: a task's loss weight, the hinge without gradient into
the parent, and the conditional child p_child = p_parent * q (Chen et al. 2020)."""

import numpy as np
import pytest

from tests.conftest import PAPER_TASKS, tiny_config_dict

TWO = PAPER_TASKS[:2]


def _cfg(**model):
    from usmtl.config import config_from_dict

    return config_from_dict(tiny_config_dict(tasks=[dict(t) for t in TWO],
                                             data={"image_size": 32}, model=model))


def _batch(n=8, seed=0):
    from usmtl.data.targets import targets

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (n, 32, 32, 3)).astype("float32")
    malignant = np.r_[np.ones(n // 2), np.zeros(n - n // 2)]
    child = np.r_[rng.integers(0, 2, n // 2).astype(float), np.full(n - n // 2, np.nan)]
    return x, *targets({"malignancy": malignant, "alnm": child})


def _bce(y, p, w):
    p = np.clip(p.ravel(), 1e-7, 1 - 1e-7)
    losses = -(y.ravel() * np.log(p) + (1 - y.ravel()) * np.log(1 - p))
    return float(np.sum(losses * w) / np.sum(w))


@pytest.mark.parametrize("child_weight", [1.0, 0.5, 0.1, 0.0])
def test_child_loss_weight_scales_its_bce(child_weight):
    from usmtl.model.multitask import build_model
    from usmtl.training.compile import compile_for_training

    cfg = _cfg(hinge=False)
    cfg.tasks[1].loss_weight = child_weight
    model = compile_for_training(build_model(cfg), cfg, steps_per_epoch=1)
    x, y, w = _batch()
    p = model.predict(x, verbose=0)
    loss = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)["loss"]
    expected = _bce(y["malignancy"], p["malignancy"], w["malignancy"]) + \
        child_weight * _bce(y["alnm"], p["alnm"], w["alnm"])
    assert loss == pytest.approx(expected, rel=1e-4)


def _hinge_gradients(parent_gradient: bool):
    """Gradients of the hinge term alone w.r.t. the two heads' kernels."""
    import tensorflow as tf

    import keras

    from usmtl.model.multitask import build_model, head_layer

    cfg = _cfg(hinge=True, hinge_margin=0.0, hinge_weight=1.0, hinge_parent_gradient=parent_gradient)
    keras.utils.set_random_seed(0)  # the same weights in both calls
    model = build_model(cfg)
    # Make the child fire above the parent on every image so the hinge is active.
    head_layer(model, "alnm").bias.assign([5.0])
    head_layer(model, "malignancy").bias.assign([-5.0])
    x, _, _ = _batch()
    heads = [head_layer(model, "malignancy").kernel, head_layer(model, "alnm").kernel]
    with tf.GradientTape() as tape:
        model(x, training=False)
        hinge = tf.add_n(model.losses)
    grads = tape.gradient(hinge, heads)
    return [0.0 if g is None else float(tf.reduce_max(tf.abs(g))) for g in grads], float(hinge)


def test_hinge_without_parent_gradient_moves_only_the_child():
    (parent_on, child_on), hinge_on = _hinge_gradients(True)
    (parent_off, child_off), hinge_off = _hinge_gradients(False)
    assert hinge_on == pytest.approx(hinge_off) and hinge_on > 0.9
    assert parent_on > 0 and child_on > 0
    assert parent_off == 0.0 and child_off == pytest.approx(child_on)


def test_conditional_child_is_consistent_and_the_parent_learns_only_from_its_labels(tmp_path):
    import keras
    import tensorflow as tf

    from usmtl.model.multitask import build_model, head_layer
    from usmtl.training.compile import compile_for_training

    cfg = _cfg(child_output="conditional")
    model = compile_for_training(build_model(cfg), cfg, steps_per_epoch=1)
    assert "hierarchical_hinge" not in [layer.name for layer in model.layers]  # it would add 0
    x, y, w = _batch(16)
    model.fit(x, y, sample_weight=w, epochs=2, verbose=0)
    p = model.predict(x, verbose=0)
    q = keras.Model(model.inputs, head_layer(model, "alnm").output).predict(x, verbose=0)
    np.testing.assert_allclose(p["alnm"], p["malignancy"] * q, rtol=1e-5, atol=1e-7)
    assert np.all(p["alnm"] <= p["malignancy"] + 1e-7)
    # The child's BCE sends no gradient into the parent's head.
    parent = model.get_layer("malignancy").kernel
    with tf.GradientTape() as tape:
        out = model(x, training=False)
        loss = tf.reduce_mean(keras.losses.binary_crossentropy(y["alnm"], out["alnm"]))
    assert tape.gradient(loss, parent) is None or float(tf.reduce_max(tf.abs(
        tape.gradient(loss, parent)))) == 0.0
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0)["alnm"], p["alnm"], rtol=1e-6)


def test_conditional_child_grad_cam_explains_its_own_head():
    from usmtl.explain.gradcam import GradCam
    from usmtl.model.multitask import build_model

    model = build_model(_cfg(child_output="conditional"))
    cam = GradCam(model, ["malignancy", "alnm"])
    assert [h.name for h in cam.heads] == ["malignancy", "alnm_conditional"]
    x, _, _ = _batch(2)
    maps, probs = cam(x)
    assert np.isfinite(np.asarray(maps["alnm"])).all() and np.asarray(maps["alnm"]).shape[0] == 2


@pytest.mark.parametrize("override, message", [
    ("tasks.nodes.loss_weight=0.5", "no task named 'nodes'"),
    ("tasks.alnm=0.5", "name a task and its key"),
    ("tasks.alnm.loss_weight=-1", "tasks.alnm.loss_weight must be a finite number >= 0"),
    ("tasks.alnm.loss_weight=.inf", "loss_weight must be a finite number"),
    ("model.child_output=product", "model.child_output must be one of"),
])
def test_task_overrides_are_checked(override, message):
    from usmtl.config import load_config
    from usmtl.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config("paper", [override])


def test_task_override_sets_the_named_task():
    from usmtl.config import load_config

    cfg = load_config("paper", ["tasks.alnm.loss_weight=0.25", "tasks.alnm.cohort=all"])
    assert (cfg.tasks[1].name, cfg.tasks[1].loss_weight, cfg.tasks[1].cohort) == ("alnm", 0.25, "all")
    assert cfg.tasks[0].loss_weight == 1.0


def test_gradient_cosine_of_identical_losses_is_one():
    import keras

    from usmtl.model.multitask import build_model, head_layer
    from usmtl.training.diagnostics import gradient_cosine

    keras.utils.set_random_seed(0)
    model = build_model(_cfg(hinge=False))
    parent, child = head_layer(model, "malignancy"), head_layer(model, "alnm")
    child.set_weights(parent.get_weights())
    x, y, w = _batch(16)
    same_y, same_w = {"malignancy": y["malignancy"], "alnm": y["malignancy"]}, \
        {"malignancy": w["malignancy"], "alnm": w["malignancy"]}
    r = gradient_cosine(model, x, same_y, same_w, "malignancy", "alnm", batch_size=8)
    assert r["batches"] == 2 and r["cosine_mean"] == pytest.approx(1.0, abs=1e-5)
    assert r["norm_ratio_median"] == pytest.approx(1.0, abs=1e-5)
    r = gradient_cosine(model, x, y, w, "malignancy", "alnm", batch_size=8)
    assert r["batches"] == 1  # the second batch has no known child label (benign rows only)
    assert -1.0 <= r["cosine_mean"] <= 1.0
