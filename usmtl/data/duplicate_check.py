"""The near-duplicate part of ``usmtl check``, as a function a notebook can call too.

:func:`check_duplicates` finds the near-duplicate image pairs of a manifest
(:mod:`usmtl.data.duplicates`), says how many cross patients or splits and which groups mix
labels (:mod:`usmtl.data.leakage`), and on request writes the pair list and a copy of the
manifest in which near-duplicates share one patient id. What it finds are warnings: they
never make a manifest fail its check. Importing this module imports no TensorFlow.
"""

from __future__ import annotations

import sys
from typing import Callable

import pandas as pd


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def check_duplicates(manifest, split_file: str | None = None, max_distance: int | None = None,
                     duplicates_out: str | None = None, grouped_out: str | None = None,
                     progress: bool = False,
                     say: Callable[[str], None] = _stderr) -> pd.DataFrame | None:
    """Report the near-duplicate images of ``manifest``, one line at a time through ``say``.

    Args:
        manifest: a manifest CSV path (or a parsed :class:`~usmtl.data.manifest.Manifest`).
        split_file: judge pairs across this split (a split.csv or a run directory); None: the
            manifest's split column, if any. Patients it does not know are noted.
        max_distance: largest pHash distance (of 256 bits) of a pair; None: the default of
            :mod:`usmtl.data.duplicates` (56).
        duplicates_out: write every pair to this CSV.
        grouped_out: write a copy of the manifest to this CSV where near-duplicates share one
            patient id (the original in ``source_patient_id``).
        progress: show a progress bar while hashing.
        say: receives each line of the report (warnings start with ``warning:``, notes with
            ``note:``); default: printed to stderr.

    Returns:
        The pair report (:func:`usmtl.data.duplicates.duplicate_report`), or None when the
        manifest cannot be read as one (:func:`usmtl.data.manifest.check_manifest` says why).

    Raises:
        ManifestError: ``split_file`` cannot be read.
        OSError: an output file cannot be written.
    """
    from usmtl.atomic import write_csv_atomic
    from usmtl.data import duplicates as dup
    from usmtl.data.leakage import mixed_label_problems
    from usmtl.data.splits import load_split
    from usmtl.errors import ManifestError

    try:
        parsed = dup.as_manifest(manifest)
    except ManifestError:
        return None  # unreadable as a manifest: check_manifest reports why
    max_distance = dup.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
    splits = load_split(split_file) if split_file else None
    if splits is not None:
        unknown = sorted(set(parsed.patient_ids()) - set(splits))
        if unknown:
            say(f"note: {len(unknown)} patient(s) of {manifest} are not in {split_file}; "
                f"their pairs are not judged across splits: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}")
    pairs = dup.manifest_pairs(parsed, max_distance, progress=progress)
    report = dup.duplicate_report(parsed, splits=splits, pairs=pairs)
    counts = dup.report_counts(report)
    head = f"near-duplicate image pair(s) (pHash distance <= {max_distance} of 256 bits)"
    if counts["across_patients"]:
        say(f"warning: {counts['across_patients']} {head} across patients, "
            f"{counts['across_splits']} of them across splits (the same picture on both "
            f"sides of a split: leakage):")
        for line in dup.format_pairs(report):
            say(f"  {line}")
    say(f"{counts['pairs']} {head}: {counts['across_patients']} across patients "
        f"({counts['across_splits']} across splits), {counts['same_patient']} within one "
        f"patient")
    if duplicates_out:
        write_csv_atomic(duplicates_out, report)
        say(f"Wrote {len(report)} near-duplicate pair(s) to {duplicates_out}")
    elif counts["across_patients"] > 10:
        say("(--duplicates-out FILE lists them all)")
    if grouped_out:
        _write_grouped(parsed, pairs, grouped_out, split_file if splits is not None else None,
                       say)
    for text in mixed_label_problems(parsed, pairs):
        say(f"warning: {text}")
    return report


def _write_grouped(parsed, pairs, grouped_out: str, split_file: str | None, say) -> None:
    """Write the grouped copy and say what merged; warn where a merged patient spans splits."""
    from usmtl.data import duplicates as dup

    frame = dup.write_grouped_manifest(parsed, pairs, grouped_out)
    merged = frame["patient_id"] != frame["source_patient_id"]
    say(f"Wrote {grouped_out}: near-duplicate images share one patient id: "
        f"{frame.loc[merged, 'source_patient_id'].nunique()} patients merged into "
        f"{frame.loc[merged, 'patient_id'].nunique()}; "
        f"{frame['source_patient_id'].nunique()} -> {frame['patient_id'].nunique()} "
        f"patients (the original id in source_patient_id)")
    if split_file is not None:
        say(f"note: {split_file} knows the old patient ids: make a new split from "
            f"{grouped_out} (usmtl fit without --split-file)")
    if "split" in frame.columns:
        spans = frame[merged].groupby("patient_id")["split"].nunique()
        if (spans > 1).any():
            say(f"warning: {int((spans > 1).sum())} merged patient(s) span several values of "
                f"the 'split' column of {grouped_out}: give each one split "
                f"(usmtl check {grouped_out} lists them)")
