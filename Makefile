# Two commands do everything on a fresh machine:
#   make demo   create .venv, install usmtl, write phantoms, train the quickstart
#   make test   install the test extras and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs

.PHONY: demo test test-fast install install-radiomics clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg setup.py
	$(MAKE) install-radiomics
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# PyRadiomics has no wheels for current Python: it builds from source only with NumPy
# already installed and without build isolation (it then calls itself 3.0.1); a fresh
# venv's setuptools 65 has no bdist_wheel, hence wheel.
install-radiomics: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade numpy versioneer wheel setuptools
	$(BIN)/python -m pip install --quiet --no-build-isolation "pyradiomics>=3.0"

demo: install
	$(BIN)/usmtl demo-data $(RUNS)/demo-data --patients 300
	rm -rf $(RUNS)/quickstart
	$(BIN)/usmtl fit --config configs/quickstart.yaml --manifest $(RUNS)/demo-data/manifest.csv --out $(RUNS)/quickstart
	$(BIN)/usmtl predict $(RUNS)/quickstart $(RUNS)/demo-data/manifest.csv --split test --out $(RUNS)/quickstart/test_predictions.csv

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(RUNS) *.egg-info .pytest_cache
