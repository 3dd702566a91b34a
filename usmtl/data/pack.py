"""A packed crop file: every RoI crop of a manifest, its rows and split, in one file.

``usmtl pack MANIFEST --size 256 --out busbra256.pack`` crops every row once, exactly as
training does (:func:`usmtl.data.roi.load_roi`: margin, squaring, optional inpainting,
resize), and writes the crops, the manifest's rows (labels, patient ids, every column) and
optionally a split into one file. The pack stands in for the manifest where neither the
original images nor TensorFlow are at hand (a GPU machine with JAX): reading it needs
numpy, pandas and OpenCV only. This module imports neither TensorFlow nor Keras.

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

Example:
    >>> from usmtl.data.pack import open_pack, write_pack
    >>> summary = write_pack("demo/manifest.csv", "demo64.pack", image_size=64,
    ...                      roi_margin=0.2)  # doctest: +SKIP
    >>> pack = open_pack("demo64.pack")  # doctest: +SKIP
    >>> pack.crops().shape, pack.frame["malignant"][:2].tolist()  # doctest: +SKIP
    ((445, 64, 64, 3), ['1', '0'])
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import math
import mmap
import os
import struct
import tempfile
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from usmtl.data.prepare import print_warning
from usmtl.errors import ConfigError, ImageReadError, ManifestError, UsmtlError

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


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


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
    from usmtl.data.manifest import BOX_COLUMNS, _cell
    from usmtl.data.splits import load_split, rows_in_split

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
    from usmtl import __version__
    from usmtl.atomic import write_binary_atomic
    from usmtl.data.manifest import read_manifest, write_manifest
    from usmtl.data.prepare import require_usable
    from usmtl.data.roi import load_roi

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


def _entry(i: int, codec: str) -> str:
    return f"{CROPS}{i:06d}{EXTENSIONS[codec]}"


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


class Pack:
    """An open pack file (:func:`open_pack`): ``meta``, ``frame``, and crops decoded on
    demand from the mapped file. :meth:`crop` is thread-safe (``tf.data`` and data loaders
    call it from worker threads); a pack pickles by path (reopened in the new process).

    Attributes:
        path: the pack file.
        meta: ``pack.json`` (see the module docstring).
        frame: the manifest's rows (pandas, every column as text, as
            :func:`~usmtl.data.manifest.read_manifest` reads them).
        image_size: the crops' side in pixels.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(os.fspath(path))
        self._file = None
        self._map = None
        self._zip = None
        self._lock = threading.Lock()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- opening --------------------------------------------------------------------

    def _fail(self, what: str, received: str) -> ManifestError:
        return ManifestError(f"{self.path}: {what}. Received: {received}")

    def _open(self) -> None:
        path = self.path
        if not os.path.isfile(path):
            raise ManifestError(f"{path}: pack not found; build one with 'usmtl pack MANIFEST "
                                f"--size N --out {os.path.basename(path)}'. Received: {path}")
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            with open(path, "rb") as f:
                head = f.read(16)
            raise self._fail("not a usmtl pack: not a zip file, or a truncated one (rebuild "
                             "it with 'usmtl pack', or copy it again)",
                             f"a {os.path.getsize(path)}-byte file starting with {head!r} "
                             f"({exc})") from None
        names = self._zip.namelist()
        if META not in names:
            raise self._fail(f"a zip file but not a usmtl pack: it holds no {META}",
                             f"{len(names)} entries: {names[:5]}")
        try:
            meta = json.loads(self._zip.read(META))
            if not isinstance(meta, dict):
                raise ValueError(f"a JSON {type(meta).__name__}, not an object")
        except (ValueError, zipfile.BadZipFile, zlib.error, OSError) as exc:
            raise self._fail(f"{META} is not readable JSON", str(exc)) from None
        version = meta.get("format")
        if not isinstance(version, int):
            raise self._fail(f"{META} has no format version", repr(version))
        if version > FORMAT_VERSION:
            raise self._fail(f"written by a newer usmtl ({meta.get('usmtl_version', '?')}) in "
                             f"pack format {version}, and this usmtl reads format "
                             f"{FORMAT_VERSION} or older: upgrade usmtl, or rebuild the pack "
                             f"with this one", f"format {version}")
        missing = [k for k in CROP_KEYS + ("codec", "quality", "count", "channels")
                   if k not in meta]
        if missing:
            raise self._fail(f"{META} lacks {', '.join(missing)}", f"keys {sorted(meta)}")
        if MANIFEST not in names:
            raise self._fail(f"the pack holds no {MANIFEST}", f"{len(names)} entries: {names[:5]}")
        from usmtl.data.pack_meta import meta_problems

        problems = meta_problems(meta, sum(n.startswith(CROPS) for n in names))
        if problems:  # before anything is sized from these values
            raise ManifestError(f"{path}: {META} is damaged or hand-edited (rebuild the pack "
                                f"with 'usmtl pack')", problems)
        self.meta = meta
        self.image_size = int(meta["image_size"])
        try:
            self.frame = pd.read_csv(io.BytesIO(self._zip.read(MANIFEST)), dtype=str,
                                     keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
                zipfile.BadZipFile, zlib.error) as exc:
            raise self._fail(f"its {MANIFEST} is not a readable CSV", str(exc)) from None
        self.frame.columns = [str(c).strip() for c in self.frame.columns]
        crops = [n for n in names if n.startswith(CROPS)]
        count, channels = meta["count"], str(meta["channels"])
        expected = [_entry(i, meta["codec"]) for i in range(count)] \
            if meta["codec"] in EXTENSIONS and isinstance(count, int) else []
        if not (len(self.frame) == count == len(crops) == len(channels)) \
                or set(crops) != set(expected):
            raise self._fail("its parts disagree on the number of crops (a damaged or "
                             "hand-edited pack: rebuild it)",
                             f"{META} count {count!r}, {len(channels)} channel flags, "
                             f"{len(self.frame)} rows in {MANIFEST}, {len(crops)} crop "
                             f"entries")
        self._channels = [int(c) for c in channels]
        self._infos = [self._zip.getinfo(n) for n in expected]
        self._offsets = self._data_offsets()

    def _data_offsets(self) -> list[int] | None:
        """Where each stored crop's bytes start in the file, for reads from the map without
        a lock; None (read through the zip, under a lock) if any entry is compressed."""
        if any(info.compress_type != zipfile.ZIP_STORED for info in self._infos):
            return None
        self._file = open(self.path, "rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        offsets = []
        for info in self._infos:
            header = self._map[info.header_offset:info.header_offset + _LOCAL_HEADER.size]
            if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                raise self._fail(f"the zip header of {info.filename} is damaged (rebuild the "
                                 f"pack, or copy it again)", f"header bytes {header[:8]!r}")
            fields = _LOCAL_HEADER.unpack(header)
            start = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
            offsets.append(start)
        return offsets

    # -- reading ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._infos)

    def __repr__(self) -> str:
        quality = "lossless" if self.meta.get("quality") is None else f"q{self.meta['quality']}"
        return (f"Pack({self.path!r}, {len(self)} crops, {self.image_size} px, "
                f"{self.meta['codec']} {quality})")

    def __enter__(self) -> "Pack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def close(self) -> None:
        """Release the file; later reads raise."""
        for name in ("_map", "_file", "_zip"):
            handle = getattr(self, name, None)
            if handle is not None:
                try:
                    handle.close()
                except (OSError, ValueError, BufferError):
                    pass
            setattr(self, name, None)

    @property
    def lossless(self) -> bool:
        return self.meta.get("quality") is None

    def where(self, index: int) -> str:
        """How errors name row ``index``: ``busbra.csv line 7 (image=a.png)`` (the source
        manifest's line: the pack keeps its rows in order)."""
        source = (self.meta.get("source") or {}).get("name", MANIFEST)
        image = self.frame.at[index, "image"] if "image" in self.frame else "?"
        return f"{source} line {index + 2} (image={image})"

    def _raw(self, index: int) -> bytes:
        info = self._infos[index]
        if self._offsets is not None:
            if self._map is None:
                raise UsmtlError(f"{self.path}: the pack is closed. Received: crop {index}")
            start = self._offsets[index]
            return self._map[start:start + info.compress_size]
        with self._lock:
            if self._zip is None:
                raise UsmtlError(f"{self.path}: the pack is closed. Received: crop {index}")
            return self._zip.read(info)

    def crop(self, index: int) -> np.ndarray:
        """Crop ``index`` (manifest row order) as ``(size, size, 3)`` uint8 RGB.

        Raises:
            IndexError: ``index`` is out of range.
            ImageReadError: its bytes are damaged or do not decode, naming the entry and
                its manifest row.
        """
        index = int(index)
        if not 0 <= index < len(self._infos):
            raise IndexError(f"{self.path}: crop index out of range 0..{len(self) - 1}. "
                             f"Received: {index}")
        info = self._infos[index]
        where = f"{self.path}: {info.filename} ({self.where(index)})"
        try:
            data = self._raw(index)
        except (zipfile.BadZipFile, zlib.error, OSError, ValueError) as exc:
            raise ImageReadError(f"{where}: cannot read the crop: {exc}. Rebuild the pack, or "
                                 f"copy it again. Received: {info.compress_size} bytes "
                                 f"expected") from None
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise ImageReadError(f"{where}: the crop is damaged (truncated, or its bytes "
                                 f"changed after it was written: CRC-32 mismatch). Rebuild the "
                                 f"pack, or copy it again. Received: {len(data)} bytes of "
                                 f"{info.file_size}, CRC {zlib.crc32(data):08x}, expected "
                                 f"{info.CRC:08x}")
        image = decode_crop(data, self._channels[index], self.image_size)
        if image is None:
            raise ImageReadError(f"{where}: the crop does not decode as a "
                                 f"{self.image_size}x{self.image_size} {self.meta['codec']} "
                                 f"image (truncated or corrupt). Rebuild the pack. Received: "
                                 f"{len(data)} bytes starting with {data[:8]!r}")
        return image

    def crops(self, indices: Iterable[int] | None = None, workers: int | None = None,
              progress: bool = False) -> np.ndarray:
        """Crops ``indices`` (default all), decoded in a thread pool, as
        ``(n, size, size, 3)`` uint8 in that order.

        Raises:
            ImageReadError: the first crop that does not decode (see :meth:`crop`).
        """
        indices = list(range(len(self))) if indices is None else [int(i) for i in indices]
        size = self.image_size
        out = np.empty((len(indices), size, size, 3), np.uint8)
        workers = default_workers() if workers is None else max(1, int(workers))
        bar = _bar(len(indices), "reading crops", progress)

        def fill(k: int) -> None:
            out[k] = self.crop(indices[k])

        try:
            for _ in _ordered(fill, list(range(len(indices))), workers):
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return out

    def manifest(self):
        """The rows as a :class:`usmtl.data.manifest.Manifest` (labels, patient ids, boxes,
        and errors naming ``the.pack line N``); its image paths do not exist here: the crops
        come from the pack.

        Raises:
            ManifestError: a box column that does not parse (a hand-edited pack).
        """
        from usmtl.data.manifest import BOX_COLUMNS, Box, Manifest

        try:
            boxes = [Box(*(int(float(v)) for v in values))
                     for values in self.frame[list(BOX_COLUMNS)].itertuples(index=False)]
        except (KeyError, ValueError) as exc:
            raise self._fail(f"the box columns of its {MANIFEST} do not parse",
                             str(exc)) from None
        return Manifest(self.frame, self.path, boxes)

    def split(self) -> dict[str, str] | None:
        """The ``split`` column as ``{patient_id: split}``, or None without one
        (:func:`usmtl.data.splits.split_from_manifest`)."""
        from usmtl.data.splits import split_from_manifest

        return split_from_manifest(self.manifest())

    def settings(self) -> dict:
        """The crop settings the pack was built with: ``image_size``, ``roi_margin``,
        ``square_roi``, ``inpaint_marks``."""
        return {key: self.meta[key] for key in CROP_KEYS}

    def require_matches(self, image_size: int, roi_margin: float, square_roi: bool,
                        inpaint_marks: bool, where: str = "the config") -> None:
        """Check that the pack's crops are what a config asks for; its crops cannot be cut
        again (the images are not here).

        Args:
            image_size, roi_margin, square_roi, inpaint_marks: the config's ``data`` values.
            where: how the message names the config (``configs/busbra.yaml``).

        Raises:
            ConfigError: naming every key that differs, the pack's value and the config's,
                and how to fix it.

        Example:
            >>> pack.require_matches(128, 0.1, True, False, "busbra.yaml")  # doctest: +SKIP
            Traceback (most recent call last):
            ...
            usmtl.errors.ConfigError: ...data.image_size: the pack has 256, busbra.yaml 128...
        """
        wanted = {"image_size": int(image_size), "roi_margin": float(roi_margin),
                  "square_roi": bool(square_roi), "inpaint_marks": bool(inpaint_marks)}
        differ = []
        for key, value in wanted.items():
            packed = self.meta[key]
            same = math.isclose(float(packed), value, abs_tol=1e-9) if key == "roi_margin" \
                else packed == value
            if not same:
                differ.append((key, packed, value))
        if not differ:
            return
        keys = ", ".join(f"data.{k}: the pack has {p!r}, {where} {v!r}" for k, p, v in differ)
        sets = " ".join(f"--set data.{k}={_yaml(p)}" for k, p, v in differ)
        rebuild = (f"--size {wanted['image_size']}" if [k for k, _, _ in differ] == ["image_size"]
                   else "--config <that config>")
        raise ConfigError(
            f"{self.path} was cropped with other settings than {where} asks for, and its crops "
            f"cannot be cut again: {keys}. Rebuild the pack with 'usmtl pack MANIFEST "
            f"{rebuild} --out {os.path.basename(self.path)}', or run with {sets}. "
            f"Received: pack {self.settings()}, config {wanted}")

    def require_config(self, data, where: str = "the config") -> None:
        """:meth:`require_matches` with a config's ``data`` section
        (:class:`usmtl.config.DataConfig`)."""
        self.require_matches(data.image_size, data.roi_margin, data.square_roi,
                             data.inpaint_marks, where)


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def open_pack(path) -> Pack:
    """Open a pack written by :func:`write_pack`, checking its structure.

    Args:
        path: the pack file.

    Returns:
        A :class:`Pack`; close it (or use ``with``) to release the file.

    Raises:
        ManifestError: naming the file: not found, not a zip (or a truncated one), a zip
            without ``pack.json``, a pack of a newer format, or parts that disagree on the
            number of crops. A damaged crop is found when it is read (:meth:`Pack.crop`).

    Example:
        >>> with open_pack("busbra256.pack") as pack:  # doctest: +SKIP
        ...     pack.crop(0).shape
        (256, 256, 3)
    """
    return Pack(path)
