# Two commands do everything on a fresh machine:
#   make demo   create .venv, install usmtl, write phantoms, train the quickstart
#   make test   install the test extras and run the test suite
# and two for a lent GPU machine (docs/gpu-jax.md):
#   make gpu-bundle   here: the wheels and the BUS-BRA pack the GPU machine lacks
#   make gpu-check    there: install them, benchmark, train the paper's config
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs

.PHONY: demo test test-fast wheel-check editable-check install install-radiomics clean gpu-bundle gpu-check

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

# Two workers, a test file each at a time (--dist loadfile keeps a file's module fixtures in
# one process): the suite takes about half the time on a 2-core machine.
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
	$(MAKE) wheel-check
	$(MAKE) editable-check

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
	  && venv/bin/python -c "import usmtl, sys; assert 'site-packages' in usmtl.__file__, usmtl.__file__" \
	  && venv/bin/python -c "from usmtl.paper import paper_rows; assert len(paper_rows()) == 96"
	@echo "wheel-check: passed"

# The trap pyproject.toml closes: Python 3.11's own pip (23.2) with `wheel` installed, and no
# pyproject.toml, runs `setup.py develop` for `pip install -e .` and loses the configs/ ->
# usmtl._presets mapping. An editable install by that pip must still find the presets.
EDITABLE_CHECK := build/editable-check
editable-check:
	rm -rf $(EDITABLE_CHECK) && mkdir -p $(EDITABLE_CHECK)
	$(PYTHON) -m venv $(EDITABLE_CHECK)/venv
	$(EDITABLE_CHECK)/venv/bin/python -m pip install --quiet wheel
	$(EDITABLE_CHECK)/venv/bin/python -m pip install --quiet --no-deps -e .
	cd $(EDITABLE_CHECK) && venv/bin/python -c "from importlib import resources; \
	  import usmtl; assert (resources.files('usmtl._presets') / 'paper.yaml').is_file(), \
	  'presets lost by the editable install'"
	@echo "editable-check: passed"

# Run where ../shared is, with the project's environment (make gpu-bundle VENV=path/to/.venv);
# it installs nothing and uses this checkout's usmtl.
gpu-bundle:
	PYTHONPATH=$(CURDIR) $(BIN)/python tools/gpu_bundle.py --out gpu-bundle

# Run on the GPU machine (its python3 has JAX, no Keras): one call, results in $(OUT).
# GPU_CHECK_ARGS: more options of tools/gpu_check.py (sizes, --variants, --max-epochs).
GPU_PYTHON ?= python3
OUT ?= build/gpu-check
GPU_BUDGET ?= 440
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) tools/gpu_check.py --bundle gpu-bundle --out $(OUT) \
	  --budget $(GPU_BUDGET) $(GPU_CHECK_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(RUNS) *.egg-info .pytest_cache build
