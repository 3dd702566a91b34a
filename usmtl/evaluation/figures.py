"""How usmtl's plots are written: one place for layout, formats, resolution and closing.

Figures are written at :data:`DEFAULT_DPI` (300, journal print resolution) as PNG, which
the Markdown reports embed, plus a vector PDF by default. ``--format png|pdf|svg`` (repeat
it for several) and ``--dpi`` on the commands that draw (``usmtl evaluate``, ``report``,
``validate``, ``calibrate``, ``explain``) set ``USMTL_FIGURE_FORMATS`` and
``USMTL_FIGURE_DPI``, which :func:`figure_settings` reads; the PNG is always kept, since the
reports link it.

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from usmtl.evaluation.figures import save_figure
    >>> fig, ax = plt.subplots()
    >>> save_figure(fig, "roc.png")  # doctest: +SKIP
    'roc.png'
    >>> figure_settings({})
    (('png', 'pdf'), 300)
"""

from __future__ import annotations

import os

from usmtl.errors import UsmtlError

FORMATS = ("png", "pdf", "svg")
DEFAULT_FORMATS = ("png", "pdf")
DEFAULT_DPI = 300
FORMATS_ENV = "USMTL_FIGURE_FORMATS"
DPI_ENV = "USMTL_FIGURE_DPI"
# Kept for readers of the old constant; figure_settings() is the one source.
DPI = DEFAULT_DPI


def figure_settings(environ=None) -> tuple[tuple[str, ...], int]:
    """``(formats, dpi)`` of the figures to write: from ``USMTL_FIGURE_FORMATS``
    (comma-separated) and ``USMTL_FIGURE_DPI``, else PNG plus PDF at 300 dpi. PNG is
    always among the formats.

    Raises:
        UsmtlError: an unknown format or a dpi outside 50..1200.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(FORMATS_ENV, "")
    formats = tuple(f.strip().lower().lstrip(".") for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsmtlError(f"Figure formats must be among {list(FORMATS)}. Received: {text}")
    formats = tuple(dict.fromkeys(("png",) + formats)) if formats else DEFAULT_FORMATS
    try:
        dpi = int(environ.get(DPI_ENV, DEFAULT_DPI))
    except ValueError:
        dpi = -1
    if not 50 <= dpi <= 1200:
        raise UsmtlError(f"Figure dpi must be a whole number from 50 to 1200. "
                         f"Received: {environ.get(DPI_ENV)}")
    return formats, dpi


# No creation date in PDF and SVG metadata, so the same figure is the same file.
_NO_DATE = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}


def save_figure(fig, path: str) -> str:
    """Lay ``fig`` out tightly, write it to ``path`` (a ``.png``) and to each other format
    of :func:`figure_settings` beside it (``roc.pdf``...), then close it (pyplot keeps every
    open figure alive); returns ``path``."""
    import matplotlib.pyplot as plt

    formats, dpi = figure_settings()
    stem = os.path.splitext(path)[0]
    try:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        for extension in formats:
            fig.savefig(f"{stem}.{extension}", dpi=dpi, bbox_inches="tight",
                        metadata=_NO_DATE.get(extension))
    finally:
        plt.close(fig)
    return f"{stem}.png"
