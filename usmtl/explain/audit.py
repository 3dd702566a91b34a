"""Shortcut audit: does a head's Grad-CAM look at the lesion, or at what surrounds it?

Over a set of images (a manifest, usually the run's test split), per task head:

- the mean share of CAM mass inside the **lesion box** and inside the **lesion mask** (the
  manifest's ``mask`` column, when present), against the mean share of the RoI those regions
  cover: the share a uniform map would put there. Their ratio (mass share / area share) is
  1.0 for a map no better than uniform, and rises as the map concentrates on the lesion;
- the same for **burned-in marks** (calipers, text; :func:`usmtl.data.marks.detect_marks` on
  the original image, before any ``data.inpaint_marks``) in the RoIs that have any, and the
  share of RoIs with marks. A ratio well above 1 there is a shortcut warning sign: calipers
  sit at the lesion's ends, so read it beside the box ratio.

The ratio is a ratio of means (``mean mass share / mean area share``), with a percentile
patient-bootstrap CI (:func:`usmtl.evaluation.stats.patient_bootstrap_ci`: all images of a
drawn patient come along). All-zero maps (no evidence of that sign at the layer) have no mass
to share and are left out; their count is reported.

**Verdicts** (``RATIO_MIN`` = 1.1, a choice: a map must put at least 10% more of its mass on
the lesion than a uniform map would before we say it attends to it):

- lesion box / mask: *no better than uniform* when the ratio is below ``RATIO_MIN`` or its CI
  reaches down to 1.0 (the data cannot tell it from uniform); else *above uniform*;
- marks: *drawn to marks* when the ratio is at least ``RATIO_MIN`` and its CI lies above 1.0
  (without a CI: the threshold alone); else *not drawn to marks*.

Each such verdict is a ``WARNING`` line in ``audit.md``, ``audit.json`` and the command's
output. On BUS-BRA (a ``resnet_small`` multi-task run at 128 px, 30 epochs; its 568 test
images, 19 s on two CPU cores) the malignancy head put 0.40 of its mass in the box against
an area share of 0.44 (ratio 0.91, CI 0.89-0.93) and 0.21 in the mask against 0.31 (0.68):
no better than uniform; on the marks 0.043 against 0.019 (2.33, CI 2.16-2.55), in the 84%
of RoIs that hold marks: drawn to marks. Its child heads (IDC, BI-RADS 5) were above
uniform on the lesion (1.15-1.42) and drawn to marks too (1.40-1.60).

Files (``out``): ``audit.csv`` (one row per image and task), ``audit.json`` (the summary,
settings and warnings) and ``audit.md`` (the table and the warnings).

Example:
    >>> import numpy as np
    >>> from usmtl.explain.audit import summarise
    >>> import pandas as pd
    >>> rows = pd.DataFrame({"task": ["t"] * 4, "patient_id": list("abcd"),
    ...                      "cam_in_box": [0.5] * 4, "box_fraction": [0.5] * 4})
    >>> table, warnings = summarise(rows, n_boot=0)
    >>> float(table.loc[0, "ratio"]), table.loc[0, "verdict"]
    (1.0, 'no better than uniform')
    >>> shortcut_audit("runs/paper-hl", "data/manifest.csv", "test", None,
    ...                out="runs/audit")["warnings"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.explain.inputs import (box_mask, keras_run, load_batch, mass_inside, ordered_tasks,
                                  region_shares, roi_box, run_name, select_inputs)

RATIO_MIN = 1.1
AUDIT_CSV = "audit.csv"
AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
# (region, mass column, area column, how the report names it)
REGIONS = (("box", "cam_in_box", "box_fraction", "lesion box"),
           ("mask", "cam_in_mask", "mask_fraction", "lesion mask"),
           ("marks", "cam_on_marks", "marks_fraction", "burned-in marks"))
UNIFORM = "no better than uniform"
ABOVE = "above uniform"
DRAWN = "drawn to marks"
NOT_DRAWN = "not drawn to marks"
# A resized mark mask is kept where at least a quarter of a pixel was a mark: marks are
# thin, and shrinking a crop would otherwise erase them.
MARK_LEVEL = 64


# ---------------------------------------------------------------------------------------
# Per image: pure functions of arrays
# ---------------------------------------------------------------------------------------


def roi_marks(path: str, box, data) -> tuple[np.ndarray, dict]:
    """Burned-in marks of the image at ``path``, detected on the whole original image (so a
    model trained with ``data.inpaint_marks`` is audited on where the marks *were*) and
    cropped like its RoI. Returns ``(RoI mask (size, size) bool, mark_stats of the image)``."""
    from usmtl.data.io import read_image
    from usmtl.data.marks import detect_marks, mark_stats
    from usmtl.data.roi import crop_roi

    image = read_image(path)
    full = detect_marks(image)
    crop = crop_roi(full.astype(np.uint8) * 255, box, data.roi_margin, data.square_roi,
                    data.image_size)
    return crop >= MARK_LEVEL, mark_stats(image, full)


def image_shares(heat: np.ndarray, box_region: np.ndarray, mask: np.ndarray | None = None,
                 marks: np.ndarray | None = None) -> dict:
    """The audit's numbers for one map: :func:`usmtl.explain.inputs.region_shares` (box and
    mask) plus ``cam_on_marks`` and ``marks_fraction`` (NaN without ``marks``; the mass share
    is NaN in a RoI without marks and for an all-zero map).

    Example:
        >>> import numpy as np
        >>> heat = np.zeros((4, 4)); heat[:2, :2] = 1.0
        >>> box = np.zeros((4, 4), bool); box[:2, :] = True
        >>> row = image_shares(heat, box)
        >>> row["cam_in_box"], row["box_fraction"]
        (1.0, 0.5)
    """
    row = region_shares(heat, box_region, mask)
    row.update(cam_on_marks=float("nan"), marks_fraction=float("nan"))
    if marks is not None:
        row["marks_fraction"] = float(marks.mean())
        if marks.any():
            row["cam_on_marks"] = mass_inside(heat, marks)
    return row


# ---------------------------------------------------------------------------------------
# Summary: ratios, bootstrap CIs, verdicts
# ---------------------------------------------------------------------------------------


def _ratio_of_means(area, mass) -> float:
    area_mean = float(np.mean(area))
    return float(np.mean(mass)) / area_mean if area_mean > 0 else float("nan")


def verdict(region: str, ratio: float, low: float, ratio_min: float = RATIO_MIN) -> str:
    """The audit's reading of a ratio and the lower end of its CI (NaN: no CI); see the
    module docstring.

    Example:
        >>> verdict("box", 1.02, 0.97), verdict("box", 1.6, 1.3), verdict("box", 1.3, 0.98)
        ('no better than uniform', 'above uniform', 'no better than uniform')
        >>> verdict("marks", 2.0, 1.4), verdict("marks", 1.2, 0.9), verdict("marks", 1.02, 1.01)
        ('drawn to marks', 'not drawn to marks', 'not drawn to marks')
    """
    if math.isnan(ratio):
        return ""
    has_ci = not math.isnan(low)
    if region == "marks":
        drawn = ratio >= ratio_min and (not has_ci or low > 1.0)
        return DRAWN if drawn else NOT_DRAWN
    uniform = ratio < ratio_min or (has_ci and low <= 1.0)
    return UNIFORM if uniform else ABOVE


def summarise(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
              ratio_min: float = RATIO_MIN) -> tuple[pd.DataFrame, list[str]]:
    """Per task and region (box, mask, marks): images counted, mean CAM mass share (and its
    standard error), mean area share, their ratio with a patient-bootstrap CI, the verdict.

    Args:
        frame: one row per image and task with ``task``, ``patient_id`` (optional; else
            each image is its own patient) and the columns of :func:`image_shares`
            (missing columns: that region is skipped).
        n_boot: bootstrap resamples (0: no CI; verdicts then use ``ratio_min`` alone).
        seed, level: the bootstrap's seed and confidence level.
        ratio_min: the ratio below which attention is called no better than uniform.

    Returns:
        ``(table, warnings)``: the table (``task, region, n_images, mass_share, mass_se,
        area_share, ratio, ratio_low, ratio_high, verdict``) and one ``WARNING: ...`` line per
        region no better than uniform or drawn to marks.

    Raises:
        UsmtlError: a frame without ``task``, or ``level`` outside (0, 1).
    """
    from usmtl.evaluation.stats import patient_bootstrap_ci

    columns = ["task", "region", "n_images", "mass_share", "mass_se", "area_share", "ratio",
               "ratio_low", "ratio_high", "verdict"]
    if frame.empty:
        return pd.DataFrame(columns=columns), []
    if "task" not in frame:
        raise UsmtlError(f"The audit needs a 'task' column. Received: {list(frame.columns)}")
    if not 0 < level < 1:
        raise UsmtlError(f"The CI level must lie in (0, 1). Received: {level}")
    rows, warnings = [], []
    pct = f"{level:.0%}"
    for task in pd.unique(frame["task"]):
        sub = frame[frame["task"] == task]
        for region, mass_col, area_col, label in REGIONS:
            if mass_col not in sub or area_col not in sub:
                continue
            mass = sub[mass_col].to_numpy(float)
            area = sub[area_col].to_numpy(float)
            keep = np.isfinite(mass) & np.isfinite(area) & (area > 0)
            if not keep.any():
                continue
            mass, area = mass[keep], area[keep]
            patients = sub["patient_id"].to_numpy()[keep] if "patient_id" in sub else None
            if patients is not None and all(str(p) == "" for p in patients):
                patients = None  # no patient ids: each image is its own patient
            ratio = _ratio_of_means(area, mass)
            low = high = float("nan")
            if n_boot > 0 and len(mass) >= 2:
                low, high = patient_bootstrap_ci(area, mass, patients, _ratio_of_means,
                                                 n_boot=n_boot, seed=seed, level=level)
            se = float(np.std(mass, ddof=1) / np.sqrt(len(mass))) if len(mass) > 1 else float("nan")
            reading = verdict(region, ratio, low, ratio_min)
            rows.append({"task": task, "region": region, "n_images": int(len(mass)),
                         "mass_share": float(np.mean(mass)), "mass_se": se,
                         "area_share": float(np.mean(area)), "ratio": ratio,
                         "ratio_low": low, "ratio_high": high, "verdict": reading})
            if reading in (UNIFORM, DRAWN):
                ci = f", {pct} CI {low:.2f}-{high:.2f}" if not math.isnan(low) else ""
                what = ("CAM mass on burned-in marks is above their area share"
                        if reading == DRAWN else f"CAM mass inside the {label} is no better "
                        f"than a uniform map")
                warnings.append(f"WARNING: {task}: {what} (ratio {ratio:.2f}{ci}; mass share "
                                f"{np.mean(mass):.3f} against area share {np.mean(area):.3f}, "
                                f"{len(mass)} image(s))")
    return pd.DataFrame(rows, columns=columns), warnings


def _fmt(value, digits: int = 3) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "" if missing else f"{value:.{digits}f}"


def markdown_table(table: pd.DataFrame, level: float = 0.95) -> str:
    """The summary as a Markdown table (one line per task and region)."""
    lines = [f"| task | region | images | CAM mass share (± SE) | area share | ratio "
             f"({level:.0%} CI) | verdict |", "|---|---|---:|---:|---:|---:|---|"]
    for row in table.itertuples(index=False):
        ci = (f" ({_fmt(row.ratio_low, 2)}-{_fmt(row.ratio_high, 2)})"
              if not math.isnan(row.ratio_low) else "")
        se = f" ± {_fmt(row.mass_se)}" if not math.isnan(row.mass_se) else ""
        lines.append(f"| {row.task} | {row.region} | {row.n_images} | {_fmt(row.mass_share)}{se} "
                     f"| {_fmt(row.area_share)} | {_fmt(row.ratio, 2)}{ci} | {row.verdict} |")
    return "\n".join(lines)


def _plain(value):
    """JSON-ready: NaN as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    return value


