"""The ``usmtl`` command line: a thin layer over plain Python functions.

Each command parses its arguments and calls one function a notebook could call too.
TensorFlow is imported only inside the commands that need it, so ``usmtl --help`` is instant.
Errors a user can act on (:class:`usmtl.errors.UsmtlError`) print without a traceback and
exit with status 2 (:mod:`usmtl.cli.errors`).

One module per command group, each listing its commands in ``COMMANDS``:

- :mod:`usmtl.cli.data`: demo-data, check, presets, import, pack;
- :mod:`usmtl.cli.train`: fit, experiment, tune, ablation;
- :mod:`usmtl.cli.evaluate`: predict, evaluate, calibrate, validate, report, compare;
- :mod:`usmtl.cli.explain`: explain, cam-profile;
- :mod:`usmtl.cli.export`: export, ensemble;
- :mod:`usmtl.cli.radiomics`: radiomics extract|fit|predict;
- :mod:`usmtl.cli.bench`: bench pipeline|train|predict.

The options several commands share are defined once in :mod:`usmtl.cli.options`. Nothing
below the command line imports this package.
"""

from __future__ import annotations

import os

import click

from usmtl.cli import bench, data, evaluate, explain, export, radiomics, train
from usmtl.cli.options import WholeSentenceGroup, console_options


@click.group(cls=WholeSentenceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="usmtl")
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's own logging (same as USMTL_LOG_LEVEL=info).")
@console_options
def main(verbose):
    """Multi-task CNN for breast ultrasound: malignancy and axillary lymph-node metastasis,
    tied by a hierarchical hinge (Li, Guo et al., Front. Physiol. 13:882648, 2022)."""
    if verbose:
        os.environ["USMTL_LOG_LEVEL"] = "info"


for _module in (data, train, evaluate, explain, export, radiomics, bench):
    for _command in _module.COMMANDS:
        main.add_command(_command)
del _module, _command
