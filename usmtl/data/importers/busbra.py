"""The BUS-BRA importer (``usmtl import busbra``): ``bus_data.csv``, ``Images/``, ``Masks/``.

BUS-BRA (Gomez-Flores et al., Med. Phys. 2024) has patient ids, pixel masks and the authors'
patient-level folds; see :func:`import_busbra`.

Example:
    >>> from usmtl.data.importers.busbra import import_busbra
    >>> frame = import_busbra("../shared/data/BUS-BRA", "busbra.csv")  # doctest: +SKIP
    >>> len(frame), frame["patient_id"].nunique()  # doctest: +SKIP
    (1875, 1064)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import pandas as pd

from usmtl.data.duplicates import DEFAULT_MAX_DISTANCE
from usmtl.data.importers._common import (LABELIMG_SUFFIXES, _box_columns, _duplicate_settings,
                                          _progress, _read_table, _relative, _Report, _some,
                                          _write)
from usmtl.data.importers._registry import Importer, register
from usmtl.data.io import image_size, read_mask
from usmtl.data.manifest import Box

BOX_SOURCES = ("mask", "bbox")
BUSBRA_COLUMNS = ("ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Side", "BBOX")
IDC = "invasive ductal carcinoma"


def _parse_busbra_bbox(text: str) -> tuple[int, int, int, int]:
    """'[x, y, w, h]' (1-based x, y) -> four ints; ValueError when it is not that."""
    values = [float(v) for v in text.strip().strip("[]").split(",")]
    if len(values) != 4 or any(v != int(v) for v in values) or values[2] < 0 or values[3] < 0:
        raise ValueError(text)
    return tuple(int(v) for v in values)


def import_busbra(root: str, out: str, box_source: str = "mask", progress: bool = True,
                  duplicates: bool = True, group_duplicates: bool | None = None,
                  max_distance: int = DEFAULT_MAX_DISTANCE,
                  log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Write a manifest for BUS-BRA (``bus_data.csv``, ``Images/``, ``Masks/``).

    ``box_source="mask"`` takes the box from the pixel mask, which is trustworthy;
    ``"bbox"`` converts the CSV ``BBOX`` and clips it to the real image (the CSV is wrong
    for ``bus_0845-s`` and gives a wrong ``Height`` in four rows). ``BBOX`` is [x, y, w, h]
    with 1-based x, y and w, h one less than the extent in pixels (the last pixel is at
    x + w), so it becomes ``x_min = x - 1``, ``x_max = x + w``: this matches the masks.
    ``idc`` (invasive ductal carcinoma) is a label nested inside ``malignant``; ``alnm``
    and ``aln_count`` stay empty because BUS-BRA has no lymph-node labels. ``fold`` comes
    from the authors' patient-level ``5-fold-cv.csv`` when that file exists.

    PNGs in ``Images/`` without a row in ``bus_data.csv`` are skipped and counted.
    Near-duplicate image pairs are listed in ``<out stem>_duplicates.csv`` (pairs across
    the authors' folds are leaks in their cross-validation); BUS-BRA has patient ids, so
    they are grouped into one patient only with ``group_duplicates=True``.

    Args:
        root: the BUS-BRA folder (Gomez-Flores et al., Med. Phys. 2024).
        out: the manifest to write (paths in it are relative to its folder).
        box_source: ``"mask"`` or ``"bbox"``.
        progress: a progress bar while the masks or images are read and hashed.
        duplicates: search near-duplicate images (:mod:`usmtl.data.duplicates`).
        group_duplicates: give near-duplicate images one patient id (default: no).
        max_distance: the largest pHash distance (of 256 bits) of a near-duplicate.
        log: where the report goes (what was skipped, near-duplicates, the summary).

    Returns:
        The manifest's rows (also written to ``out``).

    Raises:
        ManifestError: every problem (missing files, empty masks, bad rows) by CSV line;
            nothing is written then.
        ValueError: an unknown ``box_source``.
        UsmtlError: ``group_duplicates=True`` with ``duplicates=False``.

    Example:
        >>> from usmtl.data.importers import import_busbra
        >>> frame = import_busbra("BUS-BRA", "busbra.csv")  # doctest: +SKIP
        >>> len(frame), int(frame["idc"].sum())  # doctest: +SKIP
        (1875, 520)
    """
    if box_source not in BOX_SOURCES:
        raise ValueError(f"box_source must be one of {BOX_SOURCES}. Received: {box_source!r}")
    root = os.fspath(root)
    dups = _duplicate_settings(duplicates, group_duplicates, False, max_distance, progress,
                               split_column="fold", split_name="the authors' folds")
    csv_path = os.path.join(root, "bus_data.csv")
    table, folds = _read_busbra_tables(root, csv_path)
    if folds is None:
        dups = dataclasses.replace(dups, split_column=None)
    report = _Report(log)
    problems: list[str] = []
    rows = []
    duplicated = table["ID"].str.strip().duplicated(keep=False)
    desc = "reading BUS-BRA masks" if box_source == "mask" else "reading BUS-BRA images"
    for i in _progress(range(len(table)), desc, progress):
        row = table.iloc[i]
        image_id = row["ID"].strip()
        where = f"bus_data.csv line {i + 2} (ID={image_id})"
        image = os.path.join(root, "Images", f"{image_id}.png")
        mask = os.path.join(root, "Masks", f"mask_{image_id.removeprefix('bus_')}.png")
        row_problems = _busbra_row_problems(row, where, image, mask, bool(duplicated[i]), folds)
        box = None
        if not row_problems:
            box, problem = _busbra_box(row, where, image, mask, box_source)
            row_problems = [problem] if problem else []
        if row_problems:
            problems += row_problems
            continue
        rows.append(_busbra_record(row, image, mask, box, out, folds))
    _skip_unlisted(report, os.path.join(root, "Images"), set(table["ID"].str.strip() + ".png"),
                   "bus_data.csv")
    return _write(rows, problems, csv_path, out, report, dups)


