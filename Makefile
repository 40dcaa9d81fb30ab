# The two commands of the README. Each creates .venv when missing and (re)installs the project
# when setup.py or a kernel changed, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BYTECODE := $(VENV)/.compiled
SOURCES := $(shell find twin components ext -name '*.py')

.PHONY: demo test clean

$(STAMP): setup.py pyproject.toml $(wildcard ext/*.pyx ext/*.pxd)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# pip byte-compiles what it installs, but not an editable project. Compiled here, our modules
# load from __pycache__ also where processes may not write bytecode (PYTHONDONTWRITEBYTECODE,
# as in many containers), instead of being compiled again by every run and sweep worker.
$(BYTECODE): $(STAMP) $(SOURCES)
	$(VENV)/bin/python -m compileall -q twin components ext
	touch $(BYTECODE)

demo: $(BYTECODE)
	$(VENV)/bin/twin run

test: $(BYTECODE)
	$(VENV)/bin/python -m pytest -q
	SDG_TWIN_PURE_PYTHON=1 $(VENV)/bin/python -m pytest -q -m kernels

clean:
	rm -rf build *.egg-info ext/*.c ext/*.so runs
