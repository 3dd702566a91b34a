"""How the evaluation's plots are written: one place for layout, resolution and closing.

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from usmtl.evaluation.figures import save_figure
    >>> fig, ax = plt.subplots()
    >>> save_figure(fig, "roc.png")  # doctest: +SKIP
    'roc.png'
"""

from __future__ import annotations

DPI = 120


def save_figure(fig, path: str) -> str:
    """Lay ``fig`` out tightly, write it to ``path`` at :data:`DPI` and close it (pyplot
    keeps every open figure alive); returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
