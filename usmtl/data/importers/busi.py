"""The BUSI importer (``usmtl import busi``): ``benign (N).png`` with ``benign (N)_mask[_K].png``.

BUSI (Al-Dhabyani et al., Data in Brief 2020) has no patient ids: every image is its own
patient and near-duplicate images are grouped into one by default; see :func:`import_busi`.

Example:
    >>> from usmtl.data.importers.busi import import_busi
    >>> frame = import_busi("Dataset_BUSI_with_GT", "busi.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Callable

import pandas as pd

from usmtl.data.duplicates import DEFAULT_MAX_DISTANCE
from usmtl.data.importers._common import (_box_columns, _duplicate_settings, _relative, _Report,
                                          _some, _write)
from usmtl.data.importers._registry import Importer, register
from usmtl.data.io import image_size, read_mask
from usmtl.data.manifest import Box
from usmtl.errors import ManifestError


BUSI_CLASSES = ("benign", "malignant")
BUSI_LAYOUT = ("ROOT/benign/*.png and ROOT/malignant/*.png (optionally ROOT/normal/*.png), "
               "ROOT being the BUSI folder or the folder holding Dataset_BUSI_with_GT/")
_BUSI_NAME = re.compile(r"^(benign|malignant|normal) \(\d+\)(_mask(_\d+)?)?\.png$", re.IGNORECASE)


def _busi_folder(root: str) -> str:
    """The folder holding BUSI's class folders: ``root`` or ``root/Dataset_BUSI_with_GT``;
    otherwise an error naming the expected layout, what was found and where to point."""
    for folder in (os.path.join(root, "Dataset_BUSI_with_GT"), root):
        if all(os.path.isdir(os.path.join(folder, c)) for c in BUSI_CLASSES):
            return folder
    raise ManifestError(f"{root}: not a BUSI folder: expected {BUSI_LAYOUT}. "
                        f"{_seen(root)}. {_busi_hint(root)} Received: {root}")


def _seen(folder: str) -> str:
    """'Found in it: ...': the subfolders and files of ``folder``, a few named."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        return f"Cannot list it ({exc.strerror})"
    dirs = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
    files = [e for e in entries if e not in dirs]
    return (f"Found in it: {len(dirs)} folder(s) {_some(dirs, 10)} and {len(files)} file(s) "
            f"{_some(files, 5)}")



def _busi_hint(root: str) -> str:
    """Where the class folders are, when ``root`` is one folder off."""
    root_abs = os.path.abspath(root)
    name = os.path.basename(root_abs).lower()
    names = os.listdir(root_abs) if os.path.isdir(root_abs) else []
    if name in BUSI_CLASSES + ("normal",) or any(_BUSI_NAME.match(n) for n in names):
        return (f"It looks like a class folder itself: point ROOT one folder up, at "
                f"{os.path.dirname(root_abs)}.")
    below = _busi_below(root_abs)
    if below is not None:
        depth = os.path.relpath(below, root_abs).count(os.sep) + 1
        return (f"benign/ and malignant/ are in {below}: point ROOT there ({depth} folder(s) "
                f"down).")
    present = [c for c in BUSI_CLASSES if os.path.isdir(os.path.join(root_abs, c))]
    if present:
        missing = [c for c in BUSI_CLASSES if c not in present]
        return f"It has {present[0]}/ but no {missing[0]}/."
    return "Point ROOT at the folder that holds benign/ and malignant/."


def _busi_below(root: str, depth: int = 3, limit: int = 500) -> str | None:
    """The first folder up to ``depth`` levels below ``root`` (``limit`` folders looked
    at, breadth first) that holds benign/ and malignant/."""
    level, seen = [root], 0
    for _ in range(depth):
        children = []
        for folder in level:
            try:
                subs = sorted(e.path for e in os.scandir(folder) if e.is_dir())
            except OSError:
                continue
            for sub in subs:
                if all(os.path.isdir(os.path.join(sub, c)) for c in BUSI_CLASSES):
                    return sub
                seen += 1
                if seen > limit:
                    return None
            children += subs
        level = children
    return None


