"""Writing a packed crop file: :func:`write_pack` (``usmtl pack``).

Every row of a manifest is cropped once, exactly as training does
(:func:`usmtl.data.roi.load_roi`), encoded (:mod:`usmtl.data.pack_format`, which also
describes the file and the codecs, with their sizes and times on BUS-BRA) and written in row
order, atomically. The reader is :mod:`usmtl.data.pack_read`.

Example:
    >>> from usmtl.data.pack_write import write_pack
    >>> write_pack("busbra.csv", "busbra256.pack", image_size=256,
    ...            roi_margin=0.1).line()  # doctest: +SKIP
    '1875 crops (256 px, webp lossless), 44.2 MB in 72 s: busbra256.pack'
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
import time
import zipfile
from typing import Callable

import numpy as np
import pandas as pd

from usmtl._version import __version__
from usmtl.atomic import write_binary_atomic
from usmtl.data.manifest import BOX_COLUMNS, _cell, read_manifest, write_manifest
from usmtl.data.pack_format import (FORMAT_VERSION, MANIFEST, META, _bar, _codec_settings, _entry,
                                    _ordered, default_workers, encode_crop)
from usmtl.data.prepare import print_warning, require_usable
from usmtl.data.splits import load_split, rows_in_split
from usmtl.errors import ConfigError, ImageReadError, UsmtlError


@dataclasses.dataclass
class PackSummary:
    """What :func:`write_pack` wrote."""

    path: str
    images: int
    bytes: int
    codec: str
    quality: int | None  # None: lossless
    image_size: int
    grey: int  # crops stored as one channel
    seconds: float  # all of it, pre-check included
    check_seconds: float  # the manifest's pre-check (every image decoded once)

    @property
    def lossless(self) -> bool:
        return self.quality is None

    def line(self) -> str:
        """``445 crops (64 px, webp lossless), 1.9 MB in 3 s: demo64.pack``"""
        quality = "lossless" if self.quality is None else f"quality {self.quality}"
        return (f"{self.images} crops ({self.image_size} px, {self.codec} {quality}), "
                f"{self.bytes / 1e6:.1f} MB in {self.seconds:.0f} s: {self.path}")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _packed_frame(manifest, split_file: str | None) -> pd.DataFrame:
    """The manifest's rows as they are, box columns filled where an annotation gave the box,
    and a ``split`` column from ``split_file``."""
    frame = manifest.frame.copy()
    boxes = manifest.boxes()
    for k, column in enumerate(BOX_COLUMNS):
        filled = [str(dataclasses.astuple(b)[k]) for b in boxes]
        if column not in frame.columns:
            frame[column] = filled
        else:  # only the rows whose box came from an annotation file
            frame[column] = [v if _cell(v) else f for v, f in zip(frame[column], filled)]
    if split_file:
        frame["split"] = rows_in_split(manifest, load_split(split_file))
    return frame


def write_pack(manifest_path, out, *, image_size: int, roi_margin: float,
               square_roi: bool = True, inpaint_marks: bool = False,
               split_file: str | None = None, codec: str = "auto", quality: int | None = None,
               grey: bool = True, workers: int | None = None, progress: bool = True,
               warn: Callable[[str], None] | None = print_warning) -> PackSummary:
    """Crop every row of a manifest and write the crops, rows and split as one pack file.

    The manifest is pre-checked first (:func:`usmtl.data.prepare.require_usable`: every
    image decoded, every bad row named, nothing written), then each row is cropped with
    :func:`usmtl.data.roi.load_roi`, the function training uses, in a thread pool, encoded
    and written in row order. The file appears at ``out`` whole or not at all (written
    beside it and renamed, :mod:`usmtl.atomic`).

    Args:
        manifest_path: the manifest CSV.
        out: the pack to write (by convention ``*.pack``); replaced if it exists.
        image_size, roi_margin, square_roi, inpaint_marks: the crop settings, as the
            config's ``data`` section; a run reading the pack must use the same ones
            (:meth:`Pack.require_matches`).
        split_file: a split CSV or a run directory (its ``split.csv``) whose split is stored
            as the ``split`` column (replacing the manifest's own); every patient must be in
            it. Default: the manifest's rows as they are.
        codec, quality: see the module docstring; ``auto`` is lossless WebP.
        grey: store crops whose channels are equal as one channel (read back as three).
        workers: cropping threads (default :func:`default_workers`).
        progress: tqdm progress bars (the pre-check's, then the cropping's).
        warn: called with each of the pre-check's warnings (default: ``warning: ...`` on
            stderr; None: silent; see :func:`~usmtl.data.prepare.require_usable`).

    Returns:
        A :class:`PackSummary`.

    Raises:
        ManifestError: the manifest's problems, each naming its line; a split file that
            misses patients.
        ConfigError: a bad codec, quality or size.
        ImageReadError: a crop that could not be cut or encoded (an image changed after the
            pre-check), naming its row.
        UsmtlError: the file could not be written (``out`` is left as it was).

    Example:
        >>> write_pack("busbra.csv", "busbra256.pack", image_size=256,
        ...            roi_margin=0.1).line()  # doctest: +SKIP
        '1875 crops (256 px, webp lossless), 44.2 MB in 72 s: busbra256.pack'
    """
    from usmtl.data.roi import load_roi  # looked up when called: tests replace it

    codec, quality = _codec_settings(codec, quality)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or image_size < 1:
        raise ConfigError(f"image_size must be a whole number of pixels >= 1. "
                          f"Received: {image_size!r}")
    image_size = int(image_size)
    manifest_path, out = os.fspath(manifest_path), os.fspath(out)
    workers = default_workers() if workers is None else max(1, int(workers))
    start = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    require_usable(manifest_path, progress=progress, warn=warn)
    check_seconds = time.perf_counter() - start
    manifest = read_manifest(manifest_path)
    frame = _packed_frame(manifest, split_file)
    paths, boxes = manifest.image_paths(), manifest.boxes()

    def crop(i: int) -> tuple[bytes, int]:
        try:
            roi = load_roi(paths[i], boxes[i], roi_margin, square_roi, image_size,
                           inpaint_marks)
            return encode_crop(roi, codec, quality, grey)
        except ImageReadError as exc:
            raise ImageReadError(f"{manifest.where(i)}: {exc}") from None

    meta = {
        "format": FORMAT_VERSION,
        "usmtl_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "image_size": image_size,
        "roi_margin": float(roi_margin),
        "square_roi": bool(square_roi),
        "inpaint_marks": bool(inpaint_marks),
        "codec": codec,
        "quality": quality,
        "lossless": quality is None,
        "count": len(manifest),
        "source": {"name": os.path.basename(manifest_path),
                   "path": os.path.abspath(manifest_path),
                   "sha256": _sha256(manifest_path)},
        "split_source": os.path.abspath(split_file) if split_file else None,
    }
    channels: list[str] = []
    failure: list[BaseException] = []  # the crop's own error, not the writer's wrapper

    def write(f) -> None:
        bar = _bar(len(manifest), "packing crops", progress)
        try:
            # Entries are stored: the crops are compressed already, and a stored entry can
            # be decoded in place from a mapped file.
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
                with tempfile.TemporaryDirectory() as tmp:
                    write_manifest(frame, os.path.join(tmp, MANIFEST))
                    zf.write(os.path.join(tmp, MANIFEST), MANIFEST)
                for i, (data, n) in enumerate(_ordered(crop, list(range(len(manifest))),
                                                      workers)):
                    zf.writestr(_entry(i, codec), data)
                    channels.append(str(n))
                    if bar is not None:
                        bar.update(1)
                # Last: the metadata knows every crop's channels.
                zf.writestr(META, json.dumps({**meta, "channels": "".join(channels)},
                                             indent=1))
        except UsmtlError as exc:
            failure.append(exc)
            raise
        finally:
            if bar is not None:
                bar.close()

    try:
        write_binary_atomic(out, write)
    except UsmtlError:
        if failure:
            raise failure[0] from None
        raise
    return PackSummary(out, len(manifest), os.path.getsize(out), codec, quality, image_size,
                       channels.count("1"), time.perf_counter() - start, check_seconds)
