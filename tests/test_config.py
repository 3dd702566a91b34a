"""Experiment configs: YAML files, dotted overrides, validation and the paper's variants."""

from pathlib import Path

import pytest
import yaml

from usmtl.config import (ExperimentConfig, TaskConfig, apply_overrides, apply_variant,
                          config_from_dict, config_to_dict, load_config, save_config)
from usmtl.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
PAPER = str(CONFIGS / "paper.yaml")
CHAINED = str(CONFIGS / "paper_chained.yaml")
QUICKSTART = str(CONFIGS / "quickstart.yaml")

TWO_TASKS = [{"name": "malignancy", "label": "malignant"},
             {"name": "alnm", "label": "alnm", "parent": "malignancy"}]


def test_config_files_exist():
    assert {p.name for p in CONFIG_FILES} >= {"paper.yaml", "quickstart.yaml", "busbra.yaml"}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_each_config_loads(path):
    cfg = load_config(str(path))
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.name == path.stem
    assert cfg.tasks and all(isinstance(t, TaskConfig) for t in cfg.tasks)
    assert cfg.tasks[0].parent is None


def test_paper_protocol():
    cfg = load_config(PAPER)
    assert cfg.model.backbone == "resnet50"
    assert cfg.data.image_size == 256
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert cfg.train.epochs == 200
    assert cfg.train.lr_decay_every == 50
    assert cfg.train.lr_decay_factor == pytest.approx(0.1)
    assert cfg.model.hinge is True
    assert cfg.model.hinge_margin == pytest.approx(0.1)
    assert cfg.model.hinge_weight == pytest.approx(0.05)
    assert cfg.data.test_fraction == pytest.approx(0.3)
    assert [t.name for t in cfg.tasks][:2] == ["malignancy", "alnm"]
    assert cfg.tasks[1].parent == "malignancy"


def test_defaults_without_file_need_tasks():
    with pytest.raises(ConfigError, match="at least one task"):
        load_config(None)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/config.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_top_level_must_be_mapping(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(path))


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))


# ---------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, key, expected", [
    ("train.epochs=3", "train.epochs", 3),
    ("data.augment.enabled=false", "data.augment.enabled", False),
    ("data.augment.gamma=[0.5, 2.0]", "data.augment.gamma", [0.5, 2.0]),
    ("model.backbone=resnet_small", "model.backbone", "resnet_small"),
    ("train.learning_rate=0.001", "train.learning_rate", 0.001),
    ("train.learning_rate=1e-4", "train.learning_rate", 1e-4),  # YAML reads this as a string
    ("train.learning_rate=1", "train.learning_rate", 1.0),       # int accepted for float
    ("data.stratify=aln_count >= 2", "data.stratify", "aln_count >= 2"),
    ("model.weights=none", "model.weights", "none"),
    ("name=renamed", "name", "renamed"),
])
def test_override(override, key, expected):
    cfg = load_config(QUICKSTART, [override])
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected
    assert type(value) is type(expected)


def test_override_keeps_other_values_and_does_not_mutate_input():
    data = {"tasks": TWO_TASKS, "train": {"epochs": 10, "batch_size": 8}}
    out = apply_overrides(data, ["train.epochs=3", "data.augment.enabled=false"])
    assert out["train"] == {"epochs": 3, "batch_size": 8}
    assert out["data"] == {"augment": {"enabled": False}}
    assert data == {"tasks": TWO_TASKS, "train": {"epochs": 10, "batch_size": 8}}


def test_later_override_wins():
    assert load_config(QUICKSTART, ["train.epochs=3", "train.epochs=5"]).train.epochs == 5


@pytest.mark.parametrize("override", ["train.epochs", "", "train.epochs:3"])
def test_override_without_equals(override):
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, [override])


