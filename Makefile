# The two commands of the README. Each creates .venv when missing and (re)installs the project
# when setup.py or a kernel changed, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-pure bench clean

$(STAMP): setup.py pyproject.toml $(wildcard ext/*.pyx)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/twin run

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q
	SDG_TWIN_PURE_PYTHON=1 $(VENV)/bin/python -m pytest -q -m kernels

clean:
	rm -rf build *.egg-info ext/*.c ext/*.so runs
