"""One rule for a number in a table or on the console: ``-`` (or ``not estimable (why)``)
where the value is missing or NaN, never a raw ``nan``; one for a value with its confidence
interval (:func:`format_interval`); one for a name in a file name (:func:`safe_name`).

Example:
    >>> from usmtl.evaluation.cells import cell
    >>> cell(0.12345), cell(float("nan")), cell(None, "+.3f"), cell(0.5, "+.3f")
    ('0.123', '-', '-', '+0.500')
    >>> cell(float("nan"), why="one class")
    'not estimable (one class)'
    >>> format_interval({"value": 0.812, "ci_low": 0.786, "ci_high": 0.838})
    '0.812 (0.786-0.838)'
    >>> safe_name("scanner model")
    'scanner_model'
"""

from __future__ import annotations

import math
import re


def cell(value, spec: str = ".3f", why: str | None = None) -> str:
    """``value`` formatted with ``spec``; ``-`` (or ``not estimable (why)``) when it is
    None, not a number, or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number):
        return f"not estimable ({why})" if why else "-"
    return format(number, spec)


def safe_name(text) -> str:
    """``text`` usable in a file name: other characters than letters, digits, ``.``, ``_``
    and ``-`` become ``_`` (a ``--by`` column "scanner model" -> "scanner_model")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "column"


def format_interval(v: dict | None) -> str:
    """``{"value", "ci_low", "ci_high"}`` as ``0.812 (0.786-0.838)``, or ``-0.711 (-1.045 to
    -0.426)`` when a bound is negative; ``-`` for a missing value. Every report's cells."""
    if v is None or v.get("value") is None or math.isnan(v["value"]):
        return "-"
    low, high = v.get("ci_low", math.nan), v.get("ci_high", math.nan)
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{v['value']:.3f}"
    sep = " to " if min(low, high, v["value"]) < 0 else "-"
    return f"{v['value']:.3f} ({low:.3f}{sep}{high:.3f})"
