"""Shared fixtures: synthetic phantoms and tiny configs (64 px or less, few blocks)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
BUSBRA = REPO.parent / "shared" / "data" / "BUS-BRA"

# The paper's cohorts: ALNM (and burden) labelled and scored within the malignant masses.
PAPER_TASKS = [
    {"name": "malignancy", "label": "malignant"},
    {"name": "alnm", "label": "alnm", "parent": "malignancy", "cohort": "parent_positive"},
    {"name": "aln_ge_2", "label": "aln_count >= 2", "parent": "alnm", "cohort": "malignant"},
]


def tiny_config_dict(**sections):
    """A config small enough to train in seconds on a CPU."""
    data = {
        "name": "tiny",
        "tasks": PAPER_TASKS,
        "data": {"image_size": 32, "roi_margin": 0.2, "augment": {"enabled": True}},
        "model": {"backbone": "resnet_small", "weights": "none",
                  "small_widths": [8, 16], "small_blocks": [1, 1]},
        # precise BatchNorm (auto: on for short from-scratch runs) is tested on its own in
        # tests/test_precise_bn.py; off here, where its extra pass would only slow every fit.
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 2e-3, "lr_decay_every": 0,
                  "precise_bn": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def write_config(path, **sections):
    """Write a tiny config (with ``sections`` overridden) as YAML; returns its path."""
    import yaml

    path.write_text(yaml.safe_dump(tiny_config_dict(**sections)))
    return str(path)


class Interrupt(Exception):
    """Raised by :func:`interrupt_after_epoch`'s callback: a run that dies mid-training."""


def interrupt_after_epoch(epoch: int):
    """A Keras callback raising :class:`Interrupt` at the end of ``epoch`` (0-based)."""
    import keras

    class StopAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, current, logs=None):
            if current == epoch:
                raise Interrupt

    return StopAfterEpoch()


def invoke(*args):
    """Run the ``usmtl`` CLI in-process; arguments are turned into strings."""
    from click.testing import CliRunner

    from usmtl.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def train_tiny_run(run, manifest, epochs: int = 1):
    """Train the tiny config on ``manifest`` into the run directory ``run``; returns ``run``."""
    from usmtl.config import config_from_dict
    from usmtl.training.fit import fit

    fit(config_from_dict(tiny_config_dict(train={"epochs": epochs})), str(manifest), str(run),
        verbose=0)
    return run


@pytest.fixture
def tiny_config():
    from usmtl.config import config_from_dict

    return config_from_dict(tiny_config_dict())


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory):
    """80 synthetic patients: a manifest with every label and LabelImg boxes."""
    from usmtl.data.phantoms import make_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    make_phantoms(str(out), n_patients=80, size=96, seed=1, progress=False)
    return out / "manifest.csv"


@pytest.fixture
def busbra_root():
    if not (BUSBRA / "bus_data.csv").is_file():
        pytest.skip(f"BUS-BRA not found at {BUSBRA}")
    return BUSBRA


@pytest.fixture(scope="session")
def trained_run(phantoms, tmp_path_factory):
    """A tiny run trained for 2 epochs on the phantoms, shared by tests that only read it
    (calibrate, validate, report): copy it before changing it."""
    return train_tiny_run(tmp_path_factory.mktemp("trained") / "run", phantoms, epochs=2)
