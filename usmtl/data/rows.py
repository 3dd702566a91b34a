"""The manifest in memory: its rows (:class:`Manifest`) and their boxes (:class:`Box`).

What :func:`usmtl.data.manifest.read_manifest` returns, and what a packed crop file
(:meth:`usmtl.data.pack_read.Pack.manifest`) builds from its rows, with no parsing and no
file read here. Ground of the data layer: the manifest parser and the pack reader both stand
on it, so neither needs the other to hold a manifest.

Example:
    >>> from usmtl.data.rows import Box
    >>> Box(10, 20, 50, 40).width, Box(10, 20, 50, 40).union(Box(0, 0, 5, 5))
    (40, Box(x_min=0, y_min=0, x_max=50, y_max=40))
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pandas as pd

from usmtl.errors import ManifestError, UsmtlError

BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")


@dataclasses.dataclass(frozen=True)
class Box:
    """A pixel box: 0-based, ``x_max`` and ``y_max`` exclusive."""

    x_min: int
    y_min: int
    x_max: int
    y_max: int

    @property
    def width(self) -> int:
        return self.x_max - self.x_min

    @property
    def height(self) -> int:
        return self.y_max - self.y_min

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def inside(self, height: int, width: int) -> bool:
        return self.x_min >= 0 and self.y_min >= 0 and self.x_max <= width and self.y_max <= height

    def union(self, other: "Box") -> "Box":
        return Box(
            min(self.x_min, other.x_min),
            min(self.y_min, other.y_min),
            max(self.x_max, other.x_max),
            max(self.y_max, other.y_max),
        )

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "Box | None":
        """Bounding box of the non-zero pixels, or None for an empty mask."""
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return None
        return cls(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _cell(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


class Manifest:
    """A parsed manifest. ``frame`` keeps every column of the CSV as text; parsed values
    come from the methods. Row ``i`` of the frame is line ``i + 2`` of the file, and stays
    named by its file line in a :meth:`subset`."""

    def __init__(self, frame: pd.DataFrame, path: str, boxes: list[Box], lines=None,
                 pack=None, pack_rows=None):
        self.frame = frame.reset_index(drop=True)
        self.path = os.path.abspath(path)
        self.root = os.path.dirname(self.path)
        self._boxes = list(boxes)
        self._lines = list(range(2, len(self.frame) + 2)) if lines is None else list(lines)
        # A packed crop file (usmtl pack) read as a manifest: its crops stand in for the
        # image files, which are not here; pack_rows[i] is row i's crop in it.
        self.pack = pack
        self.pack_rows = None if pack is None else (
            np.arange(len(self.frame)) if pack_rows is None else np.asarray(pack_rows, int))

    def __len__(self) -> int:
        return len(self.frame)

    def line(self, index: int) -> int:
        """The file line of frame row ``index`` (line 1 is the header), also in a subset."""
        return int(self._lines[int(index)])

    def where(self, index: int) -> str:
        """'manifest.csv line 7 (image=a.png)': how errors name a row."""
        image = self.frame.at[index, "image"] if "image" in self.frame else "?"
        return f"{os.path.basename(self.path)} line {self.line(index)} (image={image})"

    def resolve(self, value: str) -> str:
        value = _cell(value)
        return value if not value or os.path.isabs(value) else os.path.join(self.root, value)

    def image_paths(self) -> list[str]:
        return [self.resolve(v) for v in self.frame["image"]]

    def mask_paths(self) -> list[str | None]:
        if "mask" not in self.frame:
            return [None] * len(self)
        return [self.resolve(v) or None for v in self.frame["mask"]]

    def boxes(self) -> list[Box]:
        return list(self._boxes)

    def patient_ids(self) -> np.ndarray:
        return self.frame["patient_id"].astype(str).to_numpy()

    def has_column(self, column: str) -> bool:
        return column in self.frame.columns

    def column(self, column: str) -> pd.Series:
        if column not in self.frame.columns:
            raise ManifestError(
                f"{self.path}: no column {column!r}. Received columns: {list(self.frame.columns)}"
            )
        return self.frame[column]

    def require_images(self, rows=None) -> None:
        """Raise a :class:`ManifestError` naming the rows (all, or ``rows``) whose image file
        does not exist; run ``usmtl check`` for every other problem."""
        paths = self.image_paths()
        rows = range(len(self)) if rows is None else rows
        missing = [self.where(i) for i in rows if not os.path.isfile(paths[i])]
        if missing:
            raise ManifestError(f"{self.path}: {len(missing)} image file(s) not found "
                                f"(run 'usmtl check' for a full report)", missing[:20])

    def require_image_files(self, what: str) -> None:
        """Raise a :class:`UsmtlError` when this manifest is a packed crop file: ``what``
        (``"Grad-CAM overlays"``) needs the original images, which a pack does not hold."""
        if self.pack is None:
            return
        source = (self.pack.meta.get("source") or {}).get("name") or "the manifest it was packed from"
        raise UsmtlError(f"{self.path} is a packed crop file (usmtl pack): it holds the RoI "
                         f"crops, not the original images, and {what} needs those. Pass the "
                         f"manifest CSV instead ({source}). Received: {self.path}")

    def subset(self, mask) -> "Manifest":
        """Rows where ``mask`` is true, as a new manifest; errors still name file lines."""
        mask = np.asarray(mask, bool)
        return Manifest(self.frame[mask], self.path, [b for b, keep in zip(self._boxes, mask) if keep],
                        [line for line, keep in zip(self._lines, mask) if keep], self.pack,
                        None if self.pack is None else self.pack_rows[mask])
