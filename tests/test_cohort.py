"""Task cohorts (the paper's ALNM within the malignant masses), the per-head loss
normalisation, and the paper's configs."""

import math

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, invoke, tiny_config_dict
from usmtl.config import TaskConfig, apply_variant, config_from_dict, load_config
from usmtl.data.manifest import read_manifest
from usmtl.errors import ConfigError
from usmtl.tasks import TaskGraph, cohort_warnings, label_table

TASKS = [TaskConfig("malignancy", "malignant"),
         TaskConfig("alnm", "alnm", "malignancy", "parent_positive")]


def _manifest(tmp_path, malignant, alnm, counts=None):
    """A manifest (images need not exist to read labels)."""
    n = len(malignant)
    frame = pd.DataFrame({
        "image": [f"i{i}.png" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
        "malignant": malignant, "alnm": alnm,
        "aln_count": counts if counts is not None else [""] * n,
        "x_min": 0, "y_min": 0, "x_max": 10, "y_max": 10})
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    return read_manifest(str(path))


# ---------------------------------------------------------------------------------------
# Labels within a cohort
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("parent, child, expected", [
    ("1", "1", 1.0), ("1", "0", 0.0), ("1", "", math.nan),
    ("0", "0", math.nan),   # a hospital's filled 0 on a benign mass: unknown, not negative
    ("0", "", math.nan),
    ("", "1", math.nan),    # parent unknown: outside the cohort too
])
def test_child_label_is_unknown_outside_its_cohort(tmp_path, parent, child, expected):
    manifest = _manifest(tmp_path, [parent, "1"], [child, "1"])
    table = label_table(manifest, TaskGraph.from_config(TASKS))
    np.testing.assert_array_equal(table["alnm"], [expected, 1.0])
    assert table["malignancy"][1] == 1.0


def test_cohort_all_keeps_every_label(tmp_path):
    manifest = _manifest(tmp_path, ["0", "1"], ["0", "1"])
    table = label_table(manifest, TaskGraph.from_config(
        [TASKS[0], TaskConfig("alnm", "alnm", "malignancy")]))
    np.testing.assert_array_equal(table["alnm"], [0.0, 1.0])


def test_cohort_as_a_label_source(tmp_path):
    manifest = _manifest(tmp_path, ["1", "1", "0"], ["1", "0", "0"], ["3", "1", "0"])
    graph = TaskGraph.from_config([TaskConfig("ge2", "aln_count >= 2", cohort="malignant")])
    np.testing.assert_array_equal(label_table(manifest, graph)["ge2"], [1.0, 0.0, np.nan])
    assert graph.cohort_text("ge2") == "malignant = 1"


@pytest.mark.parametrize("tasks, message", [
    ([TaskConfig("alnm", "alnm", cohort="parent_positive")], "no parent"),
    ([TaskConfig("a", "x", cohort="")], "cohort must be"),
    ([TaskConfig("a", "x", cohort="x >=")], None),  # not an expression: read as a column name
])
def test_bad_cohorts(tasks, message):
    if message is None:
        TaskGraph.from_config(tasks)
        return
    with pytest.raises(ConfigError, match=message):
        TaskGraph.from_config(tasks)


def test_single_variant_keeps_the_cohort():
    cfg = load_config(str(REPO / "configs" / "paper.yaml"), variant="single-alnm")
    assert [(t.name, t.parent, t.cohort) for t in cfg.tasks] == [("alnm", None, "malignant")]
    assert TaskGraph.from_config(cfg.tasks).cohort_text("alnm") == "malignant = 1"
    paper = load_config(str(REPO / "configs" / "paper.yaml"))
    assert apply_variant(paper, "single:alnm").tasks[0].cohort == "malignant"
    assert apply_variant(paper, "multitask").tasks[1].cohort == "parent_positive"


def test_check_warns_about_labels_outside_the_cohort(tmp_path):
    manifest = _manifest(tmp_path, ["0", "0", "1"], ["0", "", "1"])
    warnings = cohort_warnings(manifest, TaskGraph.from_config(TASKS))
    assert len(warnings) == 1
    assert "'alnm' is labelled on 1 row(s) outside its cohort (malignant = 1)" in warnings[0]
    assert "lines 2)" in warnings[0]


def test_check_command_warns_but_passes(tmp_path, phantoms):
    frame = pd.read_csv(phantoms, dtype=str, keep_default_na=False)
    benign = frame["malignant"] == "0"
    frame.loc[benign, ["alnm", "aln_count"]] = "0"   # as hospital exports often do
    frame["image"] = [str(phantoms.parent / p) for p in frame["image"]]
    frame["annotation"] = [str(phantoms.parent / p) for p in frame["annotation"]]
    path = tmp_path / "filled.csv"
    frame.to_csv(path, index=False)
    result = invoke("check", path)
    assert result.exit_code == 0, result.output
    assert f"'alnm' is labelled on {int(benign.sum())} row(s) outside its cohort" in result.output


# ---------------------------------------------------------------------------------------
# Training: per-head BCE over the known labels; the hinge over every image
# ---------------------------------------------------------------------------------------


def _bce(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_loss_is_per_head_mean_over_known_labels_plus_hinge_over_all(tmp_path):
    """The compiled loss against a NumPy reference on a partly labelled batch: each head's
    BCE is the mean over its known labels (malignant rows only for ALNM); the hinge is the
    mean over every image, benign ones included."""
    import keras

    from usmtl.data.pipeline import targets
    from usmtl.model.multitask import build_model
    from usmtl.training.compile import compile_for_training

    cfg = config_from_dict(tiny_config_dict(tasks=[
        {"name": "malignancy", "label": "malignant"},
        {"name": "alnm", "label": "alnm", "parent": "malignancy", "cohort": "parent_positive"}],
        data={"augment": {"enabled": False}}, model={"hinge_margin": 0.0, "hinge_weight": 0.5}))
    keras.utils.set_random_seed(0)
    model = compile_for_training(build_model(cfg), cfg, steps_per_epoch=1)
    # 8 images: 5 malignant (ALNM known for 4 of them), 3 benign with a filled ALNM 0 or 1.
    malignant = ["1", "1", "1", "1", "1", "0", "0", "0"]
    alnm = ["1", "0", "1", "", "0", "0", "1", "0"]
    labels = label_table(_manifest(tmp_path, malignant, alnm), TaskGraph.from_config(cfg.tasks))
    y, w = targets(labels)
    assert w["alnm"].tolist() == [1, 1, 1, 0, 1, 0, 0, 0]
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    probs = model(x, training=False)
    p = {k: np.ravel(keras.ops.convert_to_numpy(v)) for k, v in probs.items()}
    loss = float(keras.ops.convert_to_numpy(model.compute_loss(
        x=x, y=y, y_pred=probs, sample_weight=w, training=False)))

    known = w["alnm"] > 0
    expected = (np.mean(_bce(np.ravel(y["malignancy"]), p["malignancy"]))
                + np.mean(_bce(np.ravel(y["alnm"])[known], p["alnm"][known]))
                + 0.5 * np.mean(np.maximum(0.0, p["alnm"] - p["malignancy"])))
    assert loss == pytest.approx(expected, rel=1e-5)
    # Keras' default (sum over the batch / whole batch size) would give a different value.
    diluted = np.sum(_bce(np.ravel(y["alnm"])[known], p["alnm"][known])) / 8
    assert abs(diluted - np.mean(_bce(np.ravel(y["alnm"])[known], p["alnm"][known]))) > 1e-4
    # Benign rows reach the ALNM head through the hinge only: flipping their filled ALNM
    # labels changes nothing.
    flipped = label_table(_manifest(tmp_path, malignant, ["1", "0", "1", "", "0", "1", "0", "1"]),
                          TaskGraph.from_config(cfg.tasks))
    y2, w2 = targets(flipped)
    loss2 = float(keras.ops.convert_to_numpy(model.compute_loss(
        x=x, y=y2, y_pred=probs, sample_weight=w2, training=False)))
    assert loss2 == pytest.approx(loss, rel=1e-7)


def test_a_batch_without_known_labels_adds_nothing():
    import keras

    bce = keras.losses.BinaryCrossentropy(reduction="mean_with_sample_weight")
    value = bce(np.array([[1.0], [0.0]]), np.array([[0.3], [0.6]]), sample_weight=np.zeros(2))
    assert float(keras.ops.convert_to_numpy(value)) == 0.0


# ---------------------------------------------------------------------------------------
# The paper's configs
# ---------------------------------------------------------------------------------------


def test_paper_config_is_the_papers_two_head_model():
    cfg = load_config(str(REPO / "configs" / "paper.yaml"))
    graph = TaskGraph.from_config(cfg.tasks)
    assert graph.names == ["malignancy", "alnm"] and graph.edges == [("malignancy", "alnm")]
    assert graph.cohort_text("alnm") == "malignant = 1"
    assert (cfg.model.backbone, cfg.model.hinge, cfg.model.hinge_margin, cfg.model.hinge_weight) == \
        ("resnet50", True, 0.1, 0.05)
    assert (cfg.data.image_size, cfg.data.test_fraction) == (256, 0.3)
    assert (cfg.train.learning_rate, cfg.train.epochs, cfg.train.lr_decay_every,
            cfg.train.lr_decay_factor, cfg.train.checkpoint) == (1e-4, 200, 50, 0.1, "last")


def test_chained_extension_is_separate():
    cfg = load_config(str(REPO / "configs" / "paper_chained.yaml"))
    graph = TaskGraph.from_config(cfg.tasks)
    assert len(graph.names) == 5 and len(graph.edges) == 4
    assert {graph.cohort_text(t) for t in graph.names[1:]} == {"malignant = 1"}


def test_busbra_config_is_the_papers_two_head_shape():
    cfg = load_config(str(REPO / "configs" / "busbra.yaml"))
    graph = TaskGraph.from_config(cfg.tasks)
    assert graph.edges == [("malignancy", "birads5")]
    assert [t.cohort for t in cfg.tasks] == ["all", "parent_positive"]
    assert graph.cohort_text("birads5") == "malignant = 1"


@pytest.mark.parametrize("value", ["best", "last"])
def test_checkpoint_choice(value):
    assert config_from_dict(tiny_config_dict(train={"checkpoint": value})).train.checkpoint == value


def test_checkpoint_choice_unknown():
    with pytest.raises(ConfigError, match="train.checkpoint must be one of"):
        config_from_dict(tiny_config_dict(train={"checkpoint": "middle"}))
