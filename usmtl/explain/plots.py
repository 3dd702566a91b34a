"""Figures for Grad-CAM maps: one overlay per image, a contact sheet, a side-by-side of two
runs (the layout of Figure 6 of Li, Guo et al., Front. Physiol. 2022) and the radial profile
(its Supplementary Figure S1).

Heat runs from black (0) through red to pale yellow (1) (matplotlib's ``inferno``,
perceptually uniform and readable in greyscale and by colour-blind readers, unlike ``jet``)
over the grey RoI, with a colour bar. Panel titles give the task's display name, its
probability and its label ("label unknown" where the manifest has none). Figures are written
in the formats and resolution of :func:`usmtl.evaluation.figures.figure_settings`. The annotated lesion is outlined in white: the mask's contour where the manifest has a
mask, else the box, so a reader can tell heat on the lesion from heat on its margins.

An all-zero map (no positive evidence for the head at the CAM layer: see
:mod:`usmtl.explain.gradcam`) is not drawn as a heatmap, which would look like a cold but
valid map: its panel shows the grey RoI with the words "no positive evidence at LAYER", and
the contact sheet says how many of its maps are all zero.

Figures are drawn with matplotlib's object API on an Agg canvas, never ``pyplot``: nothing
here changes the backend of a notebook that imports it.

Example:
    >>> import numpy as np
    >>> from usmtl.explain.plots import save_overlay
    >>> roi = np.zeros((64, 64, 3), np.uint8); cam = np.random.rand(64, 64).astype("float32")
    >>> save_overlay("overlay.png", roi, cam, "demo")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

CMAP = "inferno"
ALPHA = 0.45
EMPTY_TEXT = "no positive evidence"


def empty_map_text(layer: str | None = None, evidence: str = "positive") -> str:
    """The words on an all-zero map's panel: ``no positive evidence at LAYER``."""
    return f"no {evidence} evidence" + (f" at {layer}" if layer else "")


def is_empty(cam) -> bool:
    """Whether a map is all zero (drawn as words, not as a heatmap)."""
    return cam is not None and not np.any(np.asarray(cam))


@dataclasses.dataclass
class Panel:
    """What a figure needs of one image: its RoI, maps and annotations."""

    stem: str
    roi: np.ndarray  # (H, W, 3) uint8
    maps: dict  # task -> (H, W) float32 in [0, 1]
    probs: dict  # task -> probability
    labels: dict  # task -> 0.0, 1.0 or NaN
    outline: object = None  # (H, W) bool mask, or (x0, y0, x1, y1) box in RoI pixels, or None
    empty_text: str = EMPTY_TEXT  # written on an all-zero map: "no positive evidence at LAYER"


def _figure(width: float, height: float, dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> None:
    """``path`` at the figures' dpi and the other formats of
    :func:`~usmtl.evaluation.figures.figure_settings` beside it, unless the figure is marked
    ``png_only`` (per-image overlays: one per image and task; the sheets are the paper's
    figures)."""
    from usmtl.evaluation.figures import figure_settings

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    formats, dpi = figure_settings()
    stem, ext = os.path.splitext(path)
    vector = () if getattr(fig, "png_only", False) else formats
    for fmt in dict.fromkeys([ext.lstrip(".").lower() or "png", *vector]):
        fig.savefig(f"{stem}.{fmt}", bbox_inches="tight", dpi=dpi)


def _mappable():
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    return ScalarMappable(norm=Normalize(0.0, 1.0), cmap=CMAP)


def _grey(roi: np.ndarray) -> np.ndarray:
    roi = np.asarray(roi)
    return roi if roi.ndim == 2 else roi[..., :3].mean(axis=-1)


def draw_outline(ax, outline) -> None:
    """The lesion: a mask's contour, or a dashed box."""
    if outline is None:
        return
    if isinstance(outline, np.ndarray) and outline.ndim == 2:
        if outline.any() and not outline.all():
            ax.contour(outline.astype(float), levels=[0.5], colors="white", linewidths=0.9)
        return
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = outline
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                           edgecolor="white", linestyle="--", linewidth=0.9))


