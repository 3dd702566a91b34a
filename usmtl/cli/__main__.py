"""``python -m usmtl.cli``: the ``usmtl`` command, where the console script is not on PATH."""

from usmtl.cli import main

main()
