"""Issue 23, item 1: a fit killed after epoch k and resumed ends equal to the uninterrupted
fit (weights, history.csv, best epoch), on TensorFlow and on JAX; and an experiment
interrupted mid-way and rerun writes the same tables.

Before the fix, every random state but the weights and the optimizer restarted on resume:
the augmentation layer's SeedGenerator (Keras saves no SeedGenerator state) and the
tf.data shuffle (reshuffled at each iteration of one dataset, so epoch k+1 of a resumed
process got epoch 1's order). Measured on 40 phantom patients, 4 epochs at 32 px: the
resumed weights differed by up to 0.021 and the best epoch moved from 4 to 2.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, Interrupt, interrupt_after_epoch, tiny_config_dict

EPOCHS = 4


def run_state(run) -> dict:
    """What must be equal: every weight of last.keras and best.keras, history.csv, best.json."""
    import keras

    state = {"history": (run / "history.csv").read_text(),
             "best_state": json.loads((run / "checkpoints" / "best.json").read_text())}
    for which in ("last", "best"):
        model = keras.models.load_model(run / "checkpoints" / f"{which}.keras", compile=False)
        state[which] = [np.asarray(w) for w in model.weights]
    return state


def assert_same_run(resumed: dict, straight: dict, what: str) -> None:
    assert resumed["history"] == straight["history"], what
    assert resumed["best_state"] == straight["best_state"], what
    for which in ("last", "best"):
        for a, b in zip(resumed[which], straight[which]):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0, err_msg=f"{what}: {which}.keras")


def tiny(**train):
    from usmtl.config import config_from_dict

    return config_from_dict(tiny_config_dict(train={"epochs": EPOCHS, **train}))


@pytest.mark.slow
def test_resumed_fit_equals_the_uninterrupted_fit_on_tensorflow(tmp_path, phantoms):
    from usmtl.training.fit import fit

    # Early stopping with a patience it does not reach: its counter is replayed on resume.
    cfg = tiny(early_stopping=EPOCHS)
    fit(cfg, str(phantoms), str(tmp_path / "straight"), verbose=0)
    straight = run_state(tmp_path / "straight")
    for k in (0, 1, 2):
        run = tmp_path / f"killed-after-{k + 1}"
        with pytest.raises(Interrupt):
            fit(cfg, str(phantoms), str(run), verbose=0, callbacks=[interrupt_after_epoch(k)])
        assert json.loads((run / "run.json").read_text())["status"] == "running"
        fit(None, None, str(run), resume=True, verbose=0)
        assert_same_run(run_state(run), straight, f"interrupted after epoch {k + 1}")


def test_seed_generators_are_reset_per_epoch_whatever_they_drew_before():
    """The state of RoiAugment's (and any other) SeedGenerator at an epoch's beginning is a
    function of (seed, epoch): what the process drew before does not matter."""
    import keras

    from usmtl.model.multitask import build_model
    from usmtl.training.resume_state import reseed, seed_generators

    cfg = tiny()
    model = build_model(cfg)
    generators = seed_generators(model)
    assert len(generators) >= 1  # RoiAugment's
    assert reseed(model, 0, 3) == len(generators)
    fresh = [np.asarray(g.state.value).copy() for g in generators]
    images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype("uint8")
    first = np.asarray(model.layers[1](images, training=True))  # advances the state
    assert any((np.asarray(g.state.value) != s).any() for g, s in zip(generators, fresh))
    reseed(model, 0, 3)
    assert all((np.asarray(g.state.value) == s).all() for g, s in zip(generators, fresh))
    np.testing.assert_array_equal(np.asarray(model.layers[1](images, training=True)), first)
    reseed(model, 0, 4)
    assert any((np.asarray(g.state.value) != s).any() for g, s in zip(generators, fresh))
    assert keras.backend.backend() == "tensorflow"


def test_training_order_depends_on_seed_and_epoch_only():
    """TrainEpochs: the same epoch gives the same batches however many were iterated before."""
    from usmtl.data.pipeline import TrainEpochs
    import tensorflow as tf

    labels = np.arange(20, dtype="float32")
    pairs = tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(labels),
                                tf.data.Dataset.from_tensor_slices(({"t": labels}, {"t": labels})))
    order = lambda ds: np.concatenate([x.numpy() for x, _, _ in ds])  # noqa: E731
    epochs = TrainEpochs(pairs, 20, batch_size=4, seed=7)
    first = [order(epochs.for_epoch(e)) for e in range(3)]
    again = TrainEpochs(pairs, 20, batch_size=4, seed=7)
    assert (order(again.for_epoch(2)) == first[2]).all()  # a resumed process starts at epoch 2
    assert (order(epochs.for_epoch(1)) == first[1]).all()
    assert not (first[0] == first[1]).all() and sorted(first[1]) == list(range(20))


def test_early_stopping_replays_the_trained_epochs(tmp_path):
    """A resumed run's patience counter and best value are those of the epochs already in
    history.csv, not zero and none (Keras' EarlyStopping restarts at on_train_begin)."""
    import keras

    from usmtl.training.resume_state import resumable_early_stopping

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_auc\n0,1.0,0.6\n1,0.9,0.7\n2,0.8,0.65\n3,0.7,nan\n")
    callback = resumable_early_stopping(str(history), patience=5)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback.set_model(model)
    model.stop_training = False
    callback.on_train_begin()
    assert (callback.wait, float(callback.best), callback.best_epoch) == (2, 0.7, 1)
    assert model.stop_training is False
    callback.on_epoch_end(4, {"val_auc": 0.5})
    callback.on_epoch_end(5, {"val_auc": 0.5})
    assert callback.wait == 4 and not model.stop_training
    callback.on_epoch_end(6, {"val_auc": 0.5})
    assert model.stop_training  # 5 epochs without improvement since epoch 1, as uninterrupted


JAX_SCRIPT = r"""
import json, sys
import numpy as np
from usmtl.backend import use_backend

use_backend("jax")
import keras
from tests.conftest import Interrupt, interrupt_after_epoch, tiny_config_dict
from usmtl.config import config_from_dict
from usmtl.training.fit import fit

manifest, out = sys.argv[1:3]
cfg = config_from_dict(tiny_config_dict(train={"epochs": 3}))


def state(run):
    model = keras.models.load_model(f"{run}/checkpoints/last.keras", compile=False)
    return (open(f"{run}/history.csv").read(), open(f"{run}/checkpoints/best.json").read(),
            [np.asarray(w) for w in model.weights])


fit(cfg, manifest, f"{out}/straight", verbose=0)
history, best, weights = state(f"{out}/straight")
report = {}
for k in (0, 1):
    run = f"{out}/k{k}"
    try:
        fit(cfg, manifest, run, verbose=0, callbacks=[interrupt_after_epoch(k)])
        raise SystemExit("the interrupt did not happen")
    except Interrupt:
        pass
    fit(None, None, run, resume=True, verbose=0)
    h, b, w = state(run)
    report[k] = {"history": h == history, "best": b == best,
                 "max_diff": max(float(np.max(np.abs(x - y))) for x, y in zip(w, weights))}
print(json.dumps({"backend": keras.backend.backend(), "report": report}))
"""


@pytest.mark.slow
def test_resumed_fit_equals_the_uninterrupted_fit_on_jax(tmp_path, phantoms):
    pytest.importorskip("jax")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(phantoms), str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    for k, report in result["report"].items():
        assert report["history"] and report["best"], (k, report)
        assert report["max_diff"] <= 1e-6, (k, report)


@pytest.mark.slow
def test_interrupted_experiment_writes_the_tables_of_an_uninterrupted_one(tmp_path, phantoms,
                                                                         monkeypatch):
    """2 variants x 2 repeats, 2 epochs: killed during the third run (after its first epoch)
    and rerun, the experiment writes byte-identical tables."""
    from usmtl.config import config_from_dict
    from usmtl.experiment import run_experiment
    from usmtl.training import phases

    cfg = lambda: config_from_dict(tiny_config_dict(train={"epochs": 2}))  # noqa: E731
    variants = ("multitask", "multitask-hl")
    run_experiment(cfg(), str(phantoms), str(tmp_path / "straight"), repeats=2, variants=variants)

    build = phases._build_callbacks
    calls = []

    def interrupting(*args, **kwargs):
        calls.append(1)
        callbacks = build(*args, **kwargs)
        return callbacks + [interrupt_after_epoch(0)] if len(calls) == 3 else callbacks

    monkeypatch.setattr(phases, "_build_callbacks", interrupting)
    with pytest.raises(Interrupt):
        run_experiment(cfg(), str(phantoms), str(tmp_path / "killed"), repeats=2, variants=variants)
    assert not (tmp_path / "killed" / "tables.md").exists()
    run_experiment(cfg(), str(phantoms), str(tmp_path / "killed"), repeats=2, variants=variants)
    assert len(calls) == 5  # 4 runs, the third one twice (interrupted, then resumed)
    for name in ("results.csv", "summary.csv", "pvalues.csv", "inconsistency.csv", "tables.md"):
        assert (tmp_path / "killed" / name).read_bytes() == \
            (tmp_path / "straight" / name).read_bytes(), name
