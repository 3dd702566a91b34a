"""Typed experiment configuration: dataclasses loaded from YAML, with dotted overrides.

The layout follows TensorFlow Model Garden's experiment configs: one tree of small
dataclasses, a YAML file per experiment, and ``--set key.sub=value`` overrides on the
command line. An unknown key or a value of the wrong type is an error naming the key.

Example:
    >>> from usmtl.config import load_config
    >>> cfg = load_config("quickstart", ["train.epochs=3"])   # a preset, or a YAML file
    >>> cfg.train.epochs
    3
    >>> load_config("paper", variant="single-alnm").tasks[0].cohort
    'malignant'
    >>> load_config("quickstart", ["train.epoch=3"])
    Traceback (most recent call last):
    ...
    usmtl.errors.ConfigError: ...Unknown config key 'train.epoch'...
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from typing import Any, Optional, Union

import yaml

from usmtl.errors import ConfigError


@dataclasses.dataclass
class TaskConfig:
    """One sigmoid head.

    ``label`` is a manifest column (``malignant``) or a threshold on one
    (``aln_count >= 2``); see :mod:`usmtl.tasks`. ``parent`` names the task this one is
    nested in: a positive child implies a positive parent, which the hierarchical hinge
    enforces on the predictions.

    ``cohort`` says on which images the task is labelled and scored: ``all`` (default), or
    ``parent_positive``, the images whose parent label is 1, as the paper labels and scores
    ALNM within the malignant masses only (benign masses have no axillary surgery). Outside
    its cohort a task's label is unknown: no BCE, no evaluation, but the label-free hinge
    still acts. A label source (``malignant``, ``birads >= 5``) names a cohort directly; the
    single-task variants use that form, since they drop the parent.

    ``loss_weight`` multiplies the task's BCE in the total loss (default 1, the paper's plain
    sum). Each BCE is a mean over the images whose label is known, so a child known on a
    third of a batch pulls as hard per image as three parents; a smaller weight evens that.

    ``display_name`` is the task's name in figure titles and report tables (default: derived
    from ``name`` by :func:`usmtl.tasks.display_name`: ``aln_ge_3`` reads "ALN >= 3").
    """

    name: str = ""
    label: str = ""
    parent: Optional[str] = None
    cohort: str = "all"
    loss_weight: float = 1.0
    display_name: Optional[str] = None


@dataclasses.dataclass
class AugmentConfig:
    """Training-time augmentation (the paper uses strong augmentation). Evaluation never
    augments."""

    enabled: bool = True
    crop_scale: list = dataclasses.field(default_factory=lambda: [0.6, 1.0])
    crop_aspect: list = dataclasses.field(default_factory=lambda: [0.75, 1.333])
    horizontal_flip: bool = True
    # A vertical flip puts posterior shadowing above the lesion, which is not anatomy.
    vertical_flip: bool = False
    brightness: float = 0.15
    contrast: float = 0.3
    gamma: list = dataclasses.field(default_factory=lambda: [0.7, 1.4])


@dataclasses.dataclass
class DataConfig:
    """How images become model inputs and how patients are split."""

    image_size: int = 256
    # Fraction of the box's width/height added on each side: the peritumoral region matters.
    roi_margin: float = 0.1
    # Grow the shorter side of the RoI to a square before resizing, so shapes are not
    # distorted (the taller-than-wide sign of malignancy survives).
    square_roi: bool = True
    # Inpaint burned-in marks (calipers, text, scale ticks; usmtl.data.marks) on the whole
    # image before cropping, in training, prediction, explain and export parity alike. Off by
    # default: it changes the pixels a model sees (a run trained without it must be used
    # without it), it costs ~20 ms per image, and whether it helps is a per-dataset question
    # for `usmtl explain --audit`. An exported graph cannot inpaint: its clients must.
    inpaint_marks: bool = False
    test_fraction: float = 0.3
    val_fraction: float = 0.15
    split_seed: int = 0
    # Label (a column or expression, as a task's label) stratifying the patient split;
    # default: the first task's label. Variants keep the full config's, so they share a split.
    stratify: Optional[str] = None
    # Where the decoded RoI crops are kept between epochs: "auto" (in memory when they take
    # under half the available memory, else a file cache in the run directory), "memory",
    # "disk" (file cache in the run directory), "none" (decode every epoch), or a path prefix
    # for tf.data's file cache.
    cache: str = "auto"
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


@dataclasses.dataclass
class ModelConfig:
    """Backbone, heads and the hierarchical hinge (HL)."""

    backbone: str = "resnet50"
    # "imagenet", "none", or a path to a weights file for the backbone.
    weights: str = "imagenet"
    # Widths and blocks per stage, used by the small "resnet_small" backbone only.
    small_widths: list = dataclasses.field(default_factory=lambda: [32, 64, 128])
    small_blocks: list = dataclasses.field(default_factory=lambda: [1, 1, 1])
    dropout: float = 0.0
    # BatchNormalization momentum of the backbone: "auto" or a number in [0, 1). auto keeps
    # Keras' own with pretrained weights and, from scratch, takes one whose moving statistics
    # settle within a short run (usmtl.model.backbones.bn_momentum): with Keras' 0.99 or
    # 0.999 a run of a few hundred steps predicts one constant at inference.
    bn_momentum: Any = "auto"
    hinge: bool = True
    hinge_margin: float = 0.1
    hinge_weight: float = 0.05
    # Whether the hinge's gradient reaches the parent head. The paper's hinge pushes both
    # down the child and up the parent wherever the child exceeds it, benign masses
    # included (their child label is unknown, the hinge is label-free); false moves only
    # the child.
    hinge_parent_gradient: bool = True
    # How a child's probability is formed: "independent" (its own sigmoid head, the paper's)
    # or "conditional": p_child = p_parent * q, with q a sigmoid head trained on the child's
    # cohort (Chen et al. 2020, arXiv 2009.05609), consistent with its parent by
    # construction. The parent's score enters the product without gradient, so the parent
    # learns from its own labels only.
    child_output: str = "independent"


@dataclasses.dataclass
class TrainConfig:
    """Optimisation: Adam with a step schedule, as in the paper."""

    epochs: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-4
    # Learning rate multiplied by lr_decay_factor every lr_decay_every epochs (0: never).
    lr_decay_every: int = 50
    lr_decay_factor: float = 0.1
    seed: int = 0
    # "auto" (mixed_float16 on GPU, float32 on CPU), "float32", "mixed_float16", "mixed_bfloat16".
    precision: str = "auto"
    # tf.distribute strategy: "auto" (multiworker when TF_CONFIG names several tasks,
    # mirrored over several local GPUs, else default), "default", "mirrored", "multiworker"
    # (MultiWorkerMirroredStrategy from TF_CONFIG). batch_size is the global batch.
    strategy: str = "auto"
    # XLA-compile the training step: "auto" (on with one GPU, off on CPU and across
    # replicas), true or false.
    jit_compile: Any = "auto"
    # Training steps per call of the compiled function: "auto" (8 on GPU, 1 on CPU) or an
    # integer >= 1. Callbacks see the batch logs once per call.
    steps_per_execution: Any = "auto"
    # Weight positives by negatives/positives per task, through sample weights.
    balance_classes: bool = False
    # Epochs without a better validation AUC before stopping (0: never stop early).
    early_stopping: int = 0
    # The model a run keeps as checkpoints/best.keras, used by predict, evaluate, explain and
    # export: "best" (the epoch of best mean validation AUC over tasks) or "last" (the last
    # epoch, as a fixed schedule such as the paper's 200 epochs implies).
    checkpoint: str = "best"
    # Re-estimate BatchNorm's moving statistics on the training crops with the kept weights
    # (usmtl.training.precise_bn): "auto" (on for a backbone trained from scratch for at most
    # PRECISE_BN_AUTO_EPOCHS epochs, where the statistics trail the weights: ResNet50, 4 epochs
    # on 120 phantom patients, test AUC 0.500 -> 0.937; off for longer runs, where it
    # measured neutral: BUS-BRA, small ResNet, 30 epochs, 15 runs, mean AUC 0.892 -> 0.891),
    # true or false.
    precise_bn: Any = "auto"


PRECISE_BN_AUTO_EPOCHS = 10


def precise_bn_on(cfg) -> bool:
    """Whether a run of ``cfg`` re-estimates BatchNorm after training (``train.precise_bn``)."""
    value = cfg.train.precise_bn
    if value == "auto":
        return cfg.model.weights == "none" and cfg.train.epochs <= PRECISE_BN_AUTO_EPOCHS
    return bool(value)


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment: tasks, data, model and training."""

    name: str = "experiment"
    tasks: list = dataclasses.field(default_factory=list)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def validate(self) -> "ExperimentConfig":
        """Check values that types alone cannot (task graph, ranges). Returns self."""
        from usmtl.tasks import TaskGraph

        TaskGraph.from_config(self.tasks)
        checks = [
            ("data.image_size", self.data.image_size >= 32, "an integer >= 32"),
            ("data.roi_margin", self.data.roi_margin >= 0, "a number >= 0"),
            ("data.inpaint_marks", isinstance(self.data.inpaint_marks, bool), "true or false"),
            ("data.test_fraction", 0 <= self.data.test_fraction < 1, "in [0, 1)"),
            ("data.val_fraction", 0 <= self.data.val_fraction < 1, "in [0, 1)"),
            ("data.test_fraction + data.val_fraction",
             self.data.test_fraction + self.data.val_fraction < 1, "below 1"),
            ("train.epochs", self.train.epochs >= 1, "an integer >= 1"),
            ("train.batch_size", self.train.batch_size >= 1, "an integer >= 1"),
            ("train.learning_rate", self.train.learning_rate > 0, "a number > 0"),
            ("model.hinge_margin", self.model.hinge_margin >= 0, "a number >= 0"),
            ("model.hinge_weight", self.model.hinge_weight >= 0, "a number >= 0"),
            ("model.dropout", 0 <= self.model.dropout < 1, "in [0, 1)"),
        ] + [(f"tasks.{t.name}.loss_weight", math.isfinite(t.loss_weight) and t.loss_weight >= 0,
              "a finite number >= 0") for t in self.tasks] + [
            (f"tasks.{t.name}.display_name", t.display_name is None or (
                isinstance(t.display_name, str) and bool(t.display_name.strip())),
             "a non-empty string (or absent)") for t in self.tasks]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{key} must be {expected}. Received: {_get(self, key)}")
        choices = {
            "train.precision": ("auto", "float32", "mixed_float16", "mixed_bfloat16"),
            "train.strategy": ("auto", "default", "mirrored", "multiworker"),
            "train.checkpoint": ("best", "last"),
            "model.child_output": ("independent", "conditional"),
        }
        for key, allowed in choices.items():
            if _get(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {allowed}. Received: {_get(self, key)!r}")
        bn = self.model.bn_momentum
        if not (bn == "auto" or (isinstance(bn, (int, float)) and not isinstance(bn, bool)
                                 and 0 <= bn < 1)):
            raise ConfigError(f"model.bn_momentum must be auto or a number in [0, 1). "
                              f"Received: {bn!r}")
        if not (self.train.precise_bn == "auto" or isinstance(self.train.precise_bn, bool)):
            raise ConfigError(f"train.precise_bn must be auto, true or false. "
                              f"Received: {self.train.precise_bn!r}")
        jit = self.train.jit_compile
        if not (jit == "auto" or isinstance(jit, bool)):
            raise ConfigError(f"train.jit_compile must be auto, true or false. Received: {jit!r}")
        spe = self.train.steps_per_execution
        if not (spe == "auto" or (isinstance(spe, int) and not isinstance(spe, bool) and spe >= 1)):
            raise ConfigError(f"train.steps_per_execution must be auto or an integer >= 1. "
                              f"Received: {spe!r}")
        if not self.data.cache:
            raise ConfigError("data.cache must be auto, memory, disk, none or a file path prefix. "
                              f"Received: {self.data.cache!r}")
        for key in ("data.augment.crop_scale", "data.augment.crop_aspect", "data.augment.gamma"):
            value = _get(self, key)
            if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value) or value[0] > value[1]:
                raise ConfigError(f"{key} must be [low, high] with low <= high. Received: {value}")
        # The registry module imports no Keras: validation reads it, not the builders.
        from usmtl.registry import backbone_names, get_backbone

        if self.model.backbone not in backbone_names():
            raise ConfigError(f"model.backbone must be one of {list(backbone_names())}. "
                              f"Received: {self.model.backbone!r}")
        backbone = get_backbone(self.model.backbone)
        if self.data.image_size < backbone.min_input_size:
            raise ConfigError(f"data.image_size must be >= {backbone.min_input_size} for backbone "
                              f"{backbone.name!r}. Received: {self.data.image_size}")
        if self.model.weights == "imagenet" and not backbone.pretrained_weights:
            raise ConfigError(f"model.weights: backbone {backbone.name!r} has no ImageNet weights; "
                              f"set model.weights to 'none'. Received: 'imagenet'")
        return self


