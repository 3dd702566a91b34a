"""Near-duplicate images as problems: a copy across the split; copies that disagree.

The same picture under two patients (listed twice, or a byte-identical or re-encoded copy
under another name) lands on both sides of a split if nothing joins them, and every score on
that split is then optimistic: ``usmtl fit`` refuses it before anything is written
(:func:`duplicate_problems` in :func:`usmtl.data.prepare.prepare_data`). The way out is
``usmtl check MANIFEST --group-duplicates GROUPED.csv``, which gives near-duplicates one
patient id, then a fit on GROUPED.csv. Near-duplicates whose labels differ (a benign image and
its copy labelled malignant; BUSI has such pairs) are reported by line as warnings, by
``usmtl check`` and ``usmtl fit`` alike (:func:`mixed_label_problems`): only the data's owner
can say which label is right. The search itself is :mod:`usmtl.data.duplicates` (pHash, 56 of
256 bits).
"""

from __future__ import annotations

import math
import os

from usmtl.data import duplicates as dup

GROUP_HINT = ("give near-duplicates one patient id with 'usmtl check {name} --group-duplicates "
              "grouped.csv' and fit on grouped.csv (without --split-file: the ids changed), or "
              "remove the copies")


def duplicate_problems(manifest, row_split=None, pairs=None,
                       max_distance: int = dup.DEFAULT_MAX_DISTANCE) -> list[str]:
    """Near-duplicate pairs of ``manifest`` across the split, one line each naming their
    manifest lines and patients, after a first line with the way out; empty when none.

    Args:
        manifest: a :class:`~usmtl.data.manifest.Manifest`.
        row_split: each row's split name ('' unknown).
        pairs: near-duplicate pairs already found (:func:`usmtl.data.duplicates.manifest_pairs`).
        max_distance: the pHash distance of a pair, when ``pairs`` is None.
    """
    if pairs is None:
        pairs = dup.manifest_pairs(manifest, max_distance)
    if not pairs:
        return []
    report = dup.duplicate_report(manifest, splits=list(row_split), pairs=pairs)
    leaks = report[report["across_splits"]]
    if not len(leaks):
        return []
    name = os.path.basename(manifest.path)
    return [f"{len(leaks)} near-duplicate image pair(s) lie across the split (the same picture "
            f"in training and in evaluation): " + GROUP_HINT.format(name=name)] + \
        dup.format_pairs(leaks, limit=10, kinds=(dup.ACROSS_SPLITS,))


def mixed_label_problems(manifest, pairs) -> list[str]:
    """Groups of near-duplicates whose known labels differ, one line per group and label
    column, by manifest line. Rows of one file under one patient (one row per lesion) are no
    pair (:func:`usmtl.data.duplicates.manifest_pairs`), so their labels may differ."""
    from usmtl.data.manifest import BINARY_LABEL_COLUMNS, COUNT_LABEL_COLUMNS, parse_binary, \
        parse_count

    patients = manifest.patient_ids()
    problems = []
    for group in dup.duplicate_groups(pairs, len(manifest)):
        for column, parse in [(c, parse_binary) for c in BINARY_LABEL_COLUMNS] + \
                             [(c, parse_count) for c in COUNT_LABEL_COLUMNS]:
            if not manifest.has_column(column):
                continue
            values = {}
            for i in group:
                try:
                    value = parse(manifest.frame[column].iloc[i])
                except ValueError:
                    continue  # reported as a bad label elsewhere
                if not math.isnan(value):
                    values.setdefault(value, []).append(manifest.line(i))
            if len(values) > 1:
                where = "; ".join(f"{_text(v)} at line{'s' if len(lines) > 1 else ''} "
                                  f"{', '.join(map(str, lines))}"
                                  for v, lines in sorted(values.items()))
                problems.append(f"near-duplicate images of patient(s) "
                                f"{', '.join(sorted(set(patients[group])))} mix labels of "
                                f"{column!r}: {where}; fix the labels or remove the copy. "
                                f"Received: {len(group)} images")
    return problems


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)

