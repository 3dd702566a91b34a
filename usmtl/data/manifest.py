"""The manifest: one CSV row per image, the single way data enters ``usmtl``.

Columns (paths are relative to the manifest's folder unless absolute):

- ``image``: PNG/JPEG/BMP (8- or 16-bit; grey, RGB or RGBA) or single-frame DICOM file.
- ``patient_id``: images of one patient always land in the same split.
- labels: ``malignant`` and ``alnm`` in {0, 1}, ``aln_count`` a count >= 0; empty = unknown.
- RoI: ``x_min, y_min, x_max, y_max`` (pixels, 0-based, max exclusive) or ``annotation``,
  a LabelImg Pascal VOC XML file (several objects: their union).
- optional ``mask`` (pixel mask of the lesion) and ``split`` (train/val/test).

Any other column is kept and can be a task's label source (see :mod:`usmtl.tasks`).

This module reads, checks and writes a manifest; the parsed one (:class:`Manifest`,
:class:`Box`) is :mod:`usmtl.data.rows`, and a label cell is read by :mod:`usmtl.labels`.

Rows that are legitimate but suspicious are warnings with counts and lines, never errors
(:func:`manifest_warnings`, ``usmtl check`` and every command's pre-check,
:func:`usmtl.data.prepare.require_usable`), one rule each:

- duplicated rows (the same image file and the same box, whatever their labels): kept, each
  one a training example of its own; the warning names their lines.
- labels spelled ``yes``/``true`` or ``no``/``false`` (any case): read as 1 and 0; the
  warning counts them per column, so that a spreadsheet export is not refused but not
  silently trusted either. Any other word is a problem.
- labels written ``nan``/``na``/``none`` (any case; pandas and R exports write them): read as
  unknown, as an empty cell is; the warning counts them per column.

Example:
    >>> from usmtl.data.manifest import read_manifest
    >>> manifest = read_manifest("manifest.csv")  # doctest: +SKIP
    >>> manifest.boxes()[:1]  # doctest: +SKIP
    [Box(x_min=91, y_min=24, x_max=194, y_max=103)]
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from typing import Iterable

import numpy as np
import pandas as pd

from usmtl.atomic import write_csv_atomic
from usmtl.data.pack_format import is_pack
from usmtl.data.pack_read import open_pack
from usmtl.data.rows import BOX_COLUMNS, Box, Manifest, _cell
from usmtl.errors import ImageReadError, ManifestError
from usmtl.labels import parse_binary, parse_count
from usmtl.tasks import TaskGraph, cohort_warnings, parse_label

BINARY_LABEL_COLUMNS = ("malignant", "alnm")
COUNT_LABEL_COLUMNS = ("aln_count",)
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------
# LabelImg (Pascal VOC) annotations
# ---------------------------------------------------------------------------------------


def read_voc_box(path: str) -> Box:
    """Read a LabelImg Pascal VOC XML file; several objects give the union of their boxes.

    VOC coordinates are 1-based and inclusive, so ``xmin`` becomes ``xmin - 1`` and
    ``xmax`` stays as it is (0-based exclusive).
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ManifestError(f"{path}: annotation file not found") from None
    except ET.ParseError as exc:
        raise ManifestError(f"{path}: not a valid XML file ({exc})") from None
    box = None
    for obj in root.iter("object"):
        bnd = obj.find("bndbox")
        if bnd is None:
            continue
        texts = [bnd.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")]
        try:
            values = [float(t) for t in texts]
            if not all(math.isfinite(v) for v in values):
                raise ValueError
        except (TypeError, ValueError):
            raise ManifestError(
                f"{path}: a <bndbox> needs finite numeric xmin, ymin, xmax, ymax. Received: "
                + ", ".join(f"{k}={t!r}" for k, t in zip(("xmin", "ymin", "xmax", "ymax"), texts))
            ) from None
        b = Box(int(round(values[0])) - 1, int(round(values[1])) - 1,
                int(round(values[2])), int(round(values[3])))
        box = b if box is None else box.union(b)
    if box is None:
        raise ManifestError(f"{path}: no <object><bndbox> in the annotation")
    return box


def write_voc_box(path: str, image_path: str, height: int, width: int, box: Box,
                  name: str = "lesion") -> None:
    """Write ``box`` as a LabelImg Pascal VOC XML file (1-based inclusive coordinates)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = os.path.basename(os.path.dirname(image_path))
    ET.SubElement(root, "filename").text = os.path.basename(image_path)
    ET.SubElement(root, "path").text = image_path
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    obj = ET.SubElement(root, "object")
    ET.SubElement(obj, "name").text = name
    ET.SubElement(obj, "pose").text = "Unspecified"
    ET.SubElement(obj, "truncated").text = "0"
    ET.SubElement(obj, "difficult").text = "0"
    bnd = ET.SubElement(obj, "bndbox")
    for key, value in zip(("xmin", "ymin", "xmax", "ymax"),
                          (box.x_min + 1, box.y_min + 1, box.x_max, box.y_max)):
        ET.SubElement(bnd, key).text = str(value)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=False)


# ---------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------


def write_manifest(frame: pd.DataFrame, path: str) -> None:
    """Write a manifest atomically (:mod:`usmtl.atomic`): a crash never leaves half a file."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_csv_atomic(path, frame)


def read_manifest(path: str) -> Manifest:
    """Read and validate the structure of a manifest (not the image files: see
    :func:`check_manifest`). Every problem is reported at once in a :class:`ManifestError`."""
    manifest, problems = _parse_manifest(path)
    if problems:
        raise ManifestError(f"{os.path.basename(path)}: {len(problems)} problem(s)", problems)
    return manifest


def read_text_csv(path: str, what: str = "file") -> pd.DataFrame:
    """A CSV file as text (no NaN guessing; column names stripped), or a
    :class:`ManifestError` naming ``path`` (``what``: how to call it when it is missing)."""
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: {what} not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"{path}: not a readable CSV file ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _parse_manifest(path: str) -> tuple[Manifest, list[str]]:
    """The manifest and its structural problems. Raises only when no row can be read. A
    packed crop file (``usmtl pack``, :mod:`usmtl.data.pack_read`) is read as the manifest it
    holds, its crops standing in for the image files."""
    path = os.fspath(path)
    pack = None
    if is_pack(path):
        pack = open_pack(path)
        frame = pack.frame.copy()
    else:
        frame = read_text_csv(path, "manifest")
    frame.columns = [str(c).strip() for c in frame.columns]
    problems: list[str] = []
    missing = [c for c in ("image", "patient_id") if c not in frame.columns]
    has_box_columns = all(c in frame.columns for c in BOX_COLUMNS)
    if not has_box_columns and "annotation" not in frame.columns:
        missing.append("x_min,y_min,x_max,y_max or annotation")
    if missing:
        raise ManifestError(
            f"{path}: missing required column(s): {', '.join(missing)}. "
            f"Received columns: {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise ManifestError(f"{path}: the manifest has no rows")
    # 'P0001 ' and 'P0001' are one patient: a stray space must not split a patient in two.
    frame["patient_id"] = frame["patient_id"].astype(str).str.strip()

    manifest = Manifest(frame, path, [])
    boxes: list[Box] = []
    for i in range(len(frame)):
        where = manifest.where(i)
        row = frame.iloc[i]
        if not _cell(row["image"]):
            problems.append(f"{where}: empty 'image'")
        elif "\0" in str(row["image"]):  # no file name holds one; os.stat raises on it
            problems.append(f"{where}: 'image' holds a NUL byte. Received: {row['image']!r}")
        if not _cell(row["patient_id"]):
            problems.append(f"{where}: empty 'patient_id'")
        for column in BINARY_LABEL_COLUMNS:
            if column in frame.columns:
                try:
                    parse_binary(row[column])
                except ValueError:
                    problems.append(f"{where}: label {column!r} must be 0, 1 or empty. "
                                    f"Received: {row[column]!r}")
        for column in COUNT_LABEL_COLUMNS:
            if column in frame.columns:
                try:
                    parse_count(row[column])
                except ValueError:
                    problems.append(f"{where}: {column!r} must be a whole number >= 0 or empty. "
                                    f"Received: {row[column]!r}")
        if "split" in frame.columns and _cell(row["split"]) not in ("",) + SPLITS:
            problems.append(f"{where}: 'split' must be one of {SPLITS} or empty. "
                            f"Received: {row['split']!r}")
        box = None
        if has_box_columns and any(_cell(row[c]) for c in BOX_COLUMNS):
            try:
                values = [float(_cell(row[c])) for c in BOX_COLUMNS]
                if not all(math.isfinite(v) and v == int(v) for v in values):
                    raise ValueError
                box = Box(*(int(v) for v in values))
            except ValueError:
                problems.append(f"{where}: box columns must be whole pixel numbers. Received: "
                                + ", ".join(f"{c}={row[c]!r}" for c in BOX_COLUMNS))
        elif "annotation" in frame.columns and _cell(row["annotation"]):
            try:
                box = read_voc_box(manifest.resolve(row["annotation"]))
            except ManifestError as exc:
                problems.append(f"{where}: {exc}")
        else:
            problems.append(f"{where}: no RoI (give x_min,y_min,x_max,y_max or annotation)")
        if box is not None and box.is_empty:
            problems.append(f"{where}: the box is empty. Received: {box}")
        boxes.append(box if box is not None else Box(0, 0, 0, 0))
    return Manifest(frame, path, boxes, pack=pack), problems


def _label_array(manifest: Manifest, column: str, parse) -> np.ndarray:
    """Parsed labels; values that do not parse (reported elsewhere) count as unknown."""
    def tolerant(value):
        try:
            return parse(value)
        except ValueError:
            return math.nan
    if not manifest.has_column(column):
        return np.full(len(manifest), np.nan)
    return np.array([tolerant(v) for v in manifest.frame[column]], dtype=float)


def consistency_problems(manifest: Manifest, rows: Iterable[int] | None = None) -> list[str]:
    """Label and split problems that need no image file: ALNM on a benign mass, an
    ``aln_count`` that disagrees with ``alnm``, one patient in two splits (all rows, or the
    frame rows ``rows``)."""
    problems = []
    malignant = _label_array(manifest, "malignant", parse_binary)
    alnm = _label_array(manifest, "alnm", parse_binary)
    count = _label_array(manifest, "aln_count", parse_count)
    rows = range(len(manifest)) if rows is None else sorted(set(int(i) for i in rows))
    for i in rows:
        if alnm[i] == 1 and malignant[i] == 0:
            problems.append(f"{manifest.where(i)}: ALNM positive on a benign mass "
                            f"(alnm=1, malignant=0)")
        if not math.isnan(count[i]) and not math.isnan(alnm[i]) and (count[i] > 0) != (alnm[i] == 1):
            problems.append(f"{manifest.where(i)}: aln_count={int(count[i])} disagrees with "
                            f"alnm={int(alnm[i])}")
    if manifest.has_column("split"):
        splits = manifest.frame["split"].map(_cell)
        by_patient = pd.DataFrame({"patient": manifest.patient_ids(), "split": splits})
        by_patient = by_patient[by_patient["split"] != ""]
        by_patient = by_patient[by_patient.index.isin(list(rows))]
        for patient, group in by_patient.groupby("patient", sort=True):
            names = sorted(set(group["split"]))
            if len(names) > 1:
                lines = ", ".join(str(manifest.line(i)) for i in group.index)
                problems.append(f"{os.path.basename(manifest.path)}: patient {patient!r} is in "
                                f"several splits {names} (lines {lines})")
    return problems


# (path, size, mtime, inode) -> (height, width) of files decoded without error in this
# process: a file is decoded again only when it changed (experiments check one manifest
# before each of their runs).
_DECODED: dict = {}
_DECODED_LIMIT = 200_000


def decoded_shape(path: str) -> tuple[int, int]:
    """``(height, width)`` of an image file, decoded once with
    :func:`usmtl.data.io.read_image` (remembered until the file changes); raises
    :class:`ImageReadError` naming it."""
    from usmtl.data.io import read_image

    try:
        stat = os.stat(path)
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        key = None
    if key is not None and key in _DECODED:
        return _DECODED[key]
    image = read_image(path)
    shape = (int(image.shape[0]), int(image.shape[1]))
    if key is not None:
        if len(_DECODED) >= _DECODED_LIMIT:
            _DECODED.clear()
        _DECODED[key] = shape
    return shape


def file_problems(manifest: Manifest, rows: Iterable[int] | None = None, progress: bool = False) -> list[str]:
    """Missing or unreadable image and mask files, and boxes outside their image: every
    image (and mask) is decoded once (:func:`decoded_shape`). ``progress``: a tqdm bar."""
    problems = []
    if manifest.pack is not None:
        return problems  # its crops were read and checked when it was packed (usmtl pack)
    rows = range(len(manifest)) if rows is None else rows
    images, masks, boxes = manifest.image_paths(), manifest.mask_paths(), manifest.boxes()
    iterator = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(list(rows), desc="checking images", unit="image")
    for i in iterator:
        where = manifest.where(i)
        try:
            shape = decoded_shape(images[i])
        except ImageReadError as exc:
            problems.append(f"{where}: missing or unreadable image: {exc}")
            shape = None
        if shape is not None and not boxes[i].is_empty:
            h, w = shape
            if not boxes[i].inside(h, w):
                problems.append(f"{where}: box {boxes[i]} lies outside the {w}x{h} image")
        if masks[i]:
            try:
                mask_shape = decoded_shape(masks[i])
            except ImageReadError as exc:
                problems.append(f"{where}: missing or unreadable mask: {exc}")
                continue
            if shape is not None and mask_shape != shape:
                problems.append(f"{where}: mask is {mask_shape[1]}x{mask_shape[0]} but the image "
                                f"is {shape[1]}x{shape[0]}")
    return problems


def _lines_text(lines: list[int], limit: int = 10) -> str:
    return ", ".join(str(n) for n in lines[:limit]) + (", ..." if len(lines) > limit else "")


def duplicate_warnings(manifest: Manifest, rows: Iterable[int] | None = None) -> list[str]:
    """One warning per group of rows with the same image file and the same box (kept; see
    the module docstring), with its lines; then their count."""
    rows = range(len(manifest)) if rows is None else sorted(set(int(i) for i in rows))
    paths, boxes = manifest.image_paths(), manifest.boxes()
    groups: dict = {}
    for i in rows:
        groups.setdefault((os.path.normpath(paths[i]), boxes[i]), []).append(i)
    repeated = [g for g in groups.values() if len(g) > 1]
    if not repeated:
        return []
    name = os.path.basename(manifest.path)
    extra = sum(len(g) - 1 for g in repeated)
    shown = "; ".join(f"lines {_lines_text([manifest.line(i) for i in g], 5)} "
                      f"(image={manifest.frame.at[g[0], 'image']})" for g in repeated[:5])
    more = f"; and {len(repeated) - 5} more group(s)" if len(repeated) > 5 else ""
    return [f"{name}: {extra} duplicated row(s): {len(repeated)} image(s) listed more than once "
            f"with the same box; each row is kept as a training example of its own: {shown}{more}"]


def label_spelling_warnings(manifest: Manifest, rows: Iterable[int] | None = None,
                            columns: Iterable[str] = BINARY_LABEL_COLUMNS) -> list[str]:
    """One warning per label column (``columns``) where ``yes``/``true``/``no``/``false``
    were read as 1/0, and one where ``nan``/``na``/``none`` were read as unknown (as an empty
    cell; see the module docstring), each with the count and lines."""
    rows = range(len(manifest)) if rows is None else sorted(set(int(i) for i in rows))
    warnings = []
    name = os.path.basename(manifest.path)
    for column in dict.fromkeys(list(columns) + list(COUNT_LABEL_COLUMNS)):
        if not manifest.has_column(column):
            continue
        cells = manifest.frame[column].map(_cell).str.lower()
        words = [i for i in rows if cells.iat[i] in ("yes", "true", "no", "false")]
        if words:
            spelled = sorted(set(cells.iat[i] for i in words))
            warnings.append(f"{name}: label {column!r} is spelled {'/'.join(spelled)} on "
                            f"{len(words)} row(s), read as 1 (yes, true) or 0 (no, false) "
                            f"(lines {_lines_text([manifest.line(i) for i in words])})")
        missing = [i for i in rows if cells.iat[i] in ("nan", "na", "none")]
        if missing:
            spelled = sorted(set(cells.iat[i] for i in missing))
            warnings.append(f"{name}: label {column!r} is {'/'.join(spelled)} on {len(missing)} "
                            f"row(s), read as unknown, as an empty cell "
                            f"(lines {_lines_text([manifest.line(i) for i in missing])})")
    return warnings


def row_warnings(manifest: Manifest, rows: Iterable[int] | None = None, graph=None) -> list[str]:
    """Every warning of the rows (all, or ``rows``): duplicated rows, labels spelled as words,
    and, with a :class:`~usmtl.tasks.TaskGraph`, labels filled outside a task's cohort (that
    one over the whole manifest: it is a convention of its labelling)."""
    rows = None if rows is None else list(rows)
    columns = list(BINARY_LABEL_COLUMNS)
    if graph is not None:  # the 0/1 columns the tasks read as they are
        columns += [parse_label(t.label)[0] for t in graph.tasks if parse_label(t.label)[1] is None]
    warnings = duplicate_warnings(manifest, rows) + label_spelling_warnings(manifest, rows, columns)
    if graph is not None:
        warnings += cohort_warnings(manifest, graph)
    return warnings


def manifest_warnings(path: str, cfg=None) -> list[str]:
    """Legitimate but suspicious rows, as warnings with counts (see the module docstring):
    duplicated rows, labels spelled as words, and, with ``cfg`` (the config whose tasks are
    checked), labels filled outside a task's cohort (``cohort: parent_positive``; hospital
    exports often write ALNM 0 on benign masses), which training and evaluation ignore."""
    try:
        manifest, _ = _parse_manifest(path)
    except ManifestError:
        return []  # reported by check_manifest
    return row_warnings(manifest, graph=None if cfg is None else TaskGraph.from_config(cfg.tasks))


def check_manifest(path: str, progress: bool = False) -> list[str]:
    """Every problem of a manifest, with line numbers; an empty list means it is usable.

    Structure (columns, labels outside {0, 1}, boxes that are empty or unparsable), files
    (missing or unreadable images and masks, boxes outside the image) and consistency (ALNM
    on a benign mass, ``aln_count`` against ``alnm``, a patient in two splits).
    """
    try:
        manifest, problems = _parse_manifest(path)
    except ManifestError as exc:
        return [str(exc)]
    return problems + file_problems(manifest, progress=progress) + consistency_problems(manifest)