def _get(cfg, dotted: str):
    if "+" in dotted:
        return "their sum " + str(sum(_get(cfg, k.strip()) for k in dotted.split("+")))
    value = cfg
    for part in dotted.split("."):
        if isinstance(value, list):  # tasks.<name>
            value = next(t for t in value if t.name == part)
        else:
            value = getattr(value, part)
    return value


# ---------------------------------------------------------------------------------------
# Building dataclasses from plain data, with type checks that name the key
# ---------------------------------------------------------------------------------------


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping. Received: {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # .inf, .nan, 1e400 would only fail in training
                raise ConfigError(f"{key} must be a finite number. Received: {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
        if value is None:
            return "none"
    elif tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    else:
        return value
    raise ConfigError(f"{key} must be of type {_type_name(tp)}. Received: {value!r}")


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"Unknown config key {full!r}; valid keys here: {sorted(names)}. "
                              f"Received: {key}={data[key]!r}")
    kwargs = {}
    for name in names:
        if name in data:
            full = f"{prefix}.{name}" if prefix else name
            if cls is ExperimentConfig and name == "tasks":
                kwargs[name] = _build_tasks(data[name])
            else:
                kwargs[name] = _coerce(data[name], hints[name], full)
    return cls(**kwargs)


def _build_tasks(value) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"tasks must be a list of {{name, label, parent, cohort}}. "
                          f"Received: {value!r}")
    tasks = []
    for i, item in enumerate(value):
        if isinstance(item, TaskConfig):
            tasks.append(item)
            continue
        task = _coerce(item, TaskConfig, f"tasks[{i}]")
        if not task.name or not task.label:
            raise ConfigError(f"tasks[{i}] needs a name and a label. Received: {item!r}")
        tasks.append(task)
    return tasks


