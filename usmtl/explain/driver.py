"""``explain`` and ``profile_runs``: Grad-CAM maps of a run for images on disk, written as
arrays and figures; the radial profile of one or several runs.

Inputs are chosen as :func:`usmtl.predict.predict` chooses them: one image with a box, or a
manifest, optionally only the rows of one split of the run (its ``split.csv``). Each RoI is
cropped with the run's own ``data`` settings (size, margin, squaring), exactly as the model
saw it in training, and fed as float32 in 0..255.

Output layout of :func:`explain` (``out``)::

    <stem>_<task>.npy        float32 heatmap in [0, 1], shape (image_size, image_size)
    <stem>_<task>.png        the RoI and the RoI under its heatmap, with a colour bar
    contact_sheet.png        the first ``sheet_max`` images, every task
    explanations.csv         one row per image and task (probability, label, share of CAM
                             mass inside the box/mask, ``cam_all_zero``, file names)
    compare-<name>/          with ``compare``: the same for the second run
    side_by_side.png         with ``compare``: RoI | run A | run B per task (paper, Figure 6)

With ``audit=True`` (``usmtl explain --audit``) it writes the shortcut audit instead
(``audit.csv``, ``audit.json``, ``audit.md``; :mod:`usmtl.explain.audit`): how much CAM mass
lies on the lesion box, mask and burned-in marks against their area shares.

An all-zero map (``cam_all_zero`` = 1) means no positive evidence for that head at that
layer: Grad-CAM's ReLU keeps only what raises the head's logit, and nothing there does. Its
PNG panel says "no positive evidence at LAYER" instead of showing an empty heatmap, the contact
sheet counts such maps, and its ``cam_in_box`` is empty (no mass to share). To look further,
explain again with ``evidence="negative"`` (the map of what lowers the logit: Grad-CAM of
``1 - p``; files ``<stem>_<task>_negative.*``) or at another ``layer``; see
:mod:`usmtl.explain.gradcam`.

References: Selvaraju et al., ICCV 2017 (Grad-CAM); Chattopadhay et al., WACV 2018
(Grad-CAM++); Li, Guo et al., Front. Physiol. 13:882648, 2022 (Figure 6, Figure S1).

Example:
    >>> from usmtl.explain import explain, profile_runs
    >>> frame = explain("runs/quickstart", "runs/demo-data/manifest.csv", tasks=["alnm"],
    ...                 split="test", limit=12, out="runs/explain")  # doctest: +SKIP
    >>> frame[["image", "task", "probability", "cam_in_box"]].head()  # doctest: +SKIP
    >>> profile_runs(["runs/single-alnm", "runs/multitask-hl"], "data/manifest.csv",
    ...              tasks=["alnm"], split="test", out="runs/profile")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.explain.gradcam import ExplainError, GradCam, all_zero, task_heads
from usmtl.explain.inputs import (Inputs, box_mask, keras_run, load_batch, ordered_tasks,
                                  region_shares, roi_box, run_name, select_inputs)
from usmtl.explain.plots import (Panel, empty_map_text, save_contact_sheet, save_overlay,
                                 save_profile_plot, save_side_by_side)
from usmtl.explain.profile import R_MAX, image_profiles, summarise_profiles

SHEET_MAX = 64
SIDE_BY_SIDE_MAX = 16
PROFILE_CSV = "radial_profile.csv"
PROFILE_PNG = "radial_profile.png"


# ---------------------------------------------------------------------------------------
# Explaining one run
# ---------------------------------------------------------------------------------------


def _explain_loaded(model, cfg, inputs: Inputs, tasks, method, layer, out, batch_size,
                    progress, keep: int, name: str, evidence: str = "positive"):
    """Write every map and overlay of one run; return (rows, panels of the first ``keep``)."""
    cam = GradCam(model, tasks, layer, method, evidence)
    suffix = "" if evidence == "positive" else f"_{evidence}"
    empty_text = empty_map_text(cam.layer, evidence)
    rows, panels = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(inputs), desc=f"Grad-CAM {name}", unit="image")
    os.makedirs(out, exist_ok=True)
    for start in range(0, len(inputs), batch_size):
        index = list(range(start, min(start + batch_size, len(inputs))))
        rois, masks = load_batch(inputs, index, cfg.data)
        maps, probs = cam(rois.astype(np.float32))
        for j, i in enumerate(index):
            stem = inputs.stems[i]
            box = roi_box(inputs.boxes[i], cfg.data)
            box_region = box_mask(rois.shape[1:3], box)
            outline = masks[j] if masks[j] is not None else box
            labels = {t: (float(inputs.labels.at[i, t]) if t in inputs.labels else float("nan"))
                      for t in cam.tasks}
            for task in cam.tasks:
                heat = maps[task][j]
                npy, png = f"{stem}_{task}{suffix}.npy", f"{stem}_{task}{suffix}.png"
                np.save(os.path.join(out, npy), heat.astype(np.float32))
                title = (f"{stem} | {name}: {task} p={probs[task][j]:.2f}"
                         + (f" y={int(labels[task])}" if not np.isnan(labels[task]) else ""))
                save_overlay(os.path.join(out, png), rois[j], heat, title, outline, method,
                             empty_text, evidence)
                row = {"image": inputs.images[i], "patient_id": inputs.patient_ids[i],
                       "split": inputs.splits[i], "stem": stem, "run": name, "task": task,
                       "method": method, "layer": cam.layer, "evidence": evidence,
                       "probability": float(probs[task][j]), "label": labels[task],
                       "cam_all_zero": int(all_zero(heat)),
                       **region_shares(heat, box_region, masks[j]),
                       "heatmap": npy, "overlay": png}
                rows.append(row)
            if i < keep:
                panels.append(Panel(stem, rois[j], {t: maps[t][j] for t in cam.tasks},
                                    {t: float(probs[t][j]) for t in cam.tasks}, labels, outline,
                                    empty_text))
        if bar is not None:
            bar.update(len(index))
    if bar is not None:
        bar.close()
    return rows, panels, cam


def explain(run: str, input_path: str, tasks=None, method: str = "gradcam",
            layer: str | None = None, box: str | None = None, split: str | None = None,
            limit: int | None = None, out: str = "explain", compare: str | None = None,
            batch_size: int = 16, progress: bool = False, sheet_max: int = SHEET_MAX,
            evidence: str = "positive", audit: bool = False, n_boot: int = 1000) -> pd.DataFrame:
    """Grad-CAM (or Grad-CAM++) maps of ``tasks`` of ``run`` (a run directory or ``.keras``
    file) for one image with ``box`` or the rows of a manifest; see the module docstring for
    what is written to ``out``. ``tasks``: head names, ``None`` or ``"all"`` for every head.
    ``layer``: default the backbone's last convolutional block. ``compare``: a second run
    explained on the same images (tasks it lacks are left out of it), with a side-by-side
    figure of the tasks both have. Returns ``explanations.csv`` as a frame.

    ``evidence``: ``"positive"`` (default: what raises each head's logit) or ``"negative"``
    (what lowers it, the map of ``1 - p``; files ``<stem>_<task>_negative.*``). A map that is
    all zero (``cam_all_zero`` = 1) shows no evidence of that sign at ``layer``: its panel
    says so; explain the other sign or another layer to look further.

    ``audit``: the shortcut audit (:func:`usmtl.explain.audit.shortcut_audit`) instead of
    the per-image heatmaps and figures: ``audit.csv``, ``audit.json`` and ``audit.md`` in
    ``out`` (CAM mass on the lesion box, mask and burned-in marks against their area
    shares, with ``n_boot`` patient-bootstrap resamples); not with ``compare`` (audit each
    run on its own).

    Returns:
        ``explanations.csv`` as a frame: per image and task the probability, label, share of
        CAM mass inside the box and the mask, ``cam_all_zero`` (with ``audit``: ``audit.csv``).

    Raises:
        UsmtlError: an export instead of a Keras model, an unknown task, layer or method,
            a single image without ``box``, ``audit`` with ``compare``.

    Example:
        >>> from usmtl.explain import explain
        >>> frame = explain("runs/multitask-hl", "demo/manifest.csv", ["malignancy", "alnm"],
        ...                 split="test", limit=8, out="cams")  # doctest: +SKIP
        >>> frame.groupby("task")["cam_in_box"].mean()  # doctest: +SKIP
    """
    from usmtl.explain.gradcam import check_evidence
    from usmtl.run import write_csv_atomic

    check_evidence(evidence)
    if audit:
        if compare is not None:
            raise UsmtlError(f"--audit takes one run: audit each run on its own. "
                             f"Received: --compare {compare}")
        from usmtl.explain.audit import shortcut_audit

        return shortcut_audit(run, input_path, split, tasks, method=method, layer=layer,
                              limit=limit, out=out, box=box, batch_size=batch_size,
                              evidence=evidence, n_boot=n_boot, progress=progress)["images"]
    model, cfg = keras_run(run)
    tasks = ordered_tasks(model, cfg, tasks)
    name = run_name(run)
    if compare is not None:  # check the second run before the long part
        model_b, cfg_b = keras_run(compare)
        name_b = run_name(compare)
        if name_b == name:
            name_b = f"{name_b} (B)"
        valid_b = task_heads(model_b)
        common = [t for t in tasks if t in valid_b]
        if not common:
            raise ExplainError(f"--compare run {compare} has none of the tasks asked for; its "
                               f"tasks: {valid_b}. Received: {tasks}")
        # Layer names differ between architectures: the second run uses its own last block
        # unless it has the requested layer too.
        layer_b = layer if layer is not None and layer in [l.name for l in model_b.layers] else None
    inputs = select_inputs(run, input_path, box, split, limit, cfg)
    keep = max(sheet_max, SIDE_BY_SIDE_MAX if compare else 0)
    rows, panels, cam = _explain_loaded(model, cfg, inputs, tasks, method, layer, out,
                                        batch_size, progress, keep, name, evidence)
    what = "Grad-CAM++" if method == "gradcam++" else "Grad-CAM"
    if evidence != "positive":
        what = f"{what} ({evidence} evidence)"
    save_contact_sheet(os.path.join(out, "contact_sheet.png"), panels[:sheet_max], cam.tasks,
                       f"{what} of {name} at {cam.layer}")
    if compare is not None:
        folder_b = os.path.join(out, "compare-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name_b))
        rows_b, panels_b, cam_b = _explain_loaded(model_b, cfg_b, inputs, common, method, layer_b,
                                                  folder_b, batch_size, progress, keep, name_b,
                                                  evidence)
        save_contact_sheet(os.path.join(folder_b, "contact_sheet.png"), panels_b[:sheet_max],
                           cam_b.tasks, f"{what} of {name_b} at {cam_b.layer}")
        for row in rows_b:
            row["heatmap"] = os.path.join(os.path.basename(folder_b), row["heatmap"])
            row["overlay"] = os.path.join(os.path.basename(folder_b), row["overlay"])
        rows += rows_b
        save_side_by_side(os.path.join(out, "side_by_side.png"), panels[:SIDE_BY_SIDE_MAX],
                          panels_b[:SIDE_BY_SIDE_MAX], common, (name, name_b),
                          f"{what}: {name} vs {name_b}")
    frame = pd.DataFrame(rows)
    write_csv_atomic(os.path.join(out, "explanations.csv"), frame)
    return frame


# ---------------------------------------------------------------------------------------
# The radial profile of one or several runs
# ---------------------------------------------------------------------------------------


def profile_runs(runs, input_path: str, tasks=None, method: str = "gradcam",
                 layer: str | None = None, split: str | None = None, limit: int | None = None,
                 bins: int = 20, out: str | None = None, names=None, batch_size: int = 16,
                 progress: bool = False) -> pd.DataFrame:
    """Radial CAM profile (:mod:`usmtl.explain.profile`) of each run and task over the rows
    of a manifest (``split``: of the *first* run's ``split.csv``), on one figure.

    Writes ``radial_profile.csv`` (``run, task, method, r_lo, r_hi, r_mid, mean, sem,
    n_images, n_all_zero``) and ``radial_profile.png`` to ``out`` when given; returns the
    frame. ``n_all_zero``: the images whose map is all zero (no positive evidence at the
    layer); they count in the means as zero everywhere.
    """
    runs = [runs] if isinstance(runs, str) else list(runs)
    if not runs:
        raise UsmtlError("profile needs at least one run. Received: []")
    if names is not None and len(names) != len(runs):
        raise UsmtlError(f"Give one name per run. Received: {len(names)} names for {len(runs)} runs")
    if bins < 1:
        raise UsmtlError(f"--bins must be >= 1. Received: {bins}")
    names = list(names) if names else [run_name(r) for r in runs]
    if len(set(names)) < len(names):
        names = [os.path.abspath(r) for r in runs]
    loaded = [keras_run(r) for r in runs]
    # Check every run's tasks and layer before the long part.
    checked = []
    for run, (model, cfg) in zip(runs, loaded):
        try:
            checked.append(ordered_tasks(model, cfg, tasks))
        except ExplainError as exc:
            raise ExplainError(f"{run}: {exc}") from None
        if layer is not None:
            from usmtl.explain.gradcam import check_layer

            try:
                check_layer(model, layer)
            except ExplainError as exc:
                raise ExplainError(f"{run}: {exc}") from None
    inputs = select_inputs(runs[0], input_path, None, split, limit, loaded[0][1])
    frames = []
    for run, name, (model, cfg), run_tasks in zip(runs, names, loaded, checked):
        cam = GradCam(model, run_tasks, layer, method)
        profiles = {t: [] for t in cam.tasks}
        zero = {t: 0 for t in cam.tasks}
        index_all = range(len(inputs))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(inputs), desc=f"profile {name}", unit="image")
        for start in range(0, len(inputs), batch_size):
            index = list(index_all[start:start + batch_size])
            rois, _ = load_batch(dataclasses.replace(inputs, masks=[None] * len(inputs)), index, cfg.data)
            maps, _ = cam(rois.astype(np.float32))
            for t in cam.tasks:
                profiles[t].append(image_profiles(maps[t], bins, R_MAX))
                zero[t] += int(all_zero(maps[t]).sum())
            if bar is not None:
                bar.update(len(index))
        if bar is not None:
            bar.close()
        for t in cam.tasks:
            frame = summarise_profiles(np.concatenate(profiles[t]), bins, R_MAX)
            frame.insert(0, "layer", cam.layer)
            frame.insert(0, "method", method)
            frame.insert(0, "task", t)
            frame.insert(0, "run", name)
            frame["n_all_zero"] = zero[t]
            frames.append(frame)
    result = pd.concat(frames, ignore_index=True)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        from usmtl.run import write_csv_atomic

        write_csv_atomic(os.path.join(out, PROFILE_CSV), result)
        what = "Grad-CAM++" if method == "gradcam++" else "Grad-CAM"
        save_profile_plot(os.path.join(out, PROFILE_PNG), result,
                          f"Radial {what} profile over {len(inputs)} image(s)")
    return result
