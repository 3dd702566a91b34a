"""Predictions from a run directory (its best checkpoint), a saved ``.keras`` model, or an
exported model (``usmtl export``: a SavedModel folder or a ``.tflite`` file).

The RoI settings (size, margin, squaring) come from the run's ``config.yaml``, found beside
the model or in a parent folder (an export carries a copy in its side files), so a
prediction sees exactly what training saw. Every kind of model gives the same prediction
frame; an export's ``split`` column comes from its source run's ``split.csv`` when that run is
still where it was exported from.

Example:
    >>> from usmtl.predict import predict
    >>> frame = predict("runs/quickstart", "demo/manifest.csv", split="test")  # doctest: +SKIP
    >>> list(frame.columns)[:5]  # doctest: +SKIP
    ['image', 'patient_id', 'split', 'p_malignancy', 'y_malignancy']
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from usmtl.config import ExperimentConfig, load_config
from usmtl.errors import UsmtlError


def find_run_files(model_path: str) -> tuple[str, str]:
    """``(model file, config file)`` for a run directory or a ``.keras`` file in one."""
    from usmtl.run import BEST_MODEL, CONFIG_FILE, Run

    if os.path.isdir(model_path):
        model_file = Run(model_path).model_path("best")
        if not os.path.isfile(model_file):
            raise UsmtlError(f"{model_path}: no {BEST_MODEL}; is it a finished run directory? "
                             f"(An exported model holds saved_model.pb or model.tflite.) "
                             f"Received: {model_path}")
    elif model_path.endswith(".keras"):
        model_file = model_path
    else:
        raise UsmtlError(f"MODEL must be a run directory, a .keras file, a SavedModel export folder "
                         f"or a .tflite file. Received: {model_path}")
    folder = os.path.dirname(os.path.abspath(model_file))
    for _ in range(3):
        candidate = os.path.join(folder, CONFIG_FILE)
        if os.path.isfile(candidate):
            return model_file, candidate
        folder = os.path.dirname(folder)
    raise UsmtlError(f"No {CONFIG_FILE} found beside {model_file} or in its parent folders; "
                     f"it holds the RoI settings the model was trained with")


def load_run(model_path: str):
    """``(keras model, ExperimentConfig)`` of a run directory or ``.keras`` file."""
    from usmtl.run import load_keras_model

    model_file, config_file = find_run_files(model_path)
    return load_keras_model(model_file), load_config(config_file)


def parse_box(text: str):
    from usmtl.data.manifest import Box

    try:
        values = [int(v) for v in text.split(",")]
        if len(values) != 4:
            raise ValueError
    except ValueError:
        raise UsmtlError(f"--box must be x_min,y_min,x_max,y_max in whole pixels. "
                         f"Received: {text!r}") from None
    box = Box(*values)
    if box.is_empty:
        raise UsmtlError(f"--box is empty. Received: {text!r}")
    return box


def open_model(model_path: str):
    """``(model, cfg, run folder or None)``: a Keras model of a run or ``.keras`` file, or an
    :class:`usmtl.export.runtime.ExportedModel`; the run folder is where ``split.csv`` may be."""
    from usmtl.export.runtime import open_export

    exported = open_export(model_path)
    if exported is not None:
        return exported, exported.cfg, exported.meta.get("source", {}).get("run_dir")
    model, cfg = load_run(model_path)
    return model, cfg, os.path.dirname(find_run_files(model_path)[1])


def predict_arrays(model, cfg: ExperimentConfig, paths, boxes, batch_size: int = 32) -> dict:
    """``{task: probabilities}`` for image files and their boxes; ``model`` is a Keras model
    or an exported one (:func:`open_model`)."""
    from usmtl.export.runtime import ExportedModel

    if isinstance(model, ExportedModel):
        from usmtl.data.pipeline import roi_images

        crops = roi_images(list(paths), list(boxes), cfg.data).batch(batch_size)
        return model.predict(crops.as_numpy_iterator())

    from usmtl.data.pipeline import make_dataset

    dataset = make_dataset(paths, boxes, None, cfg.data, batch_size, training=False)
    probs = model.predict(dataset, verbose=0)
    return {name: np.ravel(p).astype(float) for name, p in probs.items()}


def predict(model_path: str, input_path: str, box: str | None = None, split: str | None = None,
            batch_size: int = 32) -> pd.DataFrame:
    """Prediction frame (see :mod:`usmtl.evaluation.predictions`) for one image with ``box``
    or for a manifest (optionally only the rows of one split of the run). ``model_path``: a
    run directory, a ``.keras`` file, a SavedModel export folder or a ``.tflite`` file."""
    from usmtl.data.manifest import read_manifest
    from usmtl.data.splits import select_split_rows
    from usmtl.evaluation.predictions import predictions_frame
    from usmtl.run import Run
    from usmtl.tasks import TaskGraph, label_table

    model, cfg, run_dir = open_model(model_path)
    graph = TaskGraph.from_config(cfg.tasks)
    if box is not None or not input_path.lower().endswith(".csv"):
        if box is None:
            raise UsmtlError(f"A single image needs --box x_min,y_min,x_max,y_max. Received: {input_path}")
        the_box = parse_box(box)
        from usmtl.data.io import read_image

        height, width = read_image(input_path).shape[:2]
        if not the_box.inside(height, width):
            raise UsmtlError(f"--box {box} lies outside the {width}x{height} image {input_path}")
        probs = predict_arrays(model, cfg, [input_path], [the_box], batch_size)
        return predictions_frame([input_path], [""], [""], probs, None, graph.edges)

    manifest = read_manifest(input_path)
    split_file = Run(run_dir).split_path if run_dir else None
    manifest, splits = select_split_rows(manifest, split_file, split, input_path, model_path)
    manifest.require_images()
    present = graph.present(manifest.frame.columns).tasks
    labels = label_table(manifest, TaskGraph(present)) if present else {}
    probs = predict_arrays(model, cfg, manifest.image_paths(), manifest.boxes(), batch_size)
    return predictions_frame(manifest.frame["image"], manifest.patient_ids(), splits, probs,
                             labels, graph.edges)
