"""Importers: turn the layout of a public data set, or a LabelImg folder, into a manifest.

Each importer checks the whole input first and raises one :class:`ManifestError` listing
every problem, so nothing is written from bad input. The manifest is written atomically,
with paths relative to its own folder so that the pair can be moved together.

Each importer then says what it did, through ``log`` (``print`` by default; the CLI's own
echo): what it skipped and why, counted (BUSI's normal images, images without a row or an
annotation), and the near-duplicate image pairs it found (:mod:`usmtl.data.duplicates`),
all listed in ``<out stem>_duplicates.csv`` beside the manifest. Data sets without patient
ids (BUSI, a LabelImg table without ``patient_id``) merge the patients of near-duplicate
images into one by default (``group_duplicates``), so that a split keeps them together; the
others only report them. It ends with ``N rows written to OUT, K skipped: ...``; the same
counts are in ``frame.attrs["import_report"]``.

Example:
    >>> from usmtl.data.importers import import_busbra
    >>> frame = import_busbra("../shared/data/BUS-BRA", "busbra.csv")  # doctest: +SKIP
    >>> len(frame), frame["patient_id"].nunique()  # doctest: +SKIP
    (1875, 1064)
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import warnings
from typing import Callable

import pandas as pd

from usmtl.data.duplicates import (DEFAULT_MAX_DISTANCE, duplicate_report, format_pairs,
                                   group_patients, manifest_pairs, report_counts)
from usmtl.data.io import DICOM_SUFFIXES, image_size, read_mask
from usmtl.data.manifest import (
    BINARY_LABEL_COLUMNS,
    BOX_COLUMNS,
    COUNT_LABEL_COLUMNS,
    Box,
    Manifest,
    parse_binary,
    parse_count,
    read_text_csv,
    read_voc_box,
    write_manifest,
)
from usmtl.errors import ManifestError, UsmtlError

BOX_SOURCES = ("mask", "bbox")
LABELIMG_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp") + DICOM_SUFFIXES
BUSBRA_COLUMNS = ("ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Side", "BBOX")
IDC = "invasive ductal carcinoma"


def _relative(path: str, out: str) -> str:
    """``path`` relative to the folder of the manifest ``out``, as the manifest stores it."""
    return os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(out)))


def _read_table(path: str, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV file as text (no NaN guessing), with its required columns checked."""
    frame = read_text_csv(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing required column(s): {', '.join(missing)}. "
                            f"Received columns: {list(frame.columns)}")
    return frame


@dataclasses.dataclass
class _Report:
    """What an importer says: skip counts by reason, in order, and its messages."""

    log: Callable[[str], None] | None
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    pending: list[str] = dataclasses.field(default_factory=list)

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def note(self, text: str) -> None:
        """Said once the input is known to be good (:func:`_write`), never before an error."""
        self.pending.append(text)

    def say(self, text: str) -> None:
        for line in self.pending + [text]:
            if self.log is not None:
                self.log(line)
        self.pending = []

    def skipped_text(self) -> str:
        total = sum(self.skipped.values())
        reasons = "; ".join(f"{n} {reason}" for reason, n in self.skipped.items())
        return f"{total} skipped" + (f": {reasons}" if reasons else "")


def duplicates_path(out: str) -> str:
    """Where an importer lists the near-duplicate pairs of the manifest ``out``:
    ``<out stem>_duplicates.csv`` beside it."""
    return os.path.splitext(os.fspath(out))[0] + "_duplicates.csv"


@dataclasses.dataclass(frozen=True)
class _DuplicateSettings:
    enabled: bool = True
    group: bool = False
    grouped_by_default: bool = False  # a set without patient ids: say why it groups
    max_distance: int = DEFAULT_MAX_DISTANCE
    progress: bool = False
    split_column: str | None = None  # judged as splits (BUS-BRA: the authors' folds)
    split_name: str = "splits"


def _duplicate_settings(duplicates: bool, group_duplicates: bool | None, default_group: bool,
                        max_distance: int, progress: bool, **extra) -> _DuplicateSettings:
    if group_duplicates and not duplicates:
        raise UsmtlError("group_duplicates needs the near-duplicate search: drop "
                         "duplicates=False (--no-duplicates) or group_duplicates")
    group = default_group if group_duplicates is None else bool(group_duplicates)
    return _DuplicateSettings(duplicates, group and duplicates,
                              group_duplicates is None and default_group, max_distance,
                              progress, **extra)