def test_override_through_a_value_is_an_error():
    with pytest.raises(ConfigError, match="'train.epochs.x'"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


@pytest.mark.parametrize("override, dotted", [
    ("train.epoch=3", "train.epoch"),
    ("data.augment.enable=false", "data.augment.enable"),
    ("trian.epochs=3", "trian"),
    ("model.hinge_lambda=0.1", "model.hinge_lambda"),
])
def test_unknown_key_names_dotted_key(override, dotted):
    with pytest.raises(ConfigError) as info:
        load_config(QUICKSTART, [override])
    message = str(info.value)
    assert f"'{dotted}'" in message
    assert "quickstart.yaml" in message  # the file is named too


def test_unknown_key_in_a_task():
    tasks = [{"name": "malignancy", "label": "malignant", "colour": "red"}]
    with pytest.raises(ConfigError, match=r"'tasks\[0\]\.colour'"):
        config_from_dict({"tasks": tasks})


@pytest.mark.parametrize("override, key", [
    ('train.epochs="x"', "train.epochs"),
    ("train.epochs=x", "train.epochs"),
    ("train.epochs=true", "train.epochs"),
    ("train.epochs=3.5", "train.epochs"),
    ("train.epochs=null", "train.epochs"),
    ("data.augment.gamma=1", "data.augment.gamma"),
    ("data.augment.enabled=1", "data.augment.enabled"),
    ("data.augment.enabled=yes please", "data.augment.enabled"),
    ("train.learning_rate=fast", "train.learning_rate"),
    ("train.learning_rate=.nan", "train.learning_rate"),
    ("train.learning_rate=true", "train.learning_rate"),
    ("model.backbone=3", "model.backbone"),
    ("data.augment=on", "data.augment"),
    ("tasks=malignant", "tasks"),
])
def test_wrong_type_names_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(QUICKSTART, [override])
    assert key in str(info.value)
    assert "Received" in str(info.value)


@pytest.mark.parametrize("override, key", [
    ("data.image_size=16", "data.image_size"),
    ("data.roi_margin=-0.1", "data.roi_margin"),
    ("data.test_fraction=1.0", "data.test_fraction"),
    ("data.test_fraction=-0.1", "data.test_fraction"),
    ("data.val_fraction=1", "data.val_fraction"),
    ("data.val_fraction=0.7", "data.test_fraction + data.val_fraction"),
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.learning_rate=0", "train.learning_rate"),
    ("train.learning_rate=-1e-3", "train.learning_rate"),
    ("model.hinge_margin=-0.1", "model.hinge_margin"),
    ("model.hinge_weight=-1", "model.hinge_weight"),
    ("model.dropout=1.0", "model.dropout"),
    ("train.precision=fp16", "train.precision"),
    ("train.strategy=tpu", "train.strategy"),
    ("data.augment.gamma=[1.4, 0.7]", "data.augment.gamma"),
    ("data.augment.crop_scale=[0.5]", "data.augment.crop_scale"),
    ("data.augment.crop_aspect=[a, b]", "data.augment.crop_aspect"),
    ("model.backbone=vgg16", "model.backbone"),
])
def test_out_of_range(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(QUICKSTART, [override])
    assert key in str(info.value)


@pytest.mark.parametrize("override", [
    "data.test_fraction=0", "data.val_fraction=0", "model.dropout=0", "model.hinge_weight=0",
    "data.roi_margin=0", "data.image_size=32", "train.lr_decay_every=0",
])
def test_boundary_values_accepted(override):
    load_config(QUICKSTART, [override])


# ---------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant, tasks, hinge", [
    ("single-bm", ["malignancy"], False),
    ("single-alnm", ["alnm"], False),
    ("multitask", ["malignancy", "alnm", "aln_ge_2", "aln_ge_3", "aln_ge_4"], False),
    ("multitask-hl", ["malignancy", "alnm", "aln_ge_2", "aln_ge_3", "aln_ge_4"], True),
    ("single:aln_ge_3", ["aln_ge_3"], False),
])
@pytest.mark.parametrize("path", [CHAINED, QUICKSTART], ids=["paper_chained", "quickstart"])
def test_variants(path, variant, tasks, hinge):
    base = load_config(path)
    cfg = load_config(path, variant=variant)
    assert [t.name for t in cfg.tasks] == tasks
    assert cfg.model.hinge is hinge
    assert cfg.name == f"{base.name}-{variant.replace(':', '-')}"
    if len(tasks) == 1:
        assert cfg.tasks[0].parent is None
        assert cfg.tasks[0].label == {t.name: t.label for t in base.tasks}[tasks[0]]
    # the base config is untouched
    assert [t.name for t in base.tasks] == ["malignancy", "alnm", "aln_ge_2", "aln_ge_3",
                                             "aln_ge_4"]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_variants_share_the_split_stratification(path):
    base = load_config(str(path))
    expected = base.data.stratify or base.tasks[0].label
    variants = ["single-bm", "single-alnm", "multitask", "multitask-hl",
                f"single:{base.tasks[-1].name}"]
    for variant in variants:
        cfg = load_config(str(path), variant=variant)
        assert cfg.data.stratify == expected, variant
        assert cfg.data.split_seed == base.data.split_seed
        assert cfg.data.test_fraction == base.data.test_fraction
        assert cfg.data.val_fraction == base.data.val_fraction


