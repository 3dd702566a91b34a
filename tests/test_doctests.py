"""The examples in the docstrings of the modules that need no model run, as written."""

import doctest
import importlib

import pytest

MODULES = ["usmtl.tasks", "usmtl.config", "usmtl.presets", "usmtl.evaluation.stats",
           "usmtl.evaluation.metrics", "usmtl.model.hinge", "usmtl.experiment"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
    assert result.attempted > 0, f"{name} has no runnable example"
