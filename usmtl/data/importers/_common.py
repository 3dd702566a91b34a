"""What every importer shares: reading its tables, the report it gives, writing the manifest.

An importer (:mod:`usmtl.data.importers`) collects its rows and problems, then calls
:func:`_write`: every problem raised at once and nothing written, or the manifest written
atomically, its near-duplicate pairs listed in ``<out stem>_duplicates.csv``
(:func:`duplicates_path`) and, with ``group_duplicates``, near-duplicate images given one
patient id; then the report through ``log``: what was skipped and why, counted, the pairs,
and ``N rows written to OUT, K skipped: ...``.

Example:
    >>> from usmtl.data.importers._common import duplicates_path
    >>> duplicates_path("data/busbra.csv")
    'data/busbra_duplicates.csv'
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import pandas as pd

from usmtl.atomic import write_csv_atomic
from usmtl.data.duplicates import (DEFAULT_MAX_DISTANCE, duplicate_report, format_pairs,
                                   group_patients, manifest_pairs, report_counts)
from usmtl.data.io import DICOM_SUFFIXES
from usmtl.data.manifest import BOX_COLUMNS, Box, Manifest, read_text_csv, write_manifest
from usmtl.errors import ManifestError, UsmtlError

# The image files an importer takes from a folder (DICOM: single-frame, :mod:`usmtl.data.io`).
LABELIMG_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp") + DICOM_SUFFIXES


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



def _some(names: list[str], k: int) -> str:
    """The first ``k`` names, and how many more there are."""
    return f"{names[:k]}" + (f" and {len(names) - k} more" if len(names) > k else "")

