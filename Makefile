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

.PHONY: install test demo lint lint-imports bench clean bench-optimize-trained bench-latency bench-scale-out bench-autogo-nb201 bench-psc-nb201 bench-export bench-export-int8 bench-eval bench-eval-executor-overhead bench-reliability bench-npu-coverage bench-roundtrip bench-supernet bench-autogo-mining bench-autogo-mutation-zoo bench-synflow-nb201 bench-estimators-nb201 bench-tfmas-design bench-ponas-mutants bench-autogo-cifar10 bench-autogo-cifar10-window1 bench-autogo-cifar10-mobilenetv2 bench-autogo-cifar10-inherit-trained bench-vision-zoo

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
		--cost-window 1.0 --score-steps 20 --distill-steps 60 --final-k 2 --budget 270s -o out/demo
	@echo "open out/demo/report.html for the Pareto plot, the candidates and the rewritten segments"

lint: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests/test_import_layers.py

lint-imports: install
	$(PY) -m pytest -q tests/test_import_layers.py

# One command per results file (benchmarks/_results.py registers each file's command and measured modules;
# tests/benchmarks/test_benchmark_results.py fails when a file is stale). `make bench` re-runs the ones that take under
# about an hour on 2 cores; the others are listed in BENCH_LONG.
BENCH_SHORT := bench-eval bench-eval-executor-overhead bench-autogo-mining bench-autogo-mutation-zoo \
	bench-reliability bench-roundtrip bench-synflow-nb201 bench-autogo-nb201 bench-psc-nb201 bench-export \
	bench-npu-coverage bench-supernet bench-vision-zoo
BENCH_LONG := bench-export-int8 bench-estimators-nb201 bench-tfmas-design bench-ponas-mutants \
	bench-autogo-cifar10 bench-autogo-cifar10-window1 bench-autogo-cifar10-mobilenetv2 \
	bench-autogo-cifar10-inherit-trained bench-optimize-trained bench-latency bench-scale-out

bench: $(BENCH_SHORT)

bench-autogo-nb201: install
	$(PY) benchmarks/autogo_nb201.py

bench-psc-nb201: install
	$(PY) benchmarks/psc_nb201.py

bench-export: install
	$(PY) benchmarks/export.py

bench-export-int8: install
	$(PY) benchmarks/export.py --int8

bench-eval: install
	$(PY) benchmarks/eval.py

bench-eval-executor-overhead: install
	$(PY) benchmarks/eval_executor_overhead.py

bench-reliability: install
	$(PY) benchmarks/reliability.py

bench-npu-coverage: install
	$(PY) benchmarks/npu_coverage.py

bench-vision-zoo: install
	$(PY) benchmarks/vision_zoo.py

bench-roundtrip: install
	$(PY) benchmarks/roundtrip.py

bench-supernet: install
	$(PY) benchmarks/supernet.py

bench-autogo-mining: install
	$(PY) benchmarks/autogo_mining.py

bench-autogo-mutation-zoo: install
	$(PY) benchmarks/autogo_mutation_zoo.py

bench-synflow-nb201: install
	$(PY) benchmarks/synflow_nb201.py

bench-estimators-nb201: install
	$(PY) benchmarks/estimators_nb201.py --n-archs 1000 --proxy-jobs 2 --reinit-check 200 --ponas-runs 10 --tse 100 --tfmas 32

bench-tfmas-design: install
	$(PY) benchmarks/tfmas_design.py

bench-ponas-mutants: install
	$(PY) benchmarks/ponas_mutants.py

bench-autogo-cifar10: install
	$(PY) benchmarks/autogo_cifar10.py --models resnet20 --budget 900 --iterations 20 --train-size 10000 --epochs 10 --seeds 6 --final-k 2 --inherit seed --score-steps 40 --proxy-check

bench-autogo-cifar10-window1: install
	$(PY) benchmarks/autogo_cifar10.py --models resnet20 --budget 900 --iterations 20 --train-size 10000 --epochs 10 --seeds 3 --final-k 1 --inherit seed --score-steps 40 --cost-window 0,1.0 --out benchmarks/results/autogo_cifar10_window1.json

bench-autogo-cifar10-mobilenetv2: install
	$(PY) benchmarks/autogo_cifar10.py --models mobilenetv2 --budget 2400 --iterations 20 --train-size 10000 --epochs 10 --seeds 3 --final-k 1 --threads 2 --inherit seed --score-steps 120 --out benchmarks/results/autogo_cifar10_mobilenetv2.json

bench-autogo-cifar10-inherit-trained: install
	$(PY) benchmarks/autogo_cifar10.py --models resnet20 --budget 600 --iterations 20 --train-size 10000 --epochs 10 --seeds 2 --final-k 2 --inherit trained --score-steps 40 --out benchmarks/results/autogo_cifar10_inherit_trained.json

clean:
	rm -rf $(VENV) out graphopt-runs .pytest_cache

bench-optimize-trained: install
	$(PY) benchmarks/optimize_trained.py --budgets 30m,2h --objectives flops,npu --seeds 0,1,2

bench-latency: install
	$(PY) benchmarks/latency.py

bench-scale-out: install
	$(PY) benchmarks/scale_out.py
