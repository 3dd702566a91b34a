"""Precise BatchNorm: the moving statistics become the equal-weight average of the batches'
statistics under the final weights, without augmentation."""

import numpy as np
import pytest


def _model():
    import keras

    image = keras.Input((4, 4, 3), name="image")
    x = keras.layers.BatchNormalization(momentum=0.99, name="bn")(image)
    return keras.Model(image, keras.layers.Flatten()(x))


def test_one_batch_gives_its_own_statistics_and_two_their_average():
    from usmtl.training.precise_bn import precise_bn

    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 2.0, (8, 4, 4, 3)).astype("float32")
    b = rng.normal(-1.0, 0.5, (8, 4, 4, 3)).astype("float32")
    model = _model()
    bn = model.get_layer("bn")
    assert precise_bn(model, [a]) == 1
    np.testing.assert_allclose(bn.moving_mean.numpy(), a.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), a.var(axis=(0, 1, 2)), rtol=1e-3)
    precise_bn(model, [a, b])
    expected = (a.mean(axis=(0, 1, 2)) + b.mean(axis=(0, 1, 2))) / 2
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.99  # restored
    precise_bn(model, [b, a, a], max_batches=1)
    np.testing.assert_allclose(bn.moving_mean.numpy(), b.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)


def test_no_batch_is_refused_and_changes_nothing():
    from usmtl.training.precise_bn import precise_bn

    model = _model()
    bn = model.get_layer("bn")
    with pytest.raises(ValueError, match="at least one batch"):
        precise_bn(model, [])
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(3))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(3))


def test_a_trained_run_is_re_estimated_without_augmentation(trained_run, phantoms):
    """The run's augmentation layer is bypassed (the same crops give the same statistics
    twice) and restored afterwards."""
    from usmtl.data.crops import Crops
    from usmtl.data.manifest import read_manifest
    from usmtl.formats import open_model
    from usmtl.model.augment import RoiAugment
    from usmtl.training.precise_bn import _layers, precise_bn

    opened = open_model(str(trained_run))
    model, cfg = opened.model.keras, opened.cfg
    crops = Crops.from_manifest(read_manifest(str(phantoms)), range(32), cfg.data).load()
    import keras

    bns = _layers(model, keras.layers.BatchNormalization)
    assert _layers(model, RoiAugment)  # the tiny config trains with the augmentation layer
    before = [bn.moving_mean.numpy().copy() for bn in bns]
    assert precise_bn(model, [crops[:16], crops[16:]]) == len(bns) > 0
    first = [bn.moving_mean.numpy().copy() for bn in bns]
    precise_bn(model, [crops[:16], crops[16:]])
    for x, y in zip(first, [bn.moving_mean.numpy() for bn in bns]):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)  # deterministic: no augmentation
    assert any(not np.allclose(x, y) for x, y in zip(before, first))
    assert all("call" not in vars(layer) for layer in _layers(model, RoiAugment))


@pytest.mark.parametrize("value, weights, epochs, on", [
    ("auto", "none", 4, True), ("auto", "none", 30, False), ("auto", "imagenet", 4, False),
    (True, "imagenet", 30, True), (False, "none", 2, False),
])
def test_the_auto_rule(value, weights, epochs, on):
    from usmtl.config import config_from_dict, precise_bn_on
    from tests.conftest import tiny_config_dict

    model = {"weights": weights} if weights == "none" else {"weights": weights, "backbone": "resnet50"}
    cfg = config_from_dict(tiny_config_dict(model=model,
                                            train={"epochs": epochs, "precise_bn": value}))
    assert precise_bn_on(cfg) is on


def test_a_bad_value_is_refused():
    from usmtl.config import config_from_dict
    from usmtl.errors import ConfigError
    from tests.conftest import tiny_config_dict

    with pytest.raises(ConfigError, match="train.precise_bn must be auto, true or false"):
        config_from_dict(tiny_config_dict(train={"precise_bn": "yes"}))


def test_a_short_from_scratch_run_keeps_re_estimated_statistics(phantoms, tmp_path):
    """A tiny from-scratch run of one epoch (auto: on) re-estimates its kept model's
    statistics, says so in best.json, and does it once."""
    from usmtl.config import config_from_dict
    from usmtl.run import BEST_STATE, Run
    from usmtl.training.fit import fit
    from tests.conftest import tiny_config_dict

    cfg = config_from_dict(tiny_config_dict(train={"epochs": 1, "precise_bn": "auto"}))
    fit(cfg, str(phantoms), str(tmp_path / "run"), verbose=0)
    assert Run(str(tmp_path / "run")).read_json(BEST_STATE)["precise_bn_layers"] > 0
