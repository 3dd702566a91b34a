"""The ``--by`` columns of a subgroup analysis: checked in the predictions, or brought in from
the manifest the predictions were made from (row by row for a run, by image for a
prediction CSV), each mismatch an error naming the file and the rows.

Example:
    >>> import pandas as pd
    >>> from usmtl.evaluation.by_columns import needed_columns
    >>> needed_columns(pd.DataFrame({"image": ["a.png"], "device": ["x"]}), ["device", "site"])
    ['site']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError


def check_by_columns(frame: pd.DataFrame, by, source: str = "the predictions") -> list[str]:
    """The ``by`` column names as a list, each checked to be a column of ``frame``.

    Raises:
        UsmtlError: a column is missing, naming it and the columns available.
    """
    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in by if c not in frame.columns]
    if missing:
        raise UsmtlError(f"No column {', '.join(repr(c) for c in missing)} in {source} to form "
                         f"subgroups (--by). Received columns: {list(frame.columns)}")
    return by


def needed_columns(frame: pd.DataFrame, by) -> list[str]:
    """The ``by`` columns the prediction frame lacks (its own columns come first)."""
    return [c for c in ([by] if isinstance(by, str) else list(by or [])) if c not in frame.columns]


def add_manifest_columns(frame: pd.DataFrame, by, rows: pd.DataFrame,
                         source: str) -> pd.DataFrame:
    """A copy of ``frame`` with the ``by`` columns it lacks taken from ``rows``: the manifest
    rows the predictions were made from, in the same order (as :func:`usmtl.predict.predict`
    writes them).

    Raises:
        UsmtlError: a column in neither, naming it and both sets of columns; ``rows`` and
            ``frame`` differing in length or in their images, row by row.
    """
    need = needed_columns(frame, by)
    if not need:
        return frame
    missing = [c for c in need if c not in rows.columns]
    if missing:
        raise UsmtlError(f"No column {', '.join(repr(c) for c in missing)} in the predictions or in "
                         f"{source} to form subgroups (--by). Received columns: predictions "
                         f"{list(frame.columns)}; manifest {list(rows.columns)}")
    if len(rows) != len(frame):
        raise UsmtlError(f"The {len(frame)} predictions and the {len(rows)} rows of {source} differ "
                         f"in number, so --by {', '.join(need)} cannot be matched row by row (are "
                         f"the cached predictions stale?). Evaluate the prediction CSV with "
                         f"--manifest instead, which matches by image. Received: {len(frame)} and "
                         f"{len(rows)} rows")
    ours, theirs = frame["image"].astype(str).to_numpy(), rows["image"].astype(str).to_numpy()
    differ = np.flatnonzero(ours != theirs)
    if len(differ):
        i = int(differ[0])
        raise UsmtlError(f"The predictions and the rows of {source} are not in the same order "
                         f"({len(differ)} row(s) differ, first row {i}: {ours[i]!r} against "
                         f"{theirs[i]!r}), so --by {', '.join(need)} cannot be matched row by row. "
                         f"Received: {source}")
    frame = frame.copy()
    for column in need:
        frame[column] = rows[column].to_numpy()
    return frame


def merge_manifest_columns(frame: pd.DataFrame, by, manifest: str | None,
                           source: str = "the predictions") -> pd.DataFrame:
    """A copy of ``frame`` with the ``by`` columns it lacks read from the ``manifest`` CSV,
    matched by the ``image`` column as written in both files.

    An image listed twice in the manifest is accepted only when its rows agree on those
    columns (two lesions of one image on one scanner); otherwise the match is ambiguous.

    Raises:
        UsmtlError: a column in neither (or no manifest given), naming it and the columns
            available; a manifest without ``image``; an image repeated with different values;
            a prediction image missing from the manifest.
    """
    need = needed_columns(frame, by)
    if not need:
        return frame
    if manifest is None:
        raise UsmtlError(f"No column {', '.join(repr(c) for c in need)} in {source} to form "
                         f"subgroups (--by); pass --manifest to read it from a manifest, matched by "
                         f"image. Received columns: {list(frame.columns)}")
    try:
        rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UsmtlError(f"{manifest}: cannot read the manifest ({exc})") from None
    missing = [c for c in ["image"] + need if c not in rows.columns]
    if missing:
        raise UsmtlError(f"No column {', '.join(repr(c) for c in missing)} in the predictions or in "
                         f"{manifest} (--by). Received columns: predictions {list(frame.columns)}; "
                         f"manifest {list(rows.columns)}")
    distinct = rows[["image"] + need].drop_duplicates()
    repeated = distinct["image"][distinct["image"].duplicated()].unique()
    if len(repeated):
        raise UsmtlError(f"{manifest}: {len(repeated)} image(s) repeat with different "
                         f"{', '.join(need)}, so the predictions cannot be matched to one row by "
                         f"image. Add the column(s) to the prediction CSV instead. Received: e.g. "
                         f"{list(repeated[:3])}")
    lookup = distinct.set_index("image")
    images = frame["image"].astype(str)
    absent = images[~images.isin(lookup.index)].unique()
    if len(absent):
        raise UsmtlError(f"{len(absent)} image(s) of {source} are not in {manifest} (images are "
                         f"matched as written in both files). Received: e.g. {list(absent[:3])}")
    frame = frame.copy()
    for column in need:
        frame[column] = images.map(lookup[column]).to_numpy()
    return frame
