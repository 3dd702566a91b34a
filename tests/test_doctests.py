"""The examples in the docstrings of the modules that need no model run, as written."""

import doctest
import importlib

import pytest

MODULES = ["usmtl.atomic", "usmtl.tasks", "usmtl.config", "usmtl.presets", "usmtl.registry",
           "usmtl.evaluation.stats", "usmtl.evaluation.repeats", "usmtl.paper",
           "usmtl.evaluation.metrics", "usmtl.evaluation.calibration",
           "usmtl.evaluation.utility", "usmtl.evaluation.subgroups",
           "usmtl.evaluation.calibration_maps", "usmtl.model.hinge", "usmtl.model.multitask",
           "usmtl.experiment", "usmtl.data.pack_format", "usmtl.data.targets", "usmtl.backend",
           "usmtl.card_sections", "usmtl.evaluation.cells", "usmtl.console",
           "usmtl.training.epoch_line", "usmtl.evaluation.labels",
           "usmtl.evaluation.by_columns", "usmtl.evaluation.tables", "usmtl.explain.inputs",
           "usmtl.training.failsafe", "tools.house_report", "usmtl.labels", "usmtl.data.rows",
           "usmtl.data.importers", "usmtl.data.importers._registry",
           "usmtl.data.importers._common", "usmtl.data.folds", "usmtl.evaluation.ensemble",
           "usmtl.model.ensemble", "usmtl.evaluation.roc_plot",
           "usmtl.evaluation.paper_tables"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
    assert result.attempted > 0, f"{name} has no runnable example"


def test_reading_a_config_loads_no_tensorflow():
    """Config validation reads the backbone registry: it must stay free of Keras and TF, so
    that a config error is reported at once."""
    import subprocess
    import sys

    code = ("import sys; from usmtl.config import load_config; "
            "load_config('paper', ['model.backbone=efficientnet_b0']); "
            "bad = [m for m in ('keras', 'tensorflow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
