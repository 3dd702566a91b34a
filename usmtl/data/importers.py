"""Importers: turn the layout of a public data set, or a LabelImg folder, into a manifest.

Each importer checks the whole input first and raises one :class:`ManifestError` listing
every problem, so nothing is written from bad input. The manifest is written atomically,
with paths relative to its own folder so that the pair can be moved together.

Example:
    >>> from usmtl.data.importers import import_busbra
    >>> frame = import_busbra("../shared/data/BUS-BRA", "busbra.csv")  # doctest: +SKIP
    >>> len(frame), frame["patient_id"].nunique()  # doctest: +SKIP
    (1875, 1064)
"""

from __future__ import annotations

import glob
import os
import re
import warnings

import pandas as pd

from usmtl.data.io import DICOM_SUFFIXES, image_size, read_mask
from usmtl.data.manifest import (
    BINARY_LABEL_COLUMNS,
    BOX_COLUMNS,
    COUNT_LABEL_COLUMNS,
    Box,
    parse_binary,
    parse_count,
    read_voc_box,
    write_manifest,
)
from usmtl.errors import ManifestError

BOX_SOURCES = ("mask", "bbox")
LABELIMG_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp") + DICOM_SUFFIXES
BUSBRA_COLUMNS = ("ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Side", "BBOX")
IDC = "invasive ductal carcinoma"


def _relative(path: str, out: str) -> str:
    """``path`` relative to the folder of the manifest ``out``, as the manifest stores it."""
    return os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(out)))


