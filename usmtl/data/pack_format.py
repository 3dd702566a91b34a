"""A packed crop file's format: its entries, the crop codecs, and what writer and reader share.

The file is a zip (stdlib :mod:`zipfile`) whose entries are *stored*, not deflated (the
crops are already compressed), so a reader maps the file and decodes any crop in place:

- ``pack.json``: format version, usmtl version, the crop settings (``image_size``,
  ``roi_margin``, ``square_roi``, ``inpaint_marks``), ``codec``, ``quality``, ``count``,
  ``channels`` (one character per crop: ``1`` grey, ``3`` colour), the source manifest's
  name and sha256, the split source if any, and when it was made.
- ``manifest.csv``: the manifest's rows as they are, every column, same order (written with
  :func:`usmtl.data.manifest.write_manifest`, read back with its text semantics). Box
  columns are filled from the parsed boxes where the manifest gave a LabelImg
  ``annotation`` instead, since the annotation files do not travel; with a split file, a
  ``split`` column holds each row's split.
- ``crops/000000.png`` ...: one encoded crop per row, row order. A crop whose three
  channels are equal (grey ultrasound, nearly always) is stored as one channel and expanded
  to three on read: on BUS-BRA at 256 px a grey PNG is 37% smaller than a 3-channel one
  (59 against 95 MB at zlib level 1; lossless WebP removes equal channels itself).

Codecs (``codec``; ``quality`` where it applies):

- ``png``: lossless, exact crops.
- ``webp``: lossless without ``quality`` (exact crops), else lossy at ``quality`` 1-100.
- ``jpeg``: lossy at ``quality`` 1-100 (default 95); grey crops are grey JPEGs (no chroma
  subsampling).
- ``auto`` (default): ``webp`` lossless, exact crops. Lossless fits BUS-BRA at 256 px in
  44 MB, under the 64 MB asked of a pack, so there is no AUC change to state; PNG fits too
  but with less room (58 MB) for a data set with more texture.

Measured on BUS-BRA (1,875 grey images, 256 px, margin 0.1, square: ``usmtl pack busbra.csv
--config busbra``; two shared CPU cores; the pack time includes the pre-check, 4 s, which
decodes every image once; pixel error against the lossless crops, in uint8 levels):

=============== ===== ========= ========================================
codec           MB    pack time pixel error (mean, max)
=============== ===== ========= ========================================
png, 3 channels 94.5  --        exact (zlib level 1; 68 MB at level 9)
png, grey       57.9  18 s      exact (zlib level 3; 55 MB at level 9)
webp lossless   44.2  72 s      exact
webp q95        21.6  17 s      0.78, 8
webp q90        15.6  28 s      1.12, 13
jpeg q95        32.2  10 s      0.53, 10
jpeg q90        23.1  12 s      0.79, 18
=============== ===== ========= ========================================

Reading every crop back takes 1.5-2.5 s (0.6 s for JPEG). The AUC change of lossy crops
(issue #15), one trained model scoring the test split's lossless and lossy crops: on 445
phantoms at 64 px (quickstart, 128 test images, malignancy AUC 0.976) at most 0.0008 for
malignancy and 0.005 for the ALN heads (49 malignant images), the largest probability
change 0.03-0.05 (jpeg q90 the worst); on BUS-BRA at 128 px (small ResNet, 568 test images,
malignancy AUC 0.887) at most 0.0004 for malignancy, 0.0045 for BI-RADS 5 and 0.0074 for
IDC (184 malignant images), the largest probability change 0.023-0.051.

The writer is :mod:`usmtl.data.pack_write`, the reader :mod:`usmtl.data.pack_read`, the check
of ``pack.json`` :mod:`usmtl.data.pack_meta`; :mod:`usmtl.data.pack` gathers their names.
This module imports neither TensorFlow nor Keras (OpenCV on first use).

Example:
    >>> from usmtl.data.pack_format import is_pack
    >>> is_pack("busbra256.pack"), is_pack("manifest.csv")
    (True, False)
"""

from __future__ import annotations

import os
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from usmtl.errors import ConfigError, ImageReadError

FORMAT_VERSION = 1
SUFFIX = ".pack"
META = "pack.json"
MANIFEST = "manifest.csv"
CROPS = "crops/"
CODECS = ("png", "webp", "jpeg")
EXTENSIONS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}
DEFAULT_JPEG_QUALITY = 95
# OpenCV's PNG zlib level: on BUS-BRA, 3 is 3% smaller than its default (1) for little time;
# 9 saves 4% more for ten times the time (see the module docstring).
PNG_LEVEL = 3
# codec="auto": lossless, and the smallest lossless that OpenCV writes everywhere (BUS-BRA at
# 256 px: 44 MB, under the 64 MB asked; see the module docstring).
AUTO_CODEC = ("webp", None)
CROP_KEYS = ("image_size", "roi_margin", "square_roi", "inpaint_marks")
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip entry's local file header (30 bytes)


