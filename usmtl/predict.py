"""Predictions from a run directory (its best checkpoint), a saved ``.keras`` model, or an
exported model (``usmtl export``: a SavedModel folder or a ``.tflite`` file): any model the
one door opens (:func:`usmtl.formats.open_model`, re-exported here as :func:`open_model`).

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

import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.formats import open_model  # the one door, re-exported: .model, .cfg, .run_dir


def load_run(model_path: str):
    """``(keras model, ExperimentConfig)`` of a run directory or ``.keras`` file."""
    opened = open_model(model_path)
    return opened.keras_model(), opened.cfg


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


def predict(model_path: str, input_path: str, box: str | None = None, split: str | None = None,
            batch_size: int = 32, calibrated: bool = True,
            trust_model: bool = False, tta: str = "none") -> pd.DataFrame:
    """Probabilities of every head for one image with ``box`` or for a manifest.

    Args:
        model_path: any model :func:`usmtl.formats.open_model` opens: a run directory, a
            ``.keras`` file, a SavedModel export folder or a ``.tflite`` file.
        input_path: a manifest CSV or a packed crop file (``usmtl pack``), or one image
            (PNG, JPEG, BMP, DICOM) with ``box``.
        box: ``"x_min,y_min,x_max,y_max"`` for a single image (0-based, max exclusive).
        split: only the manifest rows of this split of the model's run (``train``, ``val``,
            ``test``).
        batch_size: images per forward pass.
        calibrated: apply the model's recalibration (``usmtl calibrate``) when it has one:
            ``p_<task>`` is then calibrated and ``raw_<task>`` holds the head's own score.
        trust_model: load a SavedModel whose graph reads or writes files or runs Python
            (refused otherwise: :mod:`usmtl.formats.opcheck`).
        tta: test-time augmentation, ``none`` or ``flip`` (the mean probability of the crop
            and its mirror; :mod:`usmtl.evaluation.ensemble`).

    Returns:
        The prediction frame (:mod:`usmtl.evaluation.predictions`): ``image, patient_id,
        split``, ``p_<task>`` (``raw_<task>`` when calibrated) and, where the manifest has
        them, ``y_<task>`` restricted to each task's cohort, then the hierarchy-violation
        columns.

    Raises:
        UsmtlError: a path no format opens, a single image without ``--box`` or with a box
            outside it, a ``split`` without the run's split file.
        ManifestError: a bad manifest, every problem by line.

    Example:
        >>> from usmtl.predict import predict
        >>> frame = predict("runs/quickstart", "demo/manifest.csv", split="test")  # doctest: +SKIP
        >>> frame[["p_malignancy", "y_malignancy"]].head(2)  # doctest: +SKIP
    """
    from usmtl.data.crops import Crops
    from usmtl.data.manifest import read_manifest
    from usmtl.data.splits import select_split_rows
    from usmtl.evaluation.ensemble import check_tta, member_column, predict_with_tta
    from usmtl.evaluation.predictions import predictions_frame
    from usmtl.evaluation.calibration_maps import apply_calibration
    from usmtl.run import Run
    from usmtl.data.prepare import require_usable
    from usmtl.tasks import TaskGraph, label_table

    check_tta(tta)
    opened = open_model(model_path, trust=trust_model)
    model, cfg, run_dir = opened.model, opened.cfg, opened.run_dir
    graph = TaskGraph.from_config(cfg.tasks)
    from usmtl.data.pack import is_pack

    if box is not None or not (input_path.lower().endswith(".csv") or is_pack(input_path)):
        if box is None:
            raise UsmtlError(f"A single image needs --box x_min,y_min,x_max,y_max. Received: {input_path}")
        the_box = parse_box(box)
        from usmtl.data.io import read_image

        height, width = read_image(input_path).shape[:2]
        if not the_box.inside(height, width):
            raise UsmtlError(f"--box {box} lies outside the {width}x{height} image {input_path}")
        probs = predict_with_tta(model, Crops.from_files([input_path], [the_box], cfg.data),
                                 batch_size, tta)
        frame = predictions_frame([input_path], [""], [""], probs, None, graph.edges)
        return apply_calibration(frame, opened.calibration if calibrated else None, graph.edges)

    manifest = read_manifest(input_path)
    split_file = Run(run_dir).split_path if run_dir else None
    manifest, splits = select_split_rows(manifest, split_file, split, input_path, model_path)
    present = graph.present(manifest.frame.columns).tasks
    # usmtl check's checks and every image decoded, before anything is predicted or written
    require_usable(manifest, graph=TaskGraph(present) if present else None)
    labels = label_table(manifest, TaskGraph(present)) if present else {}
    crops = Crops.from_manifest(manifest, range(len(manifest)), cfg.data)
    members = None
    if hasattr(model, "member_predictions"):  # an ensemble: keep each member's score
        if tta != "none":
            raise UsmtlError(f"{model_path} is an ensemble: its test-time augmentation is set "
                             f"when it is made (usmtl ensemble --tta). Received: --tta {tta}")
        members = model.member_predictions(crops, batch_size)
        probs = model.combine_members(members)
    else:
        probs = predict_with_tta(model, crops, batch_size, tta)
    frame = predictions_frame(manifest.frame["image"], manifest.patient_ids(), splits, probs,
                              labels, graph.edges)
    for k, member in enumerate(members or (), start=1):
        for task, values in member.items():
            frame[member_column(k, task)] = values
    return apply_calibration(frame, opened.calibration if calibrated else None, graph.edges)