def import_busi(root: str, out: str, include_normal: bool = False, progress: bool = True,
                duplicates: bool = True, group_duplicates: bool | None = None,
                max_distance: int = DEFAULT_MAX_DISTANCE,
                log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Write a manifest for BUSI (``benign (N).png`` with ``benign (N)_mask[_K].png``).

    Each mask is one lesion and one row, with its own box and its own ``mask``: an image
    with two masks (``benign (10)_mask.png`` and ``benign (10)_mask_1.png``) gives two
    rows of one patient. An empty mask beside other masks of its image is skipped and
    counted. With ``include_normal`` the ``normal`` images join as benign with the whole
    image as box and a column ``normal`` = 1; without it they are skipped and counted.

    BUSI has no patient ids, so every image is its own patient; near-duplicate images are
    grouped into one patient by default (``group_duplicates``: ``patient_id`` becomes
    ``<first id>+K``, the original stays in ``source_patient_id``) and every pair is listed
    in ``<out stem>_duplicates.csv``.

    Args:
        root: the BUSI folder, or the folder holding ``Dataset_BUSI_with_GT``.
        out: the manifest to write.
        include_normal: add the ``normal`` images (no lesion) as benign.
        progress: a progress bar while the images are hashed.
        duplicates: search near-duplicate images (:mod:`usmtl.data.duplicates`).
        group_duplicates: give near-duplicate images one patient id (default: yes).
        max_distance: the largest pHash distance (of 256 bits) of a near-duplicate.
        log: where the report goes (what was skipped, near-duplicates, the summary).

    Returns:
        The manifest's rows (also written to ``out``).

    Raises:
        ManifestError: not a BUSI layout (the error names the layout expected, what was
            found and where to point instead), or every problem (odd names, masks without
            images, images whose masks are all empty); nothing is written then.
        UsmtlError: ``group_duplicates=True`` with ``duplicates=False``.

    Example:
        >>> from usmtl.data.importers import import_busi
        >>> frame = import_busi("Dataset_BUSI_with_GT", "busi.csv")  # doctest: +SKIP
        >>> frame.attrs["import_report"]["skipped"]  # doctest: +SKIP
        {'normal image(s) (no lesion; --include-normal keeps them)': 133}
    """
    root = os.fspath(root)
    dups = _duplicate_settings(duplicates, group_duplicates, True, max_distance, progress)
    folder = _busi_folder(root)
    classes = BUSI_CLASSES + (("normal",) if include_normal else ())
    normal_dir = os.path.join(folder, "normal")
    if include_normal and not os.path.isdir(normal_dir):
        raise ManifestError(f"{folder}: include_normal needs a normal/ folder. "
                            f"Received: {sorted(os.listdir(folder))}")
    report = _Report(log)
    problems: list[str] = []
    rows = []
    several = 0  # images with several lesions
    for label in classes:
        images, masks = _scan_busi_class(os.path.join(folder, label), label, problems, report)
        for number in sorted(images):
            records = _busi_records(label, number, images[number], masks.get(number, []), out,
                                    problems, report)
            several += len(records) > 1
            for record in records:
                if include_normal:
                    record["normal"] = int(label == "normal")
                rows.append(record)
    if not include_normal and os.path.isdir(normal_dir):
        normals, _ = _scan_busi_class(normal_dir, "normal", [], _Report(None))
        report.skip("normal image(s) (no lesion; --include-normal keeps them)", len(normals))
        if normals:
            report.note(f"Skipped {len(normals)} normal image(s) (no lesion) in {normal_dir}: "
                        f"--include-normal (include_normal=True) keeps them, as benign with "
                        f"the whole image as box.")
    if several:
        report.note(f"{several} image(s) have several lesion masks: one row per lesion, each "
                    f"with its own box and mask.")
    frame = _write(rows, problems, folder, out, report, dups)
    warnings.warn("BUSI has no patient ids: each image is taken as its own patient, so "
                  "patient-level splitting is impossible and the same patient may appear in "
                  "several splits (scores may be optimistic)"
                  + ("; near-duplicate images were grouped into one patient." if dups.group
                     else "."), UserWarning, stacklevel=2)
    return frame


def _scan_busi_class(class_dir: str, label: str, problems: list[str], report: _Report):
    """``({N: image}, {N: [masks]})`` of one class folder; odd names and orphan masks are
    added to ``problems``, files that are no PNG skipped and counted in ``report``."""
    pattern = re.compile(rf"^{label} \((\d+)\)(_mask(?:_\d+)?)?\.png$", re.IGNORECASE)
    images: dict[int, str] = {}
    masks: dict[int, list[str]] = {}
    for name in sorted(os.listdir(class_dir)):
        path = os.path.join(class_dir, name)
        if not name.lower().endswith(".png"):
            report.skip("non-PNG file(s) in the class folders", int(os.path.isfile(path)))
            continue
        match = pattern.match(name)
        if match is None:
            problems.append(f"{path}: not a BUSI file name (expected '{label} (N).png' or "
                            f"'{label} (N)_mask[_K].png'). Received: {name!r}")
        elif match.group(2):
            masks.setdefault(int(match.group(1)), []).append(path)
        else:
            images[int(match.group(1))] = path
    for number in sorted(set(masks) - set(images)):
        problems.append(f"{masks[number][0]}: mask without its image '{label} ({number}).png'")
    return images, masks


def _mask_number(path: str) -> int:
    """K of ``..._mask_K.png``; -1 for ``..._mask.png``, which comes first."""
    match = re.search(r"_mask_(\d+)\.png$", path, re.IGNORECASE)
    return int(match.group(1)) if match else -1


def _busi_records(label: str, number: int, image: str, mask_paths: list[str], out: str,
                  problems: list[str], report: _Report) -> list[dict]:
    """One row per lesion (per non-empty mask) of an image; none when all its masks are
    missing or empty (the problem added to ``problems``)."""
    base = {"image": _relative(image, out), "patient_id": f"busi-{label}-{number}",
            "malignant": int(label == "malignant"), "alnm": "", "aln_count": ""}
    if label == "normal":
        height, width = image_size(image)
        return [{**base, **_box_columns(Box(0, 0, width, height)), "mask": ""}]
    mask_paths = sorted(mask_paths, key=_mask_number)
    lesions = [(m, Box.from_mask(read_mask(m))) for m in mask_paths]
    found = [(m, box) for m, box in lesions if box is not None]
    if not found:
        problems.append(f"{image}: no lesion: its masks are missing or empty. "
                        f"Received masks: {[os.path.basename(m) for m in mask_paths]}")
        return []
    report.skip("empty mask(s) beside other masks of their image", len(lesions) - len(found))
    return [{**base, **_box_columns(box), "mask": _relative(m, out)} for m, box in found]



IMPORTER = register(Importer(
    "busi", import_busi,
    "BUSI: ROOT/benign, ROOT/malignant, optionally ROOT/normal; one row per lesion mask"))