def _read_table(path: str, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV file as text (no NaN guessing), with its required columns checked."""
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"{path}: not a readable CSV file ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing required column(s): {', '.join(missing)}. "
                            f"Received columns: {list(frame.columns)}")
    return frame


def _write(rows: list[dict], problems: list[str], source: str, out: str) -> pd.DataFrame:
    """Write the manifest, or raise every problem found in ``source`` and write nothing."""
    if problems:
        raise ManifestError(f"{source}: {len(problems)} problem(s)", problems)
    if not rows:
        raise ManifestError(f"{source}: no images found")
    frame = pd.DataFrame(rows)
    write_manifest(frame, out)
    return frame


def _box_columns(box: Box) -> dict[str, int]:
    return dict(zip(BOX_COLUMNS, (box.x_min, box.y_min, box.x_max, box.y_max)))


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="image")


# ---------------------------------------------------------------------------------------
# BUS-BRA
# ---------------------------------------------------------------------------------------


def _parse_busbra_bbox(text: str) -> tuple[int, int, int, int]:
    """'[x, y, w, h]' (1-based x, y) -> four ints; ValueError when it is not that."""
    values = [float(v) for v in text.strip().strip("[]").split(",")]
    if len(values) != 4 or any(v != int(v) for v in values) or values[2] < 0 or values[3] < 0:
        raise ValueError(text)
    return tuple(int(v) for v in values)


def import_busbra(root: str, out: str, box_source: str = "mask",
                  progress: bool = True) -> pd.DataFrame:
    """Write a manifest for BUS-BRA (``bus_data.csv``, ``Images/``, ``Masks/``).

    ``box_source="mask"`` takes the box from the pixel mask, which is trustworthy;
    ``"bbox"`` converts the CSV ``BBOX`` and clips it to the real image (the CSV is wrong
    for ``bus_0845-s`` and gives a wrong ``Height`` in four rows). ``BBOX`` is [x, y, w, h]
    with 1-based x, y and w, h one less than the extent in pixels (the last pixel is at
    x + w), so it becomes ``x_min = x - 1``, ``x_max = x + w``: this matches the masks.
    ``idc`` (invasive ductal carcinoma) is a label nested inside ``malignant``; ``alnm``
    and ``aln_count`` stay empty because BUS-BRA has no lymph-node labels. ``fold`` comes
    from the authors' patient-level ``5-fold-cv.csv`` when that file exists.

    Args:
        root: the BUS-BRA folder (Gomez-Flores et al., Med. Phys. 2024).
        out: the manifest to write (paths in it are relative to its folder).
        box_source: ``"mask"`` or ``"bbox"``.
        progress: a progress bar while the masks or images are read.

    Returns:
        The manifest's rows (also written to ``out``).

    Raises:
        ManifestError: every problem (missing files, empty masks, bad rows) by CSV line;
            nothing is written then.
        ValueError: an unknown ``box_source``.

    Example:
        >>> from usmtl.data.importers import import_busbra
        >>> frame = import_busbra("BUS-BRA", "busbra.csv")  # doctest: +SKIP
        >>> len(frame), int(frame["idc"].sum())  # doctest: +SKIP
        (1875, 520)
    """
    if box_source not in BOX_SOURCES:
        raise ValueError(f"box_source must be one of {BOX_SOURCES}. Received: {box_source!r}")
    root = os.fspath(root)
    csv_path = os.path.join(root, "bus_data.csv")
    table, folds = _read_busbra_tables(root, csv_path)
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
    return _write(rows, problems, csv_path, out)


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


# ---------------------------------------------------------------------------------------
# BUSI
# ---------------------------------------------------------------------------------------


def _busi_folder(root: str) -> str:
    """The folder holding BUSI's class folders: ``root`` or ``root/Dataset_BUSI_with_GT``."""
    for folder in (os.path.join(root, "Dataset_BUSI_with_GT"), root):
        if all(os.path.isdir(os.path.join(folder, c)) for c in ("benign", "malignant")):
            return folder
    raise ManifestError(f"{root}: not a BUSI folder: expected benign/ and malignant/ in it or "
                        f"in Dataset_BUSI_with_GT/ inside it. Received: {root}")


def import_busi(root: str, out: str, include_normal: bool = False) -> pd.DataFrame:
    """Write a manifest for BUSI (``benign (N).png`` with ``benign (N)_mask[_K].png``).

    The box is the union of the boxes of all masks of an image. ``mask`` is filled only
    for images with a single mask, since one mask file could not hold the others. With
    ``include_normal`` the ``normal`` images join as benign with the whole image as box
    and a column ``normal`` = 1. BUSI has no patient ids, so every image is its own patient.

    Args:
        root: the BUSI folder, or the folder holding ``Dataset_BUSI_with_GT``.
        out: the manifest to write.
        include_normal: add the ``normal`` images (no lesion) as benign.

    Returns:
        The manifest's rows (also written to ``out``).

    Raises:
        ManifestError: not a BUSI layout, or every problem (odd names, masks without
            images, empty masks); nothing is written then.

    Example:
        >>> from usmtl.data.importers import import_busi
        >>> frame = import_busi("Dataset_BUSI_with_GT", "busi.csv")  # doctest: +SKIP
    """
    root = os.fspath(root)
    folder = _busi_folder(root)
    classes = ("benign", "malignant") + (("normal",) if include_normal else ())
    if include_normal and not os.path.isdir(os.path.join(folder, "normal")):
        raise ManifestError(f"{folder}: include_normal needs a normal/ folder. "
                            f"Received: {sorted(os.listdir(folder))}")
    problems: list[str] = []
    rows = []
    for label in classes:
        images, masks = _scan_busi_class(os.path.join(folder, label), label, problems)
        for number in sorted(images):
            record = _busi_record(label, number, images[number], masks.get(number, []), out,
                                  problems)
            if record is not None:
                if include_normal:
                    record["normal"] = int(label == "normal")
                rows.append(record)
    frame = _write(rows, problems, folder, out)
    warnings.warn("BUSI has no patient ids: each image is taken as its own patient, so "
                  "patient-level splitting is impossible and the same patient may appear in "
                  "several splits (scores may be optimistic).", UserWarning, stacklevel=2)
    return frame


def _scan_busi_class(class_dir: str, label: str, problems: list[str]):
    """``({N: image}, {N: [masks]})`` of one class folder; odd names and orphan masks are
    added to ``problems``."""
    pattern = re.compile(rf"^{label} \((\d+)\)(_mask(?:_\d+)?)?\.png$", re.IGNORECASE)
    images: dict[int, str] = {}
    masks: dict[int, list[str]] = {}
    for name in sorted(os.listdir(class_dir)):
        path = os.path.join(class_dir, name)
        if not name.lower().endswith(".png"):
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


def _busi_record(label: str, number: int, image: str, mask_paths: list[str], out: str,
                 problems: list[str]) -> dict | None:
    """One image's row, or None (its problem added to ``problems``)."""
    if label == "normal":
        height, width = image_size(image)
        box, mask = Box(0, 0, width, height), ""
    else:
        boxes = [b for b in (Box.from_mask(read_mask(m)) for m in mask_paths) if b]
        if not boxes:
            problems.append(f"{image}: no lesion: its masks are missing or empty. "
                            f"Received masks: {[os.path.basename(m) for m in mask_paths]}")
            return None
        box = boxes[0]
        for other in boxes[1:]:
            box = box.union(other)
        mask = _relative(mask_paths[0], out) if len(mask_paths) == 1 else ""
    return {
        "image": _relative(image, out),
        "patient_id": f"busi-{label}-{number}",
        "malignant": int(label == "malignant"),
        "alnm": "",
        "aln_count": "",
        **_box_columns(box),
        "mask": mask,
    }


# ---------------------------------------------------------------------------------------
# LabelImg folders
# ---------------------------------------------------------------------------------------


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
                    annotations_dir: str | None = None) -> pd.DataFrame:
    """Write a manifest for a folder of images with LabelImg Pascal VOC XML files.

    ``labels_csv`` has a column ``image`` (file name or stem, relative to ``images_dir``),
    any label columns (``malignant``, ``alnm``, ``aln_count``, others: all kept) and
    optionally ``patient_id``; without it every image is its own patient. The XML file of
    ``a.png`` is ``a.xml`` in ``annotations_dir``, or beside the image when that is None.

    Args:
        images_dir: the image folder.
        labels_csv: the label table.
        out: the manifest to write.
        annotations_dir: the XML folder (default: beside the images).

    Returns:
        The manifest's rows (also written to ``out``).

    Raises:
        ManifestError: a missing folder, or every problem by line of ``labels_csv``
            (unreadable labels, missing or ambiguous images, missing or bad XML);
            nothing is written then.

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
    name = os.path.basename(labels_csv)
    problems: list[str] = []
    rows = []
    used: dict[str, int] = {}
    for i in range(len(table)):
        record = _labelimg_record(table, i, name, images_dir, annotations_dir, out, has_patients,
                                  used, problems)
        if record is not None:
            rows.append(record)
    frame = _write(rows, problems, labels_csv, out)
    if not has_patients:
        warnings.warn(f"{name} has no 'patient_id' column: each image is taken as its own "
                      "patient, so images of one patient may land in several splits.",
                      UserWarning, stacklevel=2)
    _warn_unlisted(images_dir, used, name)
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


def _warn_unlisted(images_dir: str, used: dict, name: str) -> None:
    unlisted = sorted(
        entry for entry in os.listdir(images_dir)
        if os.path.splitext(entry)[1].lower() in LABELIMG_SUFFIXES
        and os.path.normcase(os.path.abspath(os.path.join(images_dir, entry))) not in used
    )
    if unlisted:
        warnings.warn(f"{len(unlisted)} image(s) in {images_dir} have no row in {name} and are "
                      f"left out: {unlisted[:5]}{' ...' if len(unlisted) > 5 else ''}",
                      UserWarning, stacklevel=2)
