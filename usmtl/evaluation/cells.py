"""One rule for a number in a table or on the console: ``-`` (or ``not estimable (why)``)
where the value is missing or NaN, never a raw ``nan``.

Example:
    >>> from usmtl.evaluation.cells import cell
    >>> cell(0.12345), cell(float("nan")), cell(None, "+.3f"), cell(0.5, "+.3f")
    ('0.123', '-', '-', '+0.500')
    >>> cell(float("nan"), why="one class")
    'not estimable (one class)'
"""

from __future__ import annotations

import math


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