def config_from_dict(data: dict) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from nested plain data."""
    if not isinstance(data, dict):
        raise ConfigError(f"A config must be a mapping at its top level. Received: {data!r}")
    return _build(ExperimentConfig, data).validate()


def config_to_dict(cfg: ExperimentConfig) -> dict:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to nested plain data.

    ``tasks.<name>.<key>=value`` sets a key of the task of that name (``tasks.alnm.cohort=all``,
    ``tasks.alnm.loss_weight=0.5``).

    Example:
        >>> apply_overrides({"tasks": [{"name": "alnm", "label": "alnm"}]},
        ...                 ["tasks.alnm.loss_weight=0.5"])["tasks"]
        [{'name': 'alnm', 'label': 'alnm', 'loss_weight': 0.5}]
    """
    data = copy.deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"An override must look like key.sub=value. Received: {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"Override {key!r}: value is not valid YAML ({exc}). "
                              f"Received: {text!r}") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list):
                child = next((t for t in node if isinstance(t, dict) and t.get("name") == part), None)
                if child is None:
                    names = [t.get("name") for t in node if isinstance(t, dict)]
                    raise ConfigError(f"Override {key!r}: no task named {part!r}; tasks: {names}. "
                                      f"Received: {item!r}")
                node = child
                continue
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, (dict, list)) or (isinstance(child, list) and part != "tasks"):
                raise ConfigError(f"Override {key!r}: {part!r} is not a section. Received: {item!r}")
            node = child
        if isinstance(node, list):
            raise ConfigError(f"Override {key!r}: name a task and its key, as "
                              f"tasks.<name>.loss_weight=0.5. Received: {item!r}")
        node[parts[-1]] = value
    return data


