# Two commands do everything on a fresh machine:
#   make demo   create .venv, install usmtl, write phantoms, train the quickstart
#   make test   install the test extras and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs

.PHONY: demo test test-fast wheel-check install install-radiomics clean

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
	@echo
	@$(BIN)/python -m usmtl.evaluation.summary $(RUNS)/quickstart $(RUNS)/quickstart/test_predictions.csv

test: install
	$(BIN)/python -m pytest -q
	$(MAKE) wheel-check

# A user's install: a wheel (pip install ., not -e) in a fresh venv, used from another folder,
# with the shipped presets only.
WHEEL_CHECK := build/wheel-check
wheel-check:
	rm -rf $(WHEEL_CHECK) && mkdir -p $(WHEEL_CHECK)
	$(PYTHON) -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/python -m pip install --quiet --upgrade pip
	$(WHEEL_CHECK)/venv/bin/python -m pip install --quiet .
	cd $(WHEEL_CHECK) && venv/bin/usmtl presets \
	  && venv/bin/usmtl demo-data d --patients 60 \
	  && venv/bin/usmtl fit --config quickstart --manifest d/manifest.csv --out r --set train.epochs=2 \
	  && venv/bin/python -c "import usmtl, sys; assert 'site-packages' in usmtl.__file__, usmtl.__file__"
	@echo "wheel-check: passed"

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(RUNS) *.egg-info .pytest_cache build