def _skip_unlisted(report: _Report, folder: str, listed: set[str], table: str) -> None:
    """Count (and name a few of) the images of ``folder`` that ``table`` does not list."""
    if not os.path.isdir(folder):
        return
    unlisted = sorted(name for name in os.listdir(folder)
                      if os.path.splitext(name)[1].lower() in LABELIMG_SUFFIXES
                      and name not in listed)
    if unlisted:
        report.skip(f"image(s) without a row in {table}", len(unlisted))
        report.note(f"Skipped {len(unlisted)} image(s) in {folder} without a row in {table}: "
                    f"{_some(unlisted, 5)}")


def _read_busbra_tables(root: str, csv_path: str):
    """``bus_data.csv`` and the authors' folds (``{ID: fold}``, None without the file)."""
    table = _read_table(csv_path, BUSBRA_COLUMNS)
    folds_path = os.path.join(root, "5-fold-cv.csv")
    folds = None
    if os.path.isfile(folds_path):
        fold_table = _read_table(folds_path, ("ID", "kFold"))
        folds = dict(zip(fold_table["ID"].str.strip(), fold_table["kFold"].str.strip()))
    return table, folds


def _busbra_row_problems(row, where: str, image: str, mask: str, duplicated: bool,
                         folds) -> list[str]:
    """A row's problems that need no pixel: ids, labels, folds, files."""
    problems = []
    if duplicated:
        problems.append(f"{where}: the ID appears more than once")
    if not row["Case"].strip():
        problems.append(f"{where}: empty 'Case' (the patient id)")
    if row["Pathology"].strip().lower() not in ("benign", "malignant"):
        problems.append(f"{where}: 'Pathology' must be 'benign' or 'malignant'. "
                        f"Received: {row['Pathology']!r}")
    if folds is not None and not folds.get(row["ID"].strip()):
        problems.append(f"{where}: no 'kFold' for this ID in 5-fold-cv.csv")
    if not os.path.isfile(image):
        problems.append(f"{where}: image not found: {image}")
    if not os.path.isfile(mask):
        problems.append(f"{where}: mask not found: {mask}")
    return problems


def _busbra_box(row, where: str, image: str, mask: str, box_source: str):
    """``(box, None)`` from the mask or the CSV's BBOX, or ``(None, problem)``."""
    if box_source == "mask":
        box = Box.from_mask(read_mask(mask))
        return (box, None) if box is not None else (None, f"{where}: the mask is empty: {mask}")
    try:
        x, y, w, h = _parse_busbra_bbox(row["BBOX"])
    except ValueError:
        return None, (f"{where}: 'BBOX' must be '[x, y, w, h]' in whole pixels with "
                      f"w, h >= 0. Received: {row['BBOX']!r}")
    height, width = image_size(image)
    box = Box(max(x - 1, 0), max(y - 1, 0), min(x + w, width), min(y + h, height))
    if box.is_empty:
        return None, (f"{where}: 'BBOX' lies outside the {width}x{height} image. "
                      f"Received: {row['BBOX']!r}")
    return box, None


def _busbra_record(row, image: str, mask: str, box: Box, out: str, folds) -> dict:
    record = {
        "image": _relative(image, out),
        "patient_id": f"busbra-{row['Case'].strip()}",
        "malignant": int(row["Pathology"].strip().lower() == "malignant"),
        "alnm": "",
        "aln_count": "",
        **_box_columns(box),
        "mask": _relative(mask, out),
        "histology": row["Histology"].strip(),
        "idc": int(row["Histology"].strip().lower() == IDC),
        "birads": row["BIRADS"].strip(),
        "device": row["Device"].strip(),
        "side": row["Side"].strip(),
    }
    if folds is not None:
        record["fold"] = folds[row["ID"].strip()]
    return record



IMPORTER = register(Importer(
    "busbra", import_busbra,
    "BUS-BRA (Gomez-Flores et al., Med. Phys. 2024): bus_data.csv, Images/, Masks/"))