def _write(rows: list[dict], problems: list[str], source: str, out: str,
           report: _Report | None = None,
           dups: _DuplicateSettings = _DuplicateSettings(enabled=False)) -> pd.DataFrame:
    """Write the manifest, or raise every problem found in ``source`` and write nothing;
    then the near-duplicate pairs (``dups``), and say what was done (``report``)."""
    report = report or _Report(None)
    if problems:
        raise ManifestError(f"{source}: {len(problems)} problem(s)", problems)
    if not rows:
        skipped = f" ({report.skipped_text()})" if report.skipped else ""
        raise ManifestError(f"{source}: no images found{skipped}")
    frame = pd.DataFrame(rows)
    pairs_frame, pairs = None, []
    if dups.enabled:
        manifest = Manifest(frame, out, [])
        pairs = manifest_pairs(manifest, dups.max_distance, progress=dups.progress)
        splits = frame[dups.split_column] if dups.split_column else None
        pairs_frame = duplicate_report(manifest, splits=splits, pairs=pairs)
        if dups.group:
            frame = group_patients(frame, pairs)
    write_manifest(frame, out)
    attrs = {"rows": len(frame), "skipped": dict(report.skipped)}
    if pairs_frame is not None:
        from usmtl.run import write_csv_atomic

        write_csv_atomic(duplicates_path(out), pairs_frame)
        attrs.update(_say_duplicates(report, pairs_frame, frame, out, dups))
    else:
        report.say("Near-duplicate images: not searched (--no-duplicates).")
    frame.attrs["import_report"] = attrs
    report.say(f"{len(frame)} rows written to {out}, {report.skipped_text()}")
    return frame


def _say_duplicates(report: _Report, pairs_frame: pd.DataFrame, frame: pd.DataFrame, out: str,
                    dups: _DuplicateSettings) -> dict:
    """Report the near-duplicate pairs and the grouping; returns their counts."""
    counts = report_counts(pairs_frame)
    where = duplicates_path(out)
    head = f"Near-duplicate images (pHash distance <= {dups.max_distance} of 256 bits):"
    if not counts["pairs"]:
        report.say(f"{head} none (an empty list in {where}).")
    else:
        across_splits = (f" ({counts['across_splits']} across {dups.split_name})"
                         if dups.split_column else "")
        report.say(f"{head} {counts['pairs']} pair(s): {counts['across_patients']} across "
                   f"patients{across_splits}, {counts['same_patient']} within one patient; "
                   f"all listed in {where}")
        for line in format_pairs(pairs_frame):
            report.say(f"  {line}")
    counts["patients"] = int(frame["patient_id"].nunique())
    if dups.group:
        merged = frame["patient_id"] != frame["source_patient_id"]
        counts["merged_patients"] = int(frame.loc[merged, "source_patient_id"].nunique())
        why = ("(on by default: the data set has no patient ids; --no-group-duplicates, "
               "group_duplicates=False, turns it off)" if dups.grouped_by_default else "(on)")
        if not counts["merged_patients"]:
            report.say(f"Near-duplicate grouping {why}: no patients to merge.")
        else:
            report.say(f"Near-duplicate grouping {why}: the images of a near-duplicate group "
                       f"share one patient id: {counts['merged_patients']} patients merged "
                       f"into {frame.loc[merged, 'patient_id'].nunique()}; "
                       f"{frame['source_patient_id'].nunique()} -> {counts['patients']} "
                       f"patients (the original id in source_patient_id).")
    elif counts["across_patients"]:
        report.say("Patient ids kept as they are: --group-duplicates (group_duplicates=True) "
                   "gives near-duplicate images one patient id, so that a split keeps them "
                   "together.")
    return counts


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


# ---------------------------------------------------------------------------------------
# BUSI
# ---------------------------------------------------------------------------------------


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


def _some(names: list[str], k: int) -> str:
    """The first ``k`` names, and how many more there are."""
    return f"{names[:k]}" + (f" and {len(names) - k} more" if len(names) > k else "")


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