def report(frame: pd.DataFrame, table: pd.DataFrame, warnings: list[str], settings: dict,
           level: float = 0.95) -> tuple[dict, str]:
    """``(audit.json content, audit.md text)`` of an audit."""
    per_task = {}
    for task in pd.unique(frame["task"]) if len(frame) else []:
        sub = frame[frame["task"] == task]
        entry = {"n_maps": int(len(sub)),
                 "n_all_zero": int(sub["cam_all_zero"].sum()) if "cam_all_zero" in sub else 0}
        if "marks_fraction" in sub and sub["marks_fraction"].notna().any():
            entry["roi_with_marks"] = float((sub["marks_fraction"] > 0).mean())
        entry["regions"] = {r.pop("region"): r for r in
                            table[table["task"] == task].drop(columns="task").to_dict("records")}
        per_task[task] = entry
    data = _plain({"settings": settings, "tasks": per_task, "warnings": warnings})

    lines = [f"# Shortcut audit: {settings.get('run', '')}", "",
             f"{settings.get('n_images', 0)} image(s) of {settings.get('input', '')}"
             + (f" (split {settings['split']})" if settings.get("split") else "")
             + f"; {settings.get('method', '')} at {settings.get('layer', '')}, "
             f"{settings.get('evidence', 'positive')} evidence.", "",
             "Ratio = mean CAM mass share / mean area share of the region in the RoI: 1.0 is a "
             f"uniform map. Verdict threshold {settings.get('ratio_min', RATIO_MIN)}; CI: "
             f"patient bootstrap, {settings.get('n_boot', 0)} resamples.", "",
             markdown_table(table, level), ""]
    for task, entry in per_task.items():
        note = f"- {task}: {entry['n_all_zero']} of {entry['n_maps']} maps all zero (left out)"
        if "roi_with_marks" in entry:
            note += f"; marks in {entry['roi_with_marks']:.0%} of the RoIs"
        lines.append(note)
    if settings.get("inpaint_marks"):
        lines.append("- The run was trained with data.inpaint_marks: the model saw these images "
                     "with the marks inpainted; the marks row says where they were.")
    lines += ["", "## Warnings", ""] + ([f"- {w}" for w in warnings] or ["- none"]) + [""]
    return data, "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The audit of a run
