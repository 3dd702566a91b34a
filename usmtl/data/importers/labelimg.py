"""The LabelImg importer (``usmtl import labelimg``): a folder of images, their LabelImg
(Pascal VOC) XML boxes and a label table.

Any image the manifest takes enters here, DICOM files included (single-frame; read by
:mod:`usmtl.data.io`); see :func:`import_labelimg`.

Example:
    >>> from usmtl.data.importers.labelimg import import_labelimg
    >>> frame = import_labelimg("images", "labels.csv", "manifest.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import os
import warnings
from typing import Callable

import pandas as pd

from usmtl.data.duplicates import DEFAULT_MAX_DISTANCE
from usmtl.data.importers._common import (LABELIMG_SUFFIXES, _duplicate_settings, _read_table,
                                          _relative, _Report, _some, _write)
from usmtl.data.importers._registry import Importer, register
from usmtl.data.manifest import (BINARY_LABEL_COLUMNS, COUNT_LABEL_COLUMNS, parse_binary,
                                 parse_count, read_voc_box)
from usmtl.errors import ManifestError


def _find_image(images_dir: str, value: str) -> tuple[list[str], str]:
    """Image files named by a label-table cell (file name or stem) and the stem path,
    relative to ``images_dir``, that the XML file and default patient id are named after."""
    base, suffix = os.path.splitext(value)
    if suffix.lower() in LABELIMG_SUFFIXES:
        path = os.path.join(images_dir, value)
        return ([path] if os.path.isfile(path) else []), base
    candidates = glob.glob(glob.escape(os.path.join(images_dir, value)) + ".*")
    found = [p for p in candidates
             if os.path.splitext(p)[1].lower() in LABELIMG_SUFFIXES and os.path.isfile(p)]
    return sorted(found), value


def import_labelimg(images_dir: str, labels_csv: str, out: str,
                    annotations_dir: str | None = None, progress: bool = True,
                    duplicates: bool = True, group_duplicates: bool | None = None,
                    max_distance: int = DEFAULT_MAX_DISTANCE,
                    log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Write a manifest for a folder of images with LabelImg Pascal VOC XML files.

    ``labels_csv`` has a column ``image`` (file name or stem, relative to ``images_dir``),
    any label columns (``malignant``, ``alnm``, ``aln_count``, others: all kept) and
    optionally ``patient_id``; without it every image is its own patient. The XML file of
    ``a.png`` is ``a.xml`` in ``annotations_dir``, or beside the image when that is None.

    Images of ``images_dir`` without a row in the table are skipped and counted (those
    with an annotation apart). Near-duplicate image pairs are listed in
    ``<out stem>_duplicates.csv``; they are grouped into one patient by default only when
    the table has no ``patient_id`` (as for BUSI), on request otherwise.

    Args:
        images_dir: the image folder.
        labels_csv: the label table.
        out: the manifest to write.
        annotations_dir: the XML folder (default: beside the images).
        progress: a progress bar while the images are hashed.
        duplicates: search near-duplicate images (:mod:`usmtl.data.duplicates`).
        group_duplicates: give near-duplicate images one patient id (default: only without
            a ``patient_id`` column).
        max_distance: the largest pHash distance (of 256 bits) of a near-duplicate.
        log: where the report goes (what was skipped, near-duplicates, the summary).

    Returns:
        The manifest's rows (also written to ``out``).

    Raises:
        ManifestError: a missing folder, or every problem by line of ``labels_csv``
            (unreadable labels, missing or ambiguous images, missing or bad XML);
            nothing is written then.
        UsmtlError: ``group_duplicates=True`` with ``duplicates=False``.

    Example:
        >>> from usmtl.data.importers import import_labelimg
        >>> frame = import_labelimg("images", "labels.csv", "manifest.csv")  # doctest: +SKIP
    """
    images_dir, labels_csv = os.fspath(images_dir), os.fspath(labels_csv)
    annotations_dir = images_dir if annotations_dir is None else os.fspath(annotations_dir)
    for folder in (images_dir, annotations_dir):
        if not os.path.isdir(folder):
            raise ManifestError(f"{folder}: folder not found")
    table = _read_table(labels_csv, ("image",))
    has_patients = "patient_id" in table.columns
    dups = _duplicate_settings(duplicates, group_duplicates, not has_patients, max_distance,
                               progress)
    report = _Report(log)
    name = os.path.basename(labels_csv)
    problems: list[str] = []
    rows = []
    used: dict[str, int] = {}
    for i in range(len(table)):
        record = _labelimg_record(table, i, name, images_dir, annotations_dir, out, has_patients,
                                  used, problems)
        if record is not None:
            rows.append(record)
    _skip_unlisted_labelimg(report, images_dir, annotations_dir, used, name)
    frame = _write(rows, problems, labels_csv, out, report, dups)
    if not has_patients:
        warnings.warn(f"{name} has no 'patient_id' column: each image is taken as its own "
                      "patient, so images of one patient may land in several splits"
                      + ("; near-duplicate images were grouped into one patient." if dups.group
                         else "."), UserWarning, stacklevel=2)
    return frame


