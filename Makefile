# kdkeras: every target builds and uses the project virtualenv on its own,
# so a fresh clone needs nothing but `make test` or `make all`.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kdkeras-installed
# medmnist's wheel hard-requires torch; kdkeras only reads its INFO table and npz
# files, so it is installed outside the resolver (see README, "Installing").
MEDMNIST ?= medmnist==3.0.2

.PHONY: install test clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps '$(MEDMNIST)'
	touch $@

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
