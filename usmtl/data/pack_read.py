"""Reading a packed crop file: :func:`open_pack` and the open :class:`Pack`.

Opening checks the structure (a zip holding ``pack.json``, ``manifest.csv`` and one crop
entry per row, :mod:`usmtl.data.pack_meta` for the header's values); crops are decoded on
demand from the mapped file. Reading needs numpy, pandas and OpenCV only, neither TensorFlow
nor Keras. The format is :mod:`usmtl.data.pack_format`, the writer :mod:`usmtl.data.pack_write`.

Example:
    >>> from usmtl.data.pack_read import open_pack
    >>> with open_pack("busbra256.pack") as pack:  # doctest: +SKIP
    ...     pack.crop(0).shape
    (256, 256, 3)
"""

from __future__ import annotations

import io
import json
import math
import mmap
import os
import threading
import zipfile
import zlib
from typing import Iterable

import numpy as np
import pandas as pd

from usmtl.data.pack_format import (_LOCAL_HEADER, CROP_KEYS, CROPS, EXTENSIONS, FORMAT_VERSION,
                                    MANIFEST, META, _bar, _entry, _ordered, decode_crop,
                                    default_workers)
from usmtl.data.pack_meta import meta_problems
from usmtl.data.rows import BOX_COLUMNS, Box, Manifest
from usmtl.data.splits import split_from_manifest
from usmtl.errors import ConfigError, ImageReadError, ManifestError, UsmtlError


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
