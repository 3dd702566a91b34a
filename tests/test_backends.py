"""Model and loss code use keras.ops only: the model builds and trains on JAX without
TensorFlow (the lent GPU machines have JAX but no TensorFlow)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = r"""
import sys
import numpy as np, keras
from tests.conftest import tiny_config_dict
from usmtl.config import config_from_dict
from usmtl.model.hinge import hinge_value
from usmtl.model.multitask import build_model

assert keras.backend.backend() == "jax"
probs = {"a": np.array([[0.2], [0.6]], "float32"), "b": np.array([[0.9], [0.1]], "float32")}
assert abs(float(hinge_value(probs, [("a", "b")], 0.1)) - 0.3) < 1e-6
model = build_model(config_from_dict(tiny_config_dict()))
x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
# Training on JAX, run directory and all, is tests/test_jax_training.py's.
out = model(x)
assert all(np.isfinite(np.asarray(v)).all() for v in out.values())
assert len(model.losses) == 2  # one hinge term per parent -> child edge
print("tensorflow" in sys.modules)
"""


@pytest.mark.slow
def test_model_and_hinge_run_on_jax_without_tensorflow():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
