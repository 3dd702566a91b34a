"""How a label cell is read: a 0/1 label or a count, with the spellings that mean unknown.

Ground floor: the manifest parser (:mod:`usmtl.data.manifest`), the importers and the task
labels (:mod:`usmtl.tasks`) read cells with these, so that one spelling means one thing
everywhere. It imports nothing of usmtl.

Example:
    >>> from usmtl.labels import parse_binary, parse_count
    >>> parse_binary("1"), parse_binary("no"), parse_count("3")
    (1.0, 0.0, 3.0)
    >>> parse_binary("NA")
    nan
"""

from __future__ import annotations

import math


def parse_binary(value: str) -> float:
    """'' -> NaN, '0'/'1' (also '0.0', '1.0', 'true', 'false') -> 0.0/1.0; else ValueError."""
    text = str(value).strip().lower()
    if text in ("", "nan", "na", "none"):
        return math.nan
    if text in ("true", "yes"):
        return 1.0
    if text in ("false", "no"):
        return 0.0
    number = float(text)
    if number not in (0.0, 1.0):
        raise ValueError(text)
    return number


def parse_count(value: str) -> float:
    """'' -> NaN, a non-negative whole number -> float; else ValueError."""
    text = str(value).strip().lower()
    if text in ("", "nan", "na", "none"):
        return math.nan
    number = float(text)
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise ValueError(text)
    return number
