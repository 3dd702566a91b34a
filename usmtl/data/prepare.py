"""The data of a run, checked before anything is written: manifest, task labels, split.

``usmtl fit``, ``usmtl radiomics fit`` and the experiment drivers all start here, so a CNN
and the radiomics baseline see the same patients on the same side of the split.

Example:
    >>> from usmtl.config import load_config
    >>> from usmtl.data.prepare import prepare_data
    >>> data = prepare_data(load_config("configs/quickstart.yaml"),
    ...                     "demo/manifest.csv")  # doctest: +SKIP
    >>> sorted(set(data.row_split))  # doctest: +SKIP
    ['test', 'train', 'val']
"""

from __future__ import annotations

import dataclasses

import numpy as np

from usmtl.data.manifest import Manifest, read_manifest
from usmtl.data.splits import load_split, make_split, rows_in_split, split_from_manifest
from usmtl.errors import UsmtlError
from usmtl.tasks import Task, TaskGraph, label_table, task_labels


@dataclasses.dataclass
class PreparedData:
    manifest: Manifest
    graph: TaskGraph
    labels: dict
    split: dict
    row_split: np.ndarray


def prepare_data(cfg, manifest_path: str, split_file: str | None = None) -> PreparedData:
    """Read the manifest, derive task labels and the patient split; raise on any problem.

    ``cfg``: an :class:`~usmtl.config.ExperimentConfig`. ``split_file``: a split CSV or a run
    directory to reuse; without it the manifest's own ``split`` column, else a new patient
    split from ``cfg.data``.
    """
    manifest = read_manifest(manifest_path)
    manifest.require_images()
    graph = TaskGraph.from_config(cfg.tasks)
    labels = label_table(manifest, graph)
    if split_file:
        split = load_split(split_file)
    else:
        split = split_from_manifest(manifest)
        if split is None:
            stratify = cfg.data.stratify or cfg.tasks[0].label
            strata = task_labels(manifest, Task("stratify", stratify))
            split = make_split(manifest.patient_ids(), strata, cfg.data.test_fraction,
                               cfg.data.val_fraction, cfg.data.split_seed)
    row_split = rows_in_split(manifest, split)
    train = row_split == "train"
    if not train.any():
        raise UsmtlError(f"{manifest_path}: the split leaves no training images. "
                         f"Received: {len(manifest)} images, split counts "
                         f"{dict(zip(*np.unique(row_split, return_counts=True)))}")
    for name, values in labels.items():
        if np.isnan(values[train]).all():
            raise UsmtlError(f"Task {name!r} has no known label among the training images; "
                             f"check its label source {graph.by_name[name].label!r}")
    return PreparedData(manifest, graph, labels, split, row_split)