def _label_problems(row, columns, where: str) -> list[str]:
    """Known label columns whose cell cannot be read."""
    problems = []
    for column, parse, expected in (
        [(c, parse_binary, "0, 1 or empty") for c in BINARY_LABEL_COLUMNS]
        + [(c, parse_count, "a whole number >= 0 or empty") for c in COUNT_LABEL_COLUMNS]
    ):
        if column in columns:
            try:
                parse(row[column])
            except ValueError:
                problems.append(f"{where}: {column!r} must be {expected}. Received: {row[column]!r}")
    return problems


def _labelimg_record(table, i: int, name: str, images_dir: str, annotations_dir: str, out: str,
                     has_patients: bool, used: dict, problems: list[str]) -> dict | None:
    """Row ``i``'s manifest record, or None (its problems added to ``problems``); ``used``
    maps each image taken so far to its line."""
    row = table.iloc[i]
    value = row["image"].strip()
    where = f"{name} line {i + 2} (image={value})"
    if not value:
        problems.append(f"{where}: empty 'image'")
        return None
    if has_patients and not row["patient_id"].strip():
        problems.append(f"{where}: empty 'patient_id'")
    problems += _label_problems(row, table.columns, where)
    found, stem = _find_image(images_dir, value)
    if len(found) != 1:
        problems.append(f"{where}: no image {value!r} in {images_dir}" if not found else
                        f"{where}: several images match {value!r}: "
                        f"{[os.path.basename(p) for p in found]}")
        return None
    image = found[0]
    key = os.path.normcase(os.path.abspath(image))
    if key in used:
        problems.append(f"{where}: the same image as line {used[key]}")
        return None
    used[key] = i + 2
    annotation = os.path.join(annotations_dir, stem + ".xml")
    if not os.path.isfile(annotation):
        problems.append(f"{where}: no LabelImg annotation {annotation}")
        return None
    try:
        read_voc_box(annotation)
    except ManifestError as exc:
        problems.append(f"{where}: {exc}")
        return None
    record = {
        "image": _relative(image, out),
        "patient_id": row["patient_id"].strip() if has_patients else stem.replace(os.sep, "/"),
        "annotation": _relative(annotation, out),
    }
    record.update({c: row[c] for c in table.columns if c not in record})
    return record


def _skip_unlisted_labelimg(report: _Report, images_dir: str, annotations_dir: str,
                            used: dict, name: str) -> None:
    """Count the images of ``images_dir`` without a row in the table, with and without a
    LabelImg annotation, and name a few."""
    unlisted = sorted(
        entry for entry in os.listdir(images_dir)
        if os.path.splitext(entry)[1].lower() in LABELIMG_SUFFIXES
        and os.path.normcase(os.path.abspath(os.path.join(images_dir, entry))) not in used
    )
    annotated = [e for e in unlisted
                 if os.path.isfile(os.path.join(annotations_dir, os.path.splitext(e)[0] + ".xml"))]
    bare = [e for e in unlisted if e not in annotated]
    for names, what in ((annotated, f"with a LabelImg annotation but no row in {name}"),
                        (bare, f"with neither a row in {name} nor an annotation")):
        if names:
            report.skip(f"image(s) {what}", len(names))
            report.note(f"Skipped {len(names)} image(s) in {images_dir} {what}: "
                        f"{_some(names, 5)}")


IMPORTER = register(Importer(
    "labelimg", import_labelimg,
    "a folder of images with LabelImg (Pascal VOC) boxes and a label table"))
