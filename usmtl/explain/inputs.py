"""What :mod:`usmtl.explain.driver` and :mod:`usmtl.explain.audit` both read: the images to
explain (chosen as :func:`usmtl.predict.predict` chooses them), their RoIs cropped with the
run's own ``data`` settings, the lesion's box and mask in RoI coordinates, the share of a
map's mass inside them, and the run's Keras model with its tasks in order.

Example:
    >>> from usmtl.explain.inputs import run_name
    >>> run_name("runs/paper-hl/checkpoints/last.keras")
    'paper-hl-last'
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.explain.gradcam import check_tasks


@dataclasses.dataclass
class Inputs:
    """The images to explain: paths, boxes, optional masks, names and known labels."""

    paths: list
    boxes: list
    masks: list
    stems: list
    images: list  # the manifest's 'image' cell (or the path given)
    patient_ids: list
    splits: list
    labels: pd.DataFrame  # one column per label source found: task labels, NaN = unknown

    def __len__(self) -> int:
        return len(self.paths)


def unique_stems(paths) -> list[str]:
    """File-name stems of ``paths``, made safe and unique (``a``, ``a_2``, ...)."""
    stems, seen = [], {}
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(path))[0]) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def select_inputs(run: str | None, input_path: str, box: str | None = None, split: str | None = None,
                  limit: int | None = None, cfg=None) -> Inputs:
    """The rows to explain, as :func:`usmtl.predict.predict` selects them: one image with
    ``box`` (``x_min,y_min,x_max,y_max``), or a manifest, optionally only ``split`` of the
    run's ``split.csv``; then the first ``limit`` rows. ``run=None``: no split information.
    ``cfg`` (the run's config) gives the task labels, when the manifest has them."""
    from usmtl.data.io import read_image
    from usmtl.data.manifest import read_manifest
    from usmtl.data.pack import is_pack
    from usmtl.data.prepare import require_usable
    from usmtl.data.splits import select_split_rows
    from usmtl.formats import open_model
    from usmtl.predict import parse_box
    from usmtl.run import Run
    from usmtl.tasks import TaskGraph, label_table

    if limit is not None and limit < 1:
        raise UsmtlError(f"--limit must be a whole number >= 1. Received: {limit}")
    if box is not None or not (str(input_path).lower().endswith(".csv") or is_pack(input_path)):
        if box is None:
            raise UsmtlError(f"A single image needs --box x_min,y_min,x_max,y_max. Received: {input_path}")
        if split is not None:
            raise UsmtlError(f"--split applies to a manifest, not to one image. Received: {input_path}")
        the_box = parse_box(box)
        height, width = read_image(input_path).shape[:2]
        if not the_box.inside(height, width):
            raise UsmtlError(f"--box {box} lies outside the {width}x{height} image {input_path}")
        return Inputs([input_path], [the_box], [None], unique_stems([input_path]), [input_path],
                      [""], [""], pd.DataFrame(index=range(1)))

    manifest = read_manifest(input_path)
    manifest.require_image_files("Grad-CAM overlays on the whole image")
    run_dir = None if run is None else open_model(run).run_dir
    split_file = None if run_dir is None else Run(run_dir).split_path
    manifest, splits = select_split_rows(manifest, split_file, split, input_path, run or "")
    if limit is not None and limit < len(manifest):
        keep = np.arange(len(manifest)) < limit
        manifest, splits = manifest.subset(keep), splits[keep]
    require_usable(manifest)  # usmtl check's checks and every image decoded, before writing
    labels = pd.DataFrame(index=range(len(manifest)))
    if cfg is not None:
        graph = TaskGraph.from_config(cfg.tasks)
        present = graph.present(manifest.frame.columns).tasks
        if present:
            labels = pd.DataFrame(label_table(manifest, TaskGraph(present)))
    paths = manifest.image_paths()
    return Inputs(paths, manifest.boxes(), manifest.mask_paths(), unique_stems(paths),
                  list(manifest.frame["image"]), list(manifest.patient_ids()), list(splits), labels)


def roi_box(box, data) -> tuple[float, float, float, float]:
    """``box`` in the pixel coordinates of its resized RoI (``x0, y0, x1, y1``)."""
    from usmtl.data.roi import roi_window

    x0, y0, x1, y1 = roi_window(box, data.roi_margin, data.square_roi)
    sx, sy = data.image_size / (x1 - x0), data.image_size / (y1 - y0)
    return ((box.x_min - x0) * sx, (box.y_min - y0) * sy, (box.x_max - x0) * sx, (box.y_max - y0) * sy)


def load_batch(inputs: Inputs, index, data):
    """RoIs ``(n, size, size, 3)`` uint8 and lesion masks (bool, or None) of rows ``index``."""
    from usmtl.data.io import read_mask
    from usmtl.data.roi import crop_roi, load_roi

    rois, masks = [], []
    for i in index:
        rois.append(load_roi(inputs.paths[i], inputs.boxes[i], data.roi_margin, data.square_roi,
                             data.image_size, data.inpaint_marks))
        mask = None
        if inputs.masks[i] and os.path.isfile(inputs.masks[i]):
            full = read_mask(inputs.masks[i]).astype(np.uint8)
            mask = crop_roi(full, inputs.boxes[i], data.roi_margin, data.square_roi,
                            data.image_size) > 0
        masks.append(mask)
    return np.stack(rois), masks


def mass_inside(cam: np.ndarray, region: np.ndarray) -> float:
    """The share of ``cam``'s mass inside the bool ``region`` (NaN for an all-zero map)."""
    total = float(cam.sum())
    return float(cam[region].sum()) / total if total > 0 else float("nan")


def box_mask(shape, box) -> np.ndarray:
    """``(H, W)`` bool: the pixels of a RoI-coordinate box ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = (max(0, int(round(v))) for v in box)
    region = np.zeros(shape, bool)
    region[y0:y1, x0:x1] = True
    return region


def region_shares(heat: np.ndarray, box_region: np.ndarray, mask: np.ndarray | None) -> dict:
    """Share of a map's mass inside the lesion box and mask, and their area shares of the
    RoI (the share a uniform map would put there): ``cam_in_box``, ``box_fraction``,
    ``cam_in_mask``, ``mask_fraction`` (NaN without a mask; the mass shares are NaN for an
    all-zero map)."""
    row = {"cam_in_box": mass_inside(heat, box_region), "box_fraction": float(box_region.mean()),
           "cam_in_mask": float("nan"), "mask_fraction": float("nan")}
    if mask is not None:
        row.update(cam_in_mask=mass_inside(heat, mask), mask_fraction=float(mask.mean()))
    return row


def run_name(run: str) -> str:
    """A short name for a run: its directory's name; for a ``.keras`` file, the run that
    holds it, plus the file's stem unless it is the best checkpoint (``run-last``)."""
    path = os.path.abspath(run).rstrip(os.sep)
    if not path.endswith(".keras"):
        return os.path.basename(path) or path
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(path)
    if os.path.basename(folder) != "checkpoints":
        return stem
    name = os.path.basename(os.path.dirname(folder))
    return name if stem == "best" else f"{name}-{stem}"


def ordered_tasks(model, cfg, tasks) -> list[str]:
    """``tasks`` checked against the model's heads, in the config's task order."""
    chosen = check_tasks(model, tasks)
    order = [t.name for t in cfg.tasks] if cfg is not None else []
    return sorted(chosen, key=lambda t: order.index(t) if t in order else len(order))


def keras_run(run: str):
    """``(keras model, config)`` of ``run`` through the one door (:func:`usmtl.formats.open_model`);
    an export is an error naming it: Grad-CAM needs the model's layers."""
    from usmtl.formats import open_model

    opened = open_model(run)
    runtime = opened.require_keras("Grad-CAM needs a Keras model").model
    members = getattr(runtime, "members", None)
    if members is not None:  # an ensemble: one heatmap per network, not of their average
        raise UsmtlError(f"{run} is an ensemble of {len(members)} models; Grad-CAM explains one "
                         f"network: explain a member (they are listed in its ensemble.json). "
                         f"Received: {run}")
    return runtime.keras, opened.cfg
