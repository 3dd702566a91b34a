"""Image readers: PNG, JPEG, BMP (8- or 16-bit; grey, RGB or RGBA) and single-frame DICOM.

Every reader returns an ``(H, W, 3)`` uint8 RGB array, the one form the rest of the package
uses. Grey images are repeated over three channels because ImageNet backbones expect three.
"""

from __future__ import annotations

import os

import numpy as np

from usmtl.errors import ImageReadError

DICOM_SUFFIXES = (".dcm", ".dicom")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to uint8.

    8-bit input is returned as is. Wider input (16-bit PNG, DICOM) is stretched linearly
    between its own minimum and maximum, because such files rarely use their full range
    (12-bit data in 16-bit containers is common) and a fixed divisor would leave them dark.
    """
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float64)
    finite = np.isfinite(array)
    if not finite.any():
        return np.zeros(array.shape, np.uint8)
    lo, hi = float(array[finite].min()), float(array[finite].max())
    if hi <= lo:
        return np.zeros(array.shape, np.uint8)
    scaled = (np.where(finite, array, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb(array: np.ndarray, path: str) -> np.ndarray:
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise ImageReadError(
        f"{path}: expected a grey, RGB or RGBA image. Received: array of shape {array.shape}"
    )


def _read_dicom(path: str) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types; the user needs the file name
        raise ImageReadError(f"{path}: cannot read DICOM pixel data ({exc})") from exc
    if pixels.size == 0:
        raise ImageReadError(f"{path}: the DICOM pixel data is empty. Received: shape {pixels.shape}")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(
            f"{path}: only single-frame DICOM is supported. Received: {frames} frames"
        )
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("MONOCHROME"):
        pixels = apply_voi_lut(pixels, ds)
        pixels = to_uint8(pixels)
        if photometric == "MONOCHROME1":  # MONOCHROME1 shows low values as white
            pixels = 255 - pixels
    else:
        pixels = to_uint8(pixels)  # RGB/YBR already converted to RGB by pydicom
    return _to_rgb(pixels, path)


def read_image(path: str) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array.

    Every failure (missing, empty, truncated or undecodable file, a DICOM without pixel
    data, any error of the decoders) is an :class:`ImageReadError` naming ``path``.

    Example:
        >>> from usmtl.data.io import read_image
        >>> image = read_image("case_001.png")  # doctest: +SKIP
        >>> image.shape, image.dtype  # doctest: +SKIP
        ((480, 640, 3), dtype('uint8'))
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: file not found")
    try:
        return _read_image(path)
    except ImageReadError:
        raise
    except Exception as exc:  # a decoder's own error (cv2, pydicom, numpy): name the file
        raise ImageReadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def _read_image(path: str) -> np.ndarray:
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: cannot decode image (the file is empty: 0 bytes)")
    if path.lower().endswith(DICOM_SUFFIXES):
        return _read_dicom(path)
    from usmtl.data.integrity import truncation

    problem = truncation(path)  # OpenCV decodes a cut JPEG, greying the rows it lacks
    if problem:
        raise ImageReadError(f"{path}: cannot decode image ({problem}; copy it again). "
                             f"Received: {os.path.getsize(path)} bytes")
    import cv2

    array = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if array is None:
        # Files without a known suffix may still be DICOM.
        try:
            return _read_dicom(path)
        except ImageReadError:
            raise ImageReadError(f"{path}: cannot decode image (not PNG/JPEG/BMP/DICOM?)") from None
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    return _to_rgb(to_uint8(array), path)


def read_mask(path: str) -> np.ndarray:
    """Read a lesion mask as an ``(H, W)`` bool array (any non-zero pixel is lesion)."""
    image = read_image(path)
    return image.max(axis=2) > 0


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of an image file."""
    image = read_image(path)
    return int(image.shape[0]), int(image.shape[1])
