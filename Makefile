# graphopt — two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs, runs `graphopt optimize` on the bundled trained ResNet-20 and data
#   make test   creates .venv, installs, runs the whole test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.graphopt-installed
# The CPU torch wheel lies on this machine's disk; pip also finds it through its own config.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
EXTRAS ?= dev,bench,ray
PYTEST_ARGS ?=
JOBS ?= 2

.PHONY: install test demo lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/graphopt optimize graphopt/data/demo_resnet.onnx --data cifar10-demo --val-fraction 0.25 \
		--cost-window 1.0 --score-steps 20 --distill-steps 30 --final-k 2 --budget 270s -o out/demo
	@echo "open out/demo/report.html for the Pareto plot, the candidates and the rewritten segments"

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/roundtrip.py
	$(PY) benchmarks/export.py

clean:
	rm -rf $(VENV) out graphopt-runs .pytest_cache
