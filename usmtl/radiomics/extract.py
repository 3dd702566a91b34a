"""Radiomics features of each image's RoI with PyRadiomics, cached and in parallel.

The paper's baseline (Sun et al., 2020, as used by Li, Guo et al., Front. Physiol. 2022)
takes intensity and texture features from the box-level RoI, without shape features and
without augmentation. ``usmtl`` extracts, in 2D on the grey image:

============  =====  ==============================================================
class         count  what it measures
============  =====  ==============================================================
firstorder    18     grey-level histogram: mean, percentiles, entropy, skewness...
glcm          24     grey-level co-occurrence (texture)
glrlm         16     grey-level run lengths
glszm         16     grey-level size zones
gldm          14     grey-level dependence
ngtdm          5     neighbouring grey-tone difference
============  =====  ==============================================================

93 features in all (:data:`FEATURE_COUNT`) with PyRadiomics 3.0.1; the paper reports 102
for its own PyRadiomics settings, which it does not list. The settings here are:

- image: the ``(H, W, 3)`` uint8 image as :func:`usmtl.data.io.read_image` returns it,
  converted to grey by luminance (ITU-R BT.601), intensities 0..255;
- mask: the RoI box (``mask="box"``, the paper had no pixel labels), optionally widened by
  ``margin`` of its width/height on each side; or the manifest's pixel mask
  (``mask="mask"``) for data sets that have one;
- discretisation: fixed bin width ``bin_width`` (default 8: at most 32 grey levels on
  8-bit ultrasound);
- no intensity normalisation (``normalize=False``): ultrasound display values are already
  on one scale per scanner; no resampling, because most ultrasound exports carry no
  physical pixel spacing (spacing 1 pixel);
- ``force2D`` on, distances of 1 pixel, the PyRadiomics defaults otherwise.

Results are cached per image content, box, mask and settings (one JSON file per image in
the cache folder), so a re-run extracts only what is new, and an interrupted run loses
nothing it finished. An image that fails is reported by manifest row and kept out of the
table; the others go on.

Example:
    >>> from usmtl.radiomics.extract import extract_features
    >>> table = extract_features("demo/manifest.csv", "demo/features.csv", jobs=2)  # doctest: +SKIP
    >>> table.n_features  # doctest: +SKIP
    93
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError

FEATURE_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
FEATURE_COUNT = 93
FEATURE_PREFIX = "original_"
ID_COLUMNS = ("row", "image", "patient_id", "cache_key")
INSTALL_HINT = ("PyRadiomics is not installed. It builds from source only with NumPy present "
                "and without build isolation: 'pip install numpy versioneer' then "
                "'pip install --no-build-isolation pyradiomics' (or 'make install-radiomics'), "
                "then 'pip install boruta'")


def require_radiomics():
    """Import PyRadiomics or raise a UsmtlError that says how to install it."""
    try:
        import radiomics  # noqa: F401
        from radiomics import featureextractor  # noqa: F401
    except ImportError as exc:
        raise UsmtlError(f"{INSTALL_HINT}. Received: {exc}") from None
    return radiomics


@dataclasses.dataclass(frozen=True)
class RadiomicsSettings:
    """What is extracted, and how; see the module docstring."""

    mask: str = "box"  # "box" or "mask"
    margin: float = 0.0
    bin_width: float = 8.0
    feature_classes: tuple = FEATURE_CLASSES

    def __post_init__(self):
        if self.mask not in ("box", "mask"):
            raise UsmtlError(f"mask must be 'box' or 'mask'. Received: {self.mask!r}")
        if not self.margin >= 0:
            raise UsmtlError(f"margin must be >= 0. Received: {self.margin!r}")
        if not self.bin_width > 0:
            raise UsmtlError(f"bin_width must be > 0. Received: {self.bin_width!r}")
        unknown = [c for c in self.feature_classes if c not in FEATURE_CLASSES]
        if unknown:
            raise UsmtlError(f"Unknown feature class(es) {unknown}; valid: {list(FEATURE_CLASSES)}")

    def pyradiomics_params(self) -> dict:
        return {"binWidth": float(self.bin_width), "normalize": False, "force2D": True,
                "force2Ddimension": 0, "label": 1, "resampledPixelSpacing": None}

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "feature_classes": list(self.feature_classes),
                "pyradiomics": self.pyradiomics_params()}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class FeatureTable:
    """Extraction result: ``frame`` (one row per extracted image, in manifest order) and the
    rows that failed (``'manifest.csv line 7 (image=a.png): why'``)."""

    frame: pd.DataFrame
    failures: list
    extracted: int  # images extracted in this call (the rest came from the cache)
    seconds: float

    @property
    def feature_names(self) -> list[str]:
        return feature_columns(self.frame)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(FEATURE_PREFIX)]


# ---------------------------------------------------------------------------------------
# One image (runs in worker processes)
# ---------------------------------------------------------------------------------------

_EXTRACTOR = None


def _extractor(settings: RadiomicsSettings):
    global _EXTRACTOR
    if _EXTRACTOR is None or _EXTRACTOR[0] != settings:
        import logging

        radiomics = require_radiomics()
        from radiomics import featureextractor

        radiomics.setVerbosity(logging.ERROR)
        extractor = featureextractor.RadiomicsFeatureExtractor(**settings.pyradiomics_params())
        extractor.disableAllFeatures()
        for name in settings.feature_classes:
            extractor.enableFeatureClassByName(name)
        _EXTRACTOR = (settings, extractor)
    return _EXTRACTOR[1]


def roi_mask(shape, box, mask_path: str | None, settings: RadiomicsSettings) -> np.ndarray:
    """The uint8 RoI mask (1 inside) of an ``(H, W)`` image."""
    height, width = shape
    if settings.mask == "mask":
        from usmtl.data.io import read_mask

        if not mask_path:
            raise UsmtlError("mask='mask' needs a mask column in the manifest")
        mask = read_mask(mask_path)
        if mask.shape != (height, width):
            raise UsmtlError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}, "
                             f"the image {width}x{height}")
        return mask.astype(np.uint8)
    dx, dy = settings.margin * box.width, settings.margin * box.height
    x0, y0 = max(0, int(round(box.x_min - dx))), max(0, int(round(box.y_min - dy)))
    x1, y1 = min(width, int(round(box.x_max + dx))), min(height, int(round(box.y_max + dy)))
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def grey_image(path: str) -> np.ndarray:
    """The image as float32 grey values 0..255 (luminance of the RGB reading)."""
    from usmtl.data.io import read_image

    rgb = read_image(path).astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def extract_one(path: str, box, mask_path: str | None, settings: RadiomicsSettings) -> dict:
    """``{feature name: value}`` for one image; raises on any failure."""
    import SimpleITK as sitk

    grey = grey_image(path)
    mask = roi_mask(grey.shape, box, mask_path, settings)
    if mask.sum() < 4 or min(np.ptp(np.nonzero(mask)[0]), np.ptp(np.nonzero(mask)[1])) < 1:
        raise UsmtlError(f"the RoI covers fewer than 2x2 pixels ({int(mask.sum())} pixels)")
    result = _extractor(settings).execute(sitk.GetImageFromArray(grey), sitk.GetImageFromArray(mask))
    features = {k: float(v) for k, v in result.items() if k.startswith(FEATURE_PREFIX)}
    bad = sorted(k for k, v in features.items() if not np.isfinite(v))
    if bad:
        raise UsmtlError(f"non-finite feature(s) {bad[:5]}")
    return features


def _work(item):
    row, path, box, mask_path, settings = item
    try:
        return row, extract_one(path, box, mask_path, settings), None
    except Exception as exc:  # reported by row; the other images go on
        return row, None, f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------


def _file_digest(path: str | None) -> str:
    if not path:
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(path: str, box, mask_path: str | None, settings: RadiomicsSettings) -> str:
    """Same image bytes, box, mask and settings: same key, wherever the file lives."""
    parts = [_file_digest(path), str(dataclasses.astuple(box)),
             _file_digest(mask_path) if settings.mask == "mask" else "", settings.digest()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _cache_file(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, key[:2], key + ".json")


def _read_cached(cache_dir: str, key: str):
    path = _cache_file(cache_dir, key)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # a torn write: extract again
        return None


def _write_cached(cache_dir: str, key: str, features: dict) -> None:
    from usmtl.run import write_json_atomic

    path = _cache_file(cache_dir, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json_atomic(path, features, indent=None, fsync=False)  # a lost file is extracted again


# ---------------------------------------------------------------------------------------
# A manifest
# ---------------------------------------------------------------------------------------


def sidecar_path(features_path: str) -> str:
    return os.path.splitext(features_path)[0] + ".json"


def extract_features(manifest_path: str, out: str | None = None,
                     settings: RadiomicsSettings | None = None, jobs: int = 1,
                     cache_dir: str | None = None, progress: bool | None = None) -> FeatureTable:
    """Extract the features of every manifest row; write ``out`` (CSV) and its sidecar
    ``out.json`` (settings, feature names, manifest, PyRadiomics version) when given.

    Args:
        manifest_path: a ``usmtl`` manifest.
        out: the feature CSV to write (columns ``row, image, patient_id, cache_key`` and
            one ``original_<class>_<feature>`` column per feature).
        settings: :class:`RadiomicsSettings` (default: box mask, bin width 8).
        jobs: worker processes.
        cache_dir: the per-image cache (default: ``<out>.cache`` beside ``out``, or none).
        progress: show a progress bar (default: when stderr is a terminal).
    """
    import time

    from tqdm import tqdm

    from usmtl.data.manifest import read_manifest

    radiomics = require_radiomics()
    settings = settings or RadiomicsSettings()
    if jobs < 1:
        raise UsmtlError(f"jobs must be >= 1. Received: {jobs}")
    manifest = read_manifest(manifest_path)
    manifest.require_image_files("radiomics (features of the image within its mask or box)")
    if settings.mask == "mask" and not manifest.has_column("mask"):
        raise UsmtlError(f"{manifest_path}: mask='mask' needs a 'mask' column. "
                         f"Received columns: {list(manifest.frame.columns)}")
    if out is not None:  # before any extraction; its folder (and the cache's) is made later
        from usmtl.outputs import require_output_dir

        require_output_dir(os.path.dirname(os.path.abspath(out)), f"--out {out}: its folder")
    if cache_dir is None and out is not None:
        cache_dir = os.path.splitext(out)[0] + ".cache"
    progress = sys.stderr.isatty() if progress is None else progress
    started = time.time()

    paths, boxes, masks = manifest.image_paths(), manifest.boxes(), manifest.mask_paths()
    failures, keys, results, todo = {}, {}, {}, []
    for i, path in enumerate(paths):
        if not os.path.isfile(path):
            failures[i] = f"{manifest.where(i)}: image file not found: {path}"
            continue
        mask_path = masks[i] if settings.mask == "mask" else None
        if settings.mask == "mask" and (not mask_path or not os.path.isfile(mask_path)):
            failures[i] = f"{manifest.where(i)}: mask file not found: {mask_path!r}"
            continue
        keys[i] = cache_key(path, boxes[i], mask_path, settings)
        cached = _read_cached(cache_dir, keys[i]) if cache_dir else None
        if cached is not None:
            results[i] = cached
        else:
            todo.append((i, path, boxes[i], mask_path, settings))

    def collect(row, features, error):
        if error is not None:
            failures[row] = f"{manifest.where(row)}: {error}"
            return
        results[row] = features
        if cache_dir:
            _write_cached(cache_dir, keys[row], features)

    bar = tqdm(total=len(todo), desc="radiomics", unit="img", disable=not progress or not todo)
    if jobs == 1 or len(todo) <= 1:
        for item in todo:
            collect(*_work(item))
            bar.update()
    else:
        # spawn, not fork: the caller may hold TensorFlow's threads, which fork does not copy.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            for row, features, error in pool.map(_work, todo, chunksize=max(1, min(16, len(todo) // (4 * jobs)))):
                collect(row, features, error)
                bar.update()
    bar.close()

    rows = sorted(results)
    names = sorted({k for r in rows for k in results[r]})
    frame = pd.DataFrame({
        "row": rows,
        "image": [manifest.frame.at[r, "image"] for r in rows],
        "patient_id": [manifest.patient_ids()[r] for r in rows],
        "cache_key": [keys[r] for r in rows],
    })
    values = np.array([[results[r].get(n, np.nan) for n in names] for r in rows], float).reshape(len(rows), len(names))
    frame = pd.concat([frame, pd.DataFrame(values, columns=names)], axis=1)
    table = FeatureTable(frame, [failures[r] for r in sorted(failures)], len(todo), time.time() - started)
    if out is not None:
        from usmtl.run import write_csv_atomic, write_json_atomic

        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        write_csv_atomic(out, frame)
        write_json_atomic(sidecar_path(out), {
            "manifest": manifest.path, "images": len(manifest), "extracted_rows": len(rows),
            "failures": table.failures, "settings": settings.to_dict(),
            "pyradiomics_version": str(getattr(radiomics, "__version__", "?")),
            "n_features": len(names), "features": names}, indent=1)
    return table


def read_features(path: str) -> tuple[pd.DataFrame, dict]:
    """A feature CSV written by :func:`extract_features` and its sidecar (``{}`` if none)."""
    if not os.path.isfile(path):
        raise UsmtlError(f"Feature file not found. Received: {path}")
    frame = pd.read_csv(path, dtype={"image": str, "patient_id": str})
    missing = [c for c in ID_COLUMNS if c not in frame.columns]
    if missing or not feature_columns(frame):
        raise UsmtlError(f"{path}: not a feature file of 'usmtl radiomics extract' (needs "
                         f"{list(ID_COLUMNS)} and {FEATURE_PREFIX}* columns). "
                         f"Received columns: {list(frame.columns)[:8]}")
    side = sidecar_path(path)
    meta = {}
    if os.path.isfile(side):
        with open(side) as f:
            meta = json.load(f)
    return frame, meta
