"""Is an image file whole? A check of its container before it is decoded.

OpenCV decodes a truncated JPEG without an error: it fills the missing rows with grey 128 and
returns an image, so a half-copied file would train as a grey crop. Each format's container
says where it ends, and :func:`truncation` compares that with the file, reading only its
first and last bytes:

- JPEG: ends with the EOI marker ``FF D9`` (trailing padding after it is tolerated);
- PNG: ends with its ``IEND`` chunk;
- BMP: the header's file size, and for uncompressed pixels the rows it declares, fit in
  the file;
- WebP: the RIFF header's size fits in the file.

Other formats (TIFF, DICOM) are left to their decoders, which refuse truncated files.

Example:
    >>> import os, tempfile
    >>> from usmtl.data.integrity import truncation
    >>> path = os.path.join(tempfile.mkdtemp(), "cut.jpg")
    >>> _ = open(path, "wb").write(bytes([0xFF, 0xD8, 0xFF, 0xE0]) + bytes(100))
    >>> truncation(path)
    'the JPEG data stops before its end marker (FF D9): the file is truncated'
"""

from __future__ import annotations

import os
import struct

_TAIL = 4096  # bytes read from the end: room for padding after a JPEG's end marker


def truncation(path: str) -> str | None:
    """Why ``path`` is not a whole image file of its format, or None when it is (or when its
    format is none of those above).

    Raises:
        OSError: the file cannot be read.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
        f.seek(max(0, size - _TAIL))
        tail = f.read()
    if head[:2] == b"\xff\xd8":
        if b"\xff\xd9" not in tail:
            return "the JPEG data stops before its end marker (FF D9): the file is truncated"
    elif head[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in tail[-64:]:
            return "the PNG data stops before its IEND chunk: the file is truncated"
    elif head[:2] == b"BM" and len(head) >= 34:
        return _bmp(head, size)
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        declared = struct.unpack("<I", head[4:8])[0] + 8
        if size < declared:
            return (f"the WebP header declares {declared} bytes and the file has {size}: "
                    f"the file is truncated")
    return None


def _bmp(head: bytes, size: int) -> str | None:
    declared, = struct.unpack("<I", head[2:6])
    offset, = struct.unpack("<I", head[10:14])
    width, height = struct.unpack("<ii", head[18:26])
    bits, = struct.unpack("<H", head[28:30])
    compression, = struct.unpack("<I", head[30:34])
    needed = declared
    if compression in (0, 3) and width > 0 and bits:  # uncompressed rows, 4-byte aligned
        needed = max(needed, offset + ((width * bits + 31) // 32) * 4 * abs(height))
    if size < needed:
        return (f"the BMP header declares {needed} bytes and the file has {size}: the file "
                f"is truncated")
    return None