def default_workers() -> int:
    """Threads for cropping and decoding: OpenCV releases the GIL, so one per core (max 8)."""
    return max(1, min(8, os.cpu_count() or 1))


def is_pack(path) -> bool:
    """Whether ``path`` names a pack: its name ends in ``.pack`` (which need not exist yet,
    so that opening it says what is wrong), or it is a zip holding ``pack.json``. Reads at
    most the zip's directory; never raises.

    Example:
        >>> is_pack("busbra256.pack"), is_pack("manifest.csv")
        (True, False)
    """
    if path is None:
        return False
    try:
        path = os.fspath(path)
    except TypeError:
        return False
    if str(path).lower().endswith(SUFFIX):
        return True
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return META in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------
# Encoding and decoding one crop
# ---------------------------------------------------------------------------------------


def _codec_settings(codec: str, quality) -> tuple[str, int | None]:
    """``(codec, quality)`` checked; ``auto`` resolved; ``quality`` None means lossless."""
    if codec == "auto":
        if quality is not None:
            raise ConfigError(f"codec 'auto' chooses its own quality; give a codec with the "
                              f"quality (--codec webp --quality {quality}). "
                              f"Received: codec='auto', quality={quality!r}")
        return AUTO_CODEC
    if codec not in CODECS:
        raise ConfigError(f"codec must be auto, {', '.join(CODECS)}. Received: {codec!r}")
    if codec == "png" and quality is not None:
        raise ConfigError(f"png is lossless and takes no quality; use webp or jpeg for a lossy "
                          f"pack. Received: codec='png', quality={quality!r}")
    if codec == "jpeg" and quality is None:
        quality = DEFAULT_JPEG_QUALITY
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) \
                or not 1 <= int(quality) <= 100:
            raise ConfigError(f"quality must be a whole number from 1 to 100. "
                              f"Received: {quality!r}")
        quality = int(quality)
    return codec, quality


def _encode_params(codec: str, quality: int | None) -> list[int]:
    import cv2

    if codec == "png":
        return [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL]
    if codec == "webp":  # OpenCV: a quality above 100 is lossless WebP
        return [cv2.IMWRITE_WEBP_QUALITY, 101 if quality is None else quality]
    return [cv2.IMWRITE_JPEG_QUALITY, quality]


def is_grey(crop: np.ndarray) -> bool:
    """Whether the three channels of an ``(H, W, 3)`` crop are equal."""
    return bool(np.array_equal(crop[..., 0], crop[..., 1])
                and np.array_equal(crop[..., 1], crop[..., 2]))


def encode_crop(crop: np.ndarray, codec: str, quality: int | None = None,
                grey: bool = True) -> tuple[bytes, int]:
    """``(bytes, channels)`` of an ``(H, W, 3)`` uint8 RGB crop in ``codec`` (``png``,
    ``webp``, ``jpeg``; ``quality`` None: lossless, jpeg excepted). With ``grey``, a crop
    whose channels are equal is encoded as one channel.

    Raises:
        ImageReadError: OpenCV could not encode it.
    """
    import cv2

    channels = 1 if grey and is_grey(crop) else 3
    image = crop[..., 0] if channels == 1 else cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(EXTENSIONS[codec], np.ascontiguousarray(image),
                              _encode_params(codec, quality))
    if not ok:
        raise ImageReadError(f"OpenCV could not encode a {crop.shape} crop as {codec}. "
                             f"Received: quality={quality!r}")
    return buffer.tobytes(), channels


def decode_crop(data: bytes, channels: int, size: int) -> np.ndarray | None:
    """The ``(size, size, 3)`` uint8 RGB crop of :func:`encode_crop`'s bytes, or None when
    they do not decode to that shape."""
    import cv2

    buffer = np.frombuffer(data, np.uint8)
    if channels == 1:
        # Grey as grey: a lossy WebP decoded in colour differs by 1 between its channels.
        image = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
        if image is None or image.shape != (size, size):
            return None
        return np.repeat(image[:, :, None], 3, axis=2)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.shape != (size, size, 3):
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _ordered(function: Callable, items: list, workers: int):
    """``function(item)`` for each item, in order, from a thread pool that keeps a bounded
    number of results ahead (never the whole data set in memory at once)."""
    if workers <= 1:
        yield from map(function, items)
        return
    ahead = workers * 4
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(function, item) for item in items[:ahead]]
        for k in range(len(items)):
            result = futures[k].result()
            futures[k] = None  # let the result go once it is consumed
            if k + ahead < len(items):
                futures.append(pool.submit(function, items[k + ahead]))
            yield result


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="image")


def _entry(i: int, codec: str) -> str:
    """The zip entry of crop ``i`` (row order) in ``codec``: ``crops/000042.webp``."""
    return f"{CROPS}{i:06d}{EXTENSIONS[codec]}"
