"""Box-level region of interest (RoI): the model's view of a lesion.

The paper feeds the CNN the box around the mass. ``usmtl`` widens the box by a context
margin on each side (the peritumoral region carries signal: shadowing, halo, margins) and,
by default, grows it to a square so that resizing keeps the lesion's shape: a
taller-than-wide mass stays taller than wide. Pixels outside the image are black.

Example:
    >>> import numpy as np
    >>> from usmtl.data.rows import Box
    >>> from usmtl.data.roi import crop_roi
    >>> crop_roi(np.zeros((100, 200, 3), np.uint8), Box(10, 20, 50, 40), margin=0.1,
    ...          square=True, size=64).shape
    (64, 64, 3)
"""

from __future__ import annotations

import numpy as np

from usmtl.data.rows import Box


def roi_window(box: Box, margin: float, square: bool) -> tuple[int, int, int, int]:
    """The crop window ``(x0, y0, x1, y1)`` for ``box``; it may extend past the image."""
    cx = (box.x_min + box.x_max) / 2.0
    cy = (box.y_min + box.y_max) / 2.0
    w = box.width * (1.0 + 2.0 * margin)
    h = box.height * (1.0 + 2.0 * margin)
    if square:
        w = h = max(w, h)
    # Round the size once, then the corner: rounding both edges apart could make a square
    # window one pixel off square.
    w, h = max(1, int(round(w))), max(1, int(round(h)))
    x0, y0 = int(round(cx - w / 2.0)), int(round(cy - h / 2.0))
    return x0, y0, x0 + w, y0 + h


def crop_window(image: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """Cut ``window`` out of ``image``, padding with zeros where it leaves the image."""
    x0, y0, x1, y1 = window
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def crop_roi(image: np.ndarray, box: Box, margin: float = 0.1, square: bool = True,
             size: int | None = 256) -> np.ndarray:
    """Crop the RoI of ``box`` with a context ``margin`` and resize it to ``size`` x ``size``
    (``size=None`` keeps the native resolution)."""
    crop = crop_window(image, roi_window(box, margin, square))
    if size is None:
        return crop
    import cv2

    interpolation = cv2.INTER_AREA if min(crop.shape[:2]) > size else cv2.INTER_LINEAR
    resized = cv2.resize(crop, (size, size), interpolation=interpolation)
    return resized.reshape((size, size) + image.shape[2:])


def load_roi(path: str, box: Box, margin: float, square: bool, size: int,
             inpaint: bool = False) -> np.ndarray:
    """Read an image file and return its RoI as ``(size, size, 3)`` uint8.

    Args:
        path: the image file (any format :func:`usmtl.data.io.read_image` reads).
        box: the lesion box, in the image's pixels.
        margin, square, size: as :func:`crop_roi`.
        inpaint: fill burned-in marks (calipers, text; :mod:`usmtl.data.marks`) first.
            Detection runs on the whole image, before cropping, so a mark cut by the
            crop's edge is still found whole (``data.inpaint_marks``).

    Returns:
        The RoI, ``(size, size, 3)`` uint8.

    Raises:
        ImageReadError: for any failure, reading, inpainting or cropping, naming ``path``.

    Example:
        >>> from usmtl.data.rows import Box
        >>> roi = load_roi("scan.png", Box(10, 20, 50, 40), 0.1, True, 64,
        ...                inpaint=True)  # doctest: +SKIP
        >>> roi.shape  # doctest: +SKIP
        (64, 64, 3)
    """
    from usmtl.data.io import read_image
    from usmtl.errors import ImageReadError

    image = read_image(path)
    try:
        if inpaint:
            from usmtl.data.marks import inpaint_marks

            image = inpaint_marks(image)
        return crop_roi(image, box, margin, square, size)
    except Exception as exc:
        what = "inpaint or crop" if inpaint else "crop"
        raise ImageReadError(f"{path}: cannot {what} the RoI {box} out of the "
                             f"{image.shape[1]}x{image.shape[0]} image "
                             f"({type(exc).__name__}: {exc})") from exc
