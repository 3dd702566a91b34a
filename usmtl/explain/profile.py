"""The radial CAM profile: mean Grad-CAM response against distance from the RoI centre.

Li, Guo et al. (Front. Physiol. 13:882648, 2022, Supplementary Figure S1) average the CAM
response over distance from the image centre across their test set, to show that the
network looks at the tumour (the centre of a box RoI) and at its peritumoral surroundings.

Distance is normalised per axis by half the side: 0 is the centre, 1 the midpoint of an
edge, sqrt(2) = 1.41 a corner, so non-square maps are comparable. With ``data.roi_margin``
``m`` and square RoIs, the box's longer side ends at ``1 / (1 + 2m)`` (0.83 for m = 0.1).
Each image's map is first averaged within each distance ring, then the rings are averaged
over images (every image counts once, whatever its size); ``sem`` is the standard error
over images.

Example:
    >>> import numpy as np
    >>> from usmtl.explain.profile import radial_profile
    >>> yy, xx = np.mgrid[0:64, 0:64]
    >>> blob = np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / 200.0)
    >>> frame = radial_profile(blob, bins=8)
    >>> bool(frame["mean"].is_monotonic_decreasing)
    True
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

R_MAX = math.sqrt(2.0)


def normalised_distance(height: int, width: int) -> np.ndarray:
    """``(height, width)`` distances of pixel centres from the map's centre, normalised per
    axis by half the side (edge midpoints at 1, corners at sqrt(2))."""
    y = (np.arange(height, dtype=np.float64) + 0.5 - height / 2.0) / (height / 2.0)
    x = (np.arange(width, dtype=np.float64) + 0.5 - width / 2.0) / (width / 2.0)
    return np.sqrt(y[:, None] ** 2 + x[None, :] ** 2)


def image_profiles(heatmaps, bins: int = 20, r_max: float = R_MAX) -> np.ndarray:
    """``(n_images, bins)`` mean response per distance ring (NaN for an empty ring)."""
    maps = np.asarray(heatmaps, np.float64)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3 or maps.shape[1] < 1 or maps.shape[2] < 1:
        raise ValueError(f"heatmaps must be (height, width) or (n, height, width). "
                         f"Received: {maps.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1. Received: {bins}")
    r = normalised_distance(*maps.shape[1:])
    ring = np.minimum((r / r_max * bins).astype(int), bins - 1).ravel()
    counts = np.bincount(ring, minlength=bins).astype(np.float64)
    flat = np.nan_to_num(maps.reshape(len(maps), -1))
    sums = np.stack([np.bincount(ring, weights=m, minlength=bins) for m in flat])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def summarise_profiles(profiles: np.ndarray, bins: int | None = None,
                       r_max: float = R_MAX) -> pd.DataFrame:
    """Mean and standard error over images of per-image ring profiles."""
    profiles = np.atleast_2d(np.asarray(profiles, np.float64))
    bins = bins or profiles.shape[1]
    edges = np.linspace(0.0, r_max, bins + 1)
    n = np.sum(~np.isnan(profiles), axis=0)
    safe_n = np.maximum(n, 1)
    mean = np.where(n > 0, np.nansum(profiles, axis=0) / safe_n, np.nan)
    squares = np.nansum((profiles - mean) ** 2, axis=0)
    sd = np.sqrt(squares / np.maximum(n - 1, 1))
    sem = np.where(n > 1, sd / np.sqrt(safe_n), 0.0)
    return pd.DataFrame({"r_lo": edges[:-1], "r_hi": edges[1:], "r_mid": (edges[:-1] + edges[1:]) / 2,
                         "mean": mean, "sem": sem, "n_images": n.astype(int)})


def radial_profile(heatmaps, bins: int = 20, r_max: float = R_MAX) -> pd.DataFrame:
    """Radial profile of one ``(H, W)`` map or a stack ``(n, H, W)``: a frame with one row
    per distance ring: ``r_lo, r_hi, r_mid, mean, sem, n_images``."""
    return summarise_profiles(image_profiles(heatmaps, bins, r_max), bins, r_max)