@pytest.mark.parametrize("variant, match", [
    ("single-cancer", "Unknown variant"),
    ("", None),  # empty: no variant at all
    ("single:nodes", "Unknown task in variant"),
    ("MULTITASK", "Unknown variant"),
])
def test_unknown_variant(variant, match):
    if match is None:
        assert load_config(QUICKSTART, variant=variant) == load_config(QUICKSTART)
        return
    with pytest.raises(ConfigError, match=match):
        load_config(QUICKSTART, variant=variant)


def test_single_alnm_needs_a_child():
    cfg = config_from_dict({"tasks": [{"name": "malignancy", "label": "malignant"}]})
    with pytest.raises(ConfigError, match="single-alnm"):
        apply_variant(cfg, "single-alnm")
    assert [t.name for t in apply_variant(cfg, "single-bm").tasks] == ["malignancy"]


# ---------------------------------------------------------------------------------------
# Round trip and task graph errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("variant", [None, "single-alnm", "multitask-hl"])
def test_save_load_round_trip(tmp_path, path, variant):
    cfg = load_config(str(path), ["train.learning_rate=1e-5", "data.augment.enabled=false"],
                      variant=variant)
    out = tmp_path / "config.yaml"
    save_config(cfg, str(out))
    again = load_config(str(out))
    assert again == cfg
    assert config_to_dict(again) == config_to_dict(cfg)
    assert isinstance(yaml.safe_load(out.read_text()), dict)


@pytest.mark.parametrize("tasks, match", [
    ([], "at least one task"),
    ([{"name": "a", "label": "malignant", "parent": "nobody"}], "unknown parent"),
    ([{"name": "a", "label": "malignant", "parent": "b"},
      {"name": "b", "label": "alnm", "parent": "a"}], "cycle"),
    ([{"name": "a", "label": "malignant", "parent": "a"}], "cycle"),
    ([{"name": "a", "label": "malignant"}, {"name": "a", "label": "alnm"}], "Duplicate task"),
    ([{"name": "bad-name", "label": "malignant"}], "identifiers"),
    ([{"name": "1st", "label": "malignant"}], "identifiers"),
    ([{"name": "has space", "label": "malignant"}], "identifiers"),
    ([{"name": "a"}], "needs a name and a label"),
    ([{"label": "malignant"}], "needs a name and a label"),
    ([{"name": "a", "label": "   "}], "label"),
    (["malignancy"], r"tasks\[0\] must be a mapping"),
    ({"name": "a", "label": "malignant"}, "must be a list"),
])
def test_task_graph_errors(tasks, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"tasks": tasks})


def test_error_names_the_offending_task():
    tasks = TWO_TASKS + [{"name": "alnm", "label": "aln_count >= 2"}]
    with pytest.raises(ConfigError, match="'alnm'"):
        config_from_dict({"tasks": tasks})
    tasks = TWO_TASKS + [{"name": "x", "label": "aln_count >= 2", "parent": "malignance"}]
    with pytest.raises(ConfigError, match="'malignance'"):
        config_from_dict({"tasks": tasks})