def load_config(path: str | None = None, overrides: list[str] | None = None,
                variant: str | None = None) -> ExperimentConfig:
    """Load a YAML config (or the defaults), apply overrides, then a paper variant.

    ``path`` is a file or the name of a shipped preset (``paper``, ``quickstart``; see
    :mod:`usmtl.presets`).
    """
    data: dict = {}
    if path is not None:
        from usmtl.preset_files import resolve_config

        path = resolve_config(path)
        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML ({exc})") from None
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8. Received: "
                                  f"{exc.object[max(0, exc.start - 10):exc.end + 10]!r}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping. Received: {type(data).__name__}")
    try:
        cfg = config_from_dict(apply_overrides(data, overrides or []))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
    if variant:
        cfg = apply_variant(cfg, variant)
    return cfg


def save_config(cfg: ExperimentConfig, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)


# ---------------------------------------------------------------------------------------
# The paper's four model variants
# ---------------------------------------------------------------------------------------

VARIANTS = ("single-bm", "single-alnm", "multitask", "multitask-hl")


def apply_variant(cfg: ExperimentConfig, variant: str) -> ExperimentConfig:
    """Derive one of the paper's four variants from a config's task hierarchy.

    - ``single-bm``: the root task alone (malignancy), no HL.
    - ``single-alnm``: the root's first child alone (ALNM), no HL.
    - ``multitask``: every task, no HL.
    - ``multitask-hl``: every task with the HL on each parent -> child edge.
    - ``single:<task>``: any one task alone.
    """
    from usmtl.tasks import TaskGraph

    cfg = copy.deepcopy(cfg)
    graph = TaskGraph.from_config(cfg.tasks)
    if cfg.data.stratify is None:
        cfg.data.stratify = cfg.tasks[0].label
    if variant == "single-bm":
        keep = graph.roots[0]
    elif variant == "single-alnm":
        children = graph.children(graph.roots[0])
        if not children:
            raise ConfigError(f"Variant 'single-alnm' needs a child of task {graph.roots[0]!r}. "
                              f"Received tasks: {graph.names}")
        keep = children[0]
    elif variant.startswith("single:"):
        keep = variant.split(":", 1)[1]
        if keep not in graph.names:
            raise ConfigError(f"Unknown task in variant {variant!r}; tasks: {graph.names}. "
                              f"Received: {keep!r}")
    elif variant in ("multitask", "multitask-hl"):
        cfg.model.hinge = variant == "multitask-hl"
        cfg.name = f"{cfg.name}-{variant}"
        return cfg.validate()
    else:
        raise ConfigError(f"Unknown variant; valid: {list(VARIANTS)} or 'single:<task>'. "
                          f"Received: {variant!r}")
    # Alone, a task keeps its cohort: parent_positive becomes the parent's label source, so
    # Single-ALNM is trained and scored on the malignant masses as Multi-Task's ALNM head is.
    cfg.tasks = [TaskConfig(t.name, t.label, None, graph.by_name[t.name].cohort or "all")
                 for t in cfg.tasks if t.name == keep]
    cfg.model.hinge = False
    cfg.name = f"{cfg.name}-{variant.replace(':', '-')}"
    return cfg.validate()
