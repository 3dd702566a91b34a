"""A pack's ``pack.json`` checked against the zip that holds it, before anything is allocated.

A pack (:mod:`usmtl.data.pack`) may come from someone else: its ``pack.json`` is input like a
manifest. Every value is checked for its type and range, and ``count`` and ``channels``
against the crop entries the zip actually holds, so that a crafted header (``count: 10**9``
in a 120 KB file, a text where a number belongs) is a clear error naming the key, never an
``int()`` traceback or a list of a billion names. Ground of the data layer: it imports only
the errors.

Example:
    >>> from usmtl.data.pack_meta import meta_problems
    >>> meta_problems({"image_size": 32, "roi_margin": 0.1, "square_roi": True,
    ...                "inpaint_marks": False, "codec": "png", "quality": None, "count": 10**9,
    ...                "channels": "1111"}, crop_entries=4)
    ["count must be the number of crop entries in the zip (4): the pack's parts disagree on the number of crops. Received: 1000000000"]
"""

from __future__ import annotations

import math

MAX_IMAGE_SIZE = 4096  # usmtl pack --size accepts 8..4096
CODECS = ("png", "webp", "jpeg")


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def meta_problems(meta: dict, crop_entries: int) -> list[str]:
    """What is wrong with ``meta`` (``pack.json``, keys known present) for a zip holding
    ``crop_entries`` crop files; empty when nothing is.

    Args:
        meta: the parsed ``pack.json``.
        crop_entries: the number of entries under ``crops/`` in the zip.

    Returns:
        One line per bad key, ending ``Received: ...``.
    """
    problems = []

    def bad(key, want, received=None):
        shown = meta.get(key) if received is None else received
        problems.append(f"{key} must be {want}. Received: {shown!r}"
                        if received is None else f"{key} must be {want}. Received: {shown}")

    size = meta.get("image_size")
    if not (_integer(size) and 8 <= size <= MAX_IMAGE_SIZE):
        bad("image_size", f"a whole number of pixels in 8..{MAX_IMAGE_SIZE}")
    margin = meta.get("roi_margin")
    if not (isinstance(margin, (int, float)) and not isinstance(margin, bool)
            and math.isfinite(margin) and margin >= 0):
        bad("roi_margin", "a finite number >= 0")
    for key in ("square_roi", "inpaint_marks"):
        if not isinstance(meta.get(key), bool):
            bad(key, "true or false")
    if meta.get("codec") not in CODECS:
        bad("codec", f"one of {CODECS}")
    quality = meta.get("quality")
    if quality is not None and not (_integer(quality) and 1 <= quality <= 100):
        bad("quality", "null (lossless) or a whole number in 1..100")
    count = meta.get("count")
    if not (_integer(count) and count == crop_entries):
        bad("count", f"the number of crop entries in the zip ({crop_entries}): the pack's parts "
                     f"disagree on the number of crops")
    channels = meta.get("channels")
    if not isinstance(channels, str):
        bad("channels", f"a text of one '1' or '3' per crop ({crop_entries})")
    elif len(channels) != crop_entries or set(channels) - {"1", "3"}:
        bad("channels", f"one '1' or '3' per crop ({crop_entries})",
            f"a text of {len(channels)} characters" if len(channels) != crop_entries
            else repr(channels[:20]))
    return problems