# ---------------------------------------------------------------------------------------


def shortcut_audit(run: str, manifest: str, split: str | None = None, tasks=None,
                   method: str = "gradcam", layer: str | None = None, limit: int | None = None,
                   out: str | None = None, box: str | None = None, batch_size: int = 16,
                   evidence: str = "positive", marks: bool = True, n_boot: int = 1000,
                   seed: int = 0, level: float = 0.95, ratio_min: float = RATIO_MIN,
                   progress: bool = False) -> dict:
    """The shortcut audit of ``run`` over the rows of ``manifest`` (see the module docstring).

    Args:
        run: a run directory or ``.keras`` file (Grad-CAM needs the Keras model).
        manifest: a manifest CSV (or one image with ``box``).
        split: only the rows of this split of the run's ``split.csv``; ``limit``: the first N.
        tasks: head names; ``None`` or ``"all"`` for every head.
        method, layer, evidence: as :func:`usmtl.explain.explain`.
        out: folder for ``audit.csv``, ``audit.json``, ``audit.md`` (None: write nothing).
        marks: also detect burned-in marks (:mod:`usmtl.data.marks`) and audit them.
        n_boot, seed, level: the patient bootstrap of the ratios (``n_boot=0``: no CI).
        ratio_min: the ratio below which attention is no better than uniform.

    Returns:
        ``{"images": per-image frame (audit.csv), "summary": the table, "tasks": per-task
        summary (audit.json), "warnings": [WARNING lines], "markdown": audit.md,
        "settings": {...}, "files": [written paths]}``.

    Raises:
        UsmtlError: an export instead of a Keras model, an unknown task, layer, method or
            evidence, bad bootstrap settings, a manifest that fails ``usmtl check``.

    Example:
        >>> from usmtl.explain.audit import shortcut_audit
        >>> result = shortcut_audit("runs/paper-hl", "data/manifest.csv", "test", None,
        ...                         out="runs/audit")  # doctest: +SKIP
        >>> print(result["markdown"])  # doctest: +SKIP
    """
    from usmtl.explain.gradcam import GradCam, all_zero, check_evidence

    check_evidence(evidence)
    if n_boot < 0 or not 0 < level < 1 or not ratio_min > 0:
        raise UsmtlError(f"The audit needs n_boot >= 0, 0 < level < 1 and ratio_min > 0. "
                         f"Received: n_boot={n_boot}, level={level}, ratio_min={ratio_min}")
    model, cfg = keras_run(run)
    tasks = ordered_tasks(model, cfg, tasks)
    name = run_name(run)
    inputs = select_inputs(run, manifest, box, split, limit, cfg)
    cam = GradCam(model, tasks, layer, method, evidence)
    rows = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(inputs), desc=f"audit {name}", unit="image")
    for start in range(0, len(inputs), batch_size):
        index = list(range(start, min(start + batch_size, len(inputs))))
        rois, masks = load_batch(inputs, index, cfg.data)
        maps, probs = cam(rois.astype(np.float32))
        for j, i in enumerate(index):
            box_region = box_mask(rois.shape[1:3], roi_box(inputs.boxes[i], cfg.data))
            mark_roi, stats = (roi_marks(inputs.paths[i], inputs.boxes[i], cfg.data) if marks
                               else (None, {"area_share": float("nan"), "n_components": 0}))
            for task in cam.tasks:
                heat = maps[task][j]
                label = float(inputs.labels.at[i, task]) if task in inputs.labels else float("nan")
                rows.append({"image": inputs.images[i], "patient_id": inputs.patient_ids[i],
                             "split": inputs.splits[i], "stem": inputs.stems[i], "run": name,
                             "task": task, "method": method, "layer": cam.layer,
                             "evidence": evidence, "probability": float(probs[task][j]),
                             "label": label, "cam_all_zero": int(all_zero(heat)),
                             **image_shares(heat, box_region, masks[j], mark_roi),
                             "marks_image_share": stats["area_share"],
                             "marks_components": stats["n_components"]})
        if bar is not None:
            bar.update(len(index))
    if bar is not None:
        bar.close()
    frame = pd.DataFrame(rows)
    table, warnings = summarise(frame, n_boot, seed, level, ratio_min)
    settings = {"run": name, "run_path": os.path.abspath(run), "input": os.path.abspath(manifest),
                "split": split, "limit": limit, "tasks": list(cam.tasks), "method": method,
                "layer": cam.layer, "evidence": evidence, "n_images": len(inputs),
                "marks": marks, "inpaint_marks": bool(cfg.data.inpaint_marks),
                "ratio_min": ratio_min, "n_boot": n_boot, "seed": seed, "level": level,
                "image_size": cfg.data.image_size, "roi_margin": cfg.data.roi_margin,
                "square_roi": cfg.data.square_roi}
    data, text = report(frame, table, warnings, settings, level)
    files = []
    if out is not None:
        from usmtl.run import write_csv_atomic, write_json_atomic, write_text_atomic

        os.makedirs(out, exist_ok=True)
        files = [os.path.join(out, f) for f in (AUDIT_CSV, AUDIT_JSON, AUDIT_MD)]
        write_csv_atomic(files[0], frame)
        write_json_atomic(files[1], data)
        write_text_atomic(files[2], text)
    return {"images": frame, "summary": table, "tasks": data["tasks"], "warnings": warnings,
            "markdown": text, "settings": data["settings"], "files": files}