def draw_heat(ax, roi: np.ndarray, cam: np.ndarray | None, outline=None,
              empty_text: str = EMPTY_TEXT) -> None:
    """The grey RoI, the heatmap over it (if any) and the lesion outline, without axes.
    An all-zero heatmap is not drawn: ``empty_text`` is written over the RoI instead."""
    h, w = roi.shape[:2]
    ax.imshow(_grey(roi), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if is_empty(cam):
        ax.text(0.5, 0.5, empty_text.replace(" at ", "\nat "), transform=ax.transAxes,
                ha="center", va="center", fontsize=7, color="white",
                bbox={"boxstyle": "round", "facecolor": "black", "alpha": 0.65, "linewidth": 0})
    elif cam is not None:
        ax.imshow(cam, cmap=CMAP, vmin=0.0, vmax=1.0, alpha=ALPHA, interpolation="bilinear")
    draw_outline(ax, outline)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()


def _label_text(label) -> str:
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return "label unknown"
    return f"label {int(label)}"


def _panel_title(task: str, p: float, label) -> str:
    from usmtl.tasks import display_name

    return f"{display_name(task)}\np = {p:.2f}, {_label_text(label)}"


def save_overlay(path: str, roi: np.ndarray, cam: np.ndarray, title: str, outline=None,
                 method: str = "gradcam", empty_text: str = EMPTY_TEXT,
                 evidence: str = "positive") -> None:
    """Two panels, the RoI and the RoI under its heatmap, with a colour bar; an all-zero
    map's panel says ``empty_text`` (:func:`empty_map_text`) instead."""
    fig = _figure(6.4, 3.4)
    left, right = fig.subplots(1, 2)
    draw_heat(left, roi, None, outline)
    left.set_title("RoI", fontsize=9)
    draw_heat(right, roi, cam, outline, empty_text)
    what = "Grad-CAM++" if method == "gradcam++" else "Grad-CAM"
    right.set_title(what if evidence == "positive" else f"{what}, {evidence} evidence", fontsize=9)
    bar = fig.colorbar(_mappable(), ax=[left, right], fraction=0.04, pad=0.02, shrink=0.9)
    bar.set_label("normalised response", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.png_only = True
    _save(fig, path)


def save_contact_sheet(path: str, panels: list[Panel], tasks: list[str], title: str = "",
                       per_row: int | None = None) -> None:
    """A grid: per image, its RoI and then one overlay per task, titled with the task's
    display name, probability and label ("label unknown" when unknown); one colour bar. All-zero maps are
    labelled (``Panel.empty_text``) and counted under the title."""
    if not panels:
        return
    maps = [panel.maps.get(task) for panel in panels for task in tasks]
    empty = sum(is_empty(m) for m in maps)
    if empty:
        title = (f"{title}\n" if title else "") + (
            f"{empty} of {sum(m is not None for m in maps)} maps all zero "
            f"({panels[0].empty_text}: labelled, not drawn)")
    cells = 1 + len(tasks)
    per_row = per_row or max(1, 8 // cells)
    rows = math.ceil(len(panels) / per_row)
    cols = per_row * cells
    fig = _figure(2.0 * cols + 0.8, 2.3 * rows + 0.6)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, panel in enumerate(panels):
        r, c = divmod(i, per_row)
        ax = axes[r, c * cells]
        draw_heat(ax, panel.roi, None, panel.outline)
        ax.set_title(panel.stem, fontsize=9)
        for k, task in enumerate(tasks):
            ax = axes[r, c * cells + 1 + k]
            draw_heat(ax, panel.roi, panel.maps.get(task), panel.outline, panel.empty_text)
            p = panel.probs.get(task, float("nan"))
            ax.set_title(_panel_title(task, p, panel.labels.get(task)), fontsize=9)
    bar = fig.colorbar(_mappable(), ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
    bar.set_label("normalised response", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def save_side_by_side(path: str, panels_a: list[Panel], panels_b: list[Panel], tasks: list[str],
                      names: tuple[str, str], title: str = "") -> None:
    """One row per image: the RoI, then for each task run A's and run B's overlays
    (the paper's Figure 6 contrasts an ALNM-only model with the multi-task model)."""
    if not panels_a:
        return
    cols = 1 + 2 * len(tasks)
    rows = len(panels_a)
    fig = _figure(1.9 * cols + 0.8, 1.9 * rows + 0.6)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for r, (a, b) in enumerate(zip(panels_a, panels_b)):
        draw_heat(axes[r, 0], a.roi, None, a.outline)
        axes[r, 0].set_title(a.stem, fontsize=9)
        for k, task in enumerate(tasks):
            for j, (panel, name) in enumerate(((a, names[0]), (b, names[1]))):
                ax = axes[r, 1 + 2 * k + j]
                draw_heat(ax, panel.roi, panel.maps.get(task), panel.outline, panel.empty_text)
                ax.set_title(f"{name}\n" + _panel_title(task, panel.probs.get(task, float("nan")),
                                                         panel.labels.get(task)), fontsize=9)
    bar = fig.colorbar(_mappable(), ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
    bar.set_label("normalised response", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def save_profile_plot(path: str, frame, title: str = "") -> None:
    """Mean CAM response against normalised distance from the RoI centre, one line per
    (run, task), with a band of +-1 standard error over images."""
    fig = _figure(5.6, 3.8)
    ax = fig.subplots()
    for (run, task), group in frame.groupby(["run", "task"], sort=False):
        x, y, e = group["r_mid"].to_numpy(), group["mean"].to_numpy(), group["sem"].to_numpy()
        n = int(group["n_images"].max())
        line, = ax.plot(x, y, marker="o", markersize=3, label=f"{run}: {task} (n={n})")
        ax.fill_between(x, y - e, y + e, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("distance from the RoI centre (1 = edge midpoint, 1.41 = corner)")
    ax.set_ylabel("mean normalised CAM response")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)
