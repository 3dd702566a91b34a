"""The RoI crops of manifest rows, read the same way by every backend: one door.

A :class:`Crops` is a list of ``(size, size, 3)`` uint8 RoI crops that reads each crop on
demand: from the image files and boxes of a manifest (:func:`usmtl.data.roi.load_roi`, the
crop training, prediction and export parity all use), or from a packed crop file
(``usmtl pack``, :mod:`usmtl.data.pack`), which holds them ready-made. The TensorFlow
pipeline (:mod:`usmtl.data.pipeline`) reads it inside ``tf.data`` workers; the JAX path
(:mod:`usmtl.training.jax_loop`) reads every crop once into one NumPy array with
:meth:`Crops.load`. Neither TensorFlow nor Keras is imported here.

A crop that cannot be read is never a crash or a hang: the reader's error becomes one
:class:`ImageDecodeError` naming the file and its manifest line. Inside ``tf.data`` it
reaches Python again only as the text of an ``OpError``, so the failures are also recorded
here and :func:`decode_failure` finds them again.

Example:
    >>> from usmtl.config import DataConfig
    >>> from usmtl.data.crops import Crops
    >>> crops = Crops.from_files(["a.png"], [box], DataConfig(image_size=64))  # doctest: +SKIP
    >>> crops.load().shape  # doctest: +SKIP
    (1, 64, 64, 3)
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from usmtl.errors import ImageReadError


class ImageDecodeError(ImageReadError):
    """A crop could not be read; the message names the file and its manifest line."""


# The failures of the readers, newest last (a tf.data worker's exception reaches Python
# again only as the text of an OpError).
_FAILURES: list[str] = []
_FAILURES_GUARD = threading.Lock()
DECODE_MARKER = "usmtl could not read an image: "


def _record_failure(message: str) -> None:
    with _FAILURES_GUARD:
        _FAILURES.append(message)
        del _FAILURES[:-100]


def decode_failure(error: BaseException | None = None, clear: bool = True) -> str | None:
    """The reader failure behind ``error`` (an exception raised while crops were read):
    the file, its manifest line and the reader's error, or None when it is no such
    failure. Without ``error``: the last failure recorded. ``clear`` forgets the failures
    recorded so far."""
    with _FAILURES_GUARD:
        last = _FAILURES[-1] if _FAILURES else None
        if clear:
            _FAILURES.clear()
    if error is None:
        return last
    text = str(getattr(error, "message", None) or error)
    if DECODE_MARKER in text:
        found = text.split(DECODE_MARKER, 1)[1].split("\n", 1)[0].strip()
        return found or last
    # TensorFlow's OpError carries the worker's message in its text (no import needed).
    from_tf = type(error).__module__.startswith("tensorflow")
    return last if from_tf and last and last in text else None


class Crops:
    """``count`` RoI crops of ``size`` pixels, read one at a time by ``read(i)``.

    Args:
        read: ``read(i) -> (size, size, 3) uint8``; any exception it raises becomes an
            :class:`ImageDecodeError` naming ``names[i]``.
        count: how many crops.
        size: their side in pixels.
        names: how errors name each crop (``manifest.csv line 7 (image=a.png)``).
    """

    def __init__(self, read: Callable[[int], np.ndarray], count: int, size: int,
                 names: Sequence[str]):
        self._read, self.count, self.size, self.names = read, int(count), int(size), list(names)

    def __len__(self) -> int:
        return self.count

    @classmethod
    def from_files(cls, paths, boxes, data, where: Sequence[str] | None = None) -> "Crops":
        """Crops cut from image files and their boxes as ``data`` (a
        :class:`usmtl.config.DataConfig`) says: size, margin, squaring, inpainting."""
        from usmtl.data.roi import load_roi

        paths, boxes = [str(p) for p in paths], list(boxes)
        if len(paths) != len(boxes):
            raise ValueError(f"paths and boxes differ in length. Received: {len(paths)} and "
                             f"{len(boxes)}")

        def read(i):
            return load_roi(paths[i], boxes[i], data.roi_margin, data.square_roi,
                            data.image_size, data.inpaint_marks)

        names = paths if where is None else [str(w) for w in where]
        crops = cls(read, len(paths), data.image_size, names)
        crops._paths = paths
        return crops

    @classmethod
    def from_manifest(cls, manifest, rows, data) -> "Crops":
        """The crops of ``rows`` (indices) of a manifest: from its packed file when it
        is one (``manifest.pack``), else from its image files."""
        rows = np.asarray(rows, dtype=int)
        where = [manifest.where(int(i)) for i in rows]
        pack = getattr(manifest, "pack", None)
        if pack is not None:
            pack.require_matches(data.image_size, data.roi_margin, data.square_roi,
                                 data.inpaint_marks, where="the config")
            packed = manifest.pack_rows[rows]
            return cls(lambda i: pack.crop(int(packed[i])), len(rows), data.image_size, where)
        paths, boxes = manifest.image_paths(), manifest.boxes()
        return cls.from_files([paths[i] for i in rows], [boxes[i] for i in rows], data, where)

    def read(self, i: int) -> np.ndarray:
        """Crop ``i``, ``(size, size, 3)`` uint8; :class:`ImageDecodeError` naming it when it
        cannot be read (and recorded for :func:`decode_failure`)."""
        try:
            crop = np.asarray(self._read(int(i)))
            if crop.shape != (self.size, self.size, 3) or crop.dtype != np.uint8:
                raise ValueError(f"the crop is {crop.dtype} {crop.shape}, not uint8 "
                                 f"({self.size}, {self.size}, 3)")
            return crop
        except Exception as exc:  # noqa: BLE001 (never let a reader's error escape as is)
            name, path = self.names[i], getattr(self, "_paths", self.names)[i]
            text = str(exc)
            named = text if (str(path) in text or name in text) else f"{path}: {text}"
            message = f"{name}: {named}" if name != str(path) else named
            _record_failure(message)
            raise ImageDecodeError(DECODE_MARKER + message) from None

    def batches(self, batch_size: int, workers: int | None = None):
        """Yield the crops in order, ``batch_size`` at a time, as uint8 arrays."""
        for start in range(0, self.count, batch_size):
            rows = range(start, min(start + batch_size, self.count))
            yield self._subset(rows).load(workers)

    def flipped(self) -> "Crops":
        """The same crops mirrored left to right (test-time augmentation)."""
        view = Crops(lambda i: np.ascontiguousarray(self._read(i)[:, ::-1]), self.count,
                     self.size, self.names)
        if hasattr(self, "_paths"):
            view._paths = self._paths
        return view

    def _subset(self, rows) -> "Crops":
        rows = list(rows)
        sub = Crops(lambda i: self._read(rows[i]), len(rows), self.size,
                    [self.names[i] for i in rows])
        if hasattr(self, "_paths"):
            sub._paths = [self._paths[i] for i in rows]
        return sub

    def load(self, workers: int | None = None, progress: bool = False,
             desc: str = "crops") -> np.ndarray:
        """Every crop in one ``(count, size, size, 3)`` uint8 array, read by a pool of
        ``workers`` threads (OpenCV and zlib release the GIL; default: the CPU count,
        at most 16).

        Raises:
            UsmtlError: the first crop that cannot be read, named (as :meth:`read`),
                without the ``DECODE_MARKER`` prefix.
        """
        out = np.empty((self.count, self.size, self.size, 3), np.uint8)

        def one(i):
            out[i] = self.read(i)

        workers = workers or min(16, os.cpu_count() or 1)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=self.count, desc=desc, unit="img", leave=False)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(one, range(self.count)):
                    if bar is not None:
                        bar.update()
        except ImageDecodeError as exc:
            raise ImageDecodeError(str(exc).replace(DECODE_MARKER, "", 1)) from None
        finally:
            if bar is not None:
                bar.close()
        return out
