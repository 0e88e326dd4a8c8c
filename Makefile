# Entry points used by README.md and CI. Everything lands in .venv; nothing is installed globally.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := io features embedding optim serve train
PIP := $(BIN)/python -m pip install --no-build-isolation --disable-pip-version-check
CORE_SOURCES := $(shell find cpp -path cpp/tests -prune -o -path cpp/benchmarks -prune -o -type f \
	\( -name '*.cc' -o -name '*.cu' -o -name '*.h' -o -name '*.py' -o -name 'CMakeLists.txt' -o -name 'pyproject.toml' \) -print)
PACKAGE_METADATA := $(foreach p,$(PACKAGES),packages/recis-$(p)/pyproject.toml)

.PHONY: install test fuzz lint docs cuda-check bench demo wheels clean
.DEFAULT_GOAL := test

$(VENV)/.deps: requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "RecIS needs Python >= 3.11; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps torchrec==1.8.0
	touch $@

# The compiled core is a regular install (its build tree in build/cpp makes rebuilds incremental);
# the pure-Python packages are editable.
$(VENV)/.core: $(VENV)/.deps $(CORE_SOURCES)
	@echo "building recis-core (C++; about a minute from scratch on 2 cores)"
	$(PIP) -q -Cbuild-dir=build/cpp ./cpp
	touch $@

$(VENV)/.packages: $(VENV)/.core $(PACKAGE_METADATA)
	$(PIP) -q $(foreach p,$(PACKAGES),-e packages/recis-$(p))
	touch $@

install: $(VENV)/.packages

test: install
	$(BIN)/python -m pytest

# The adversarial cases of tests/adversarial at full length (make test runs a quick form).
fuzz: install
	RECIS_FUZZ=long $(BIN)/python -m pytest tests/adversarial

# The HTML API reference from the docstrings (mkdocs.yml), strict: a docstring naming a parameter
# the signature lacks, or a broken reference, fails the build. Output: build/site.
docs: install
	$(BIN)/mkdocs build --strict --quiet

# Compiles the core with RECIS_WITH_CUDA=ON (every .cu, warnings as errors, and the CUDA bindings)
# without installing it: nvcc is needed, a GPU is not.
cuda-check: install
	bash tools/ci/cuda_check.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	bash tools/ci/lint_cpp.sh

bench: install
	mkdir -p build/bench
	$(BIN)/python -m pytest cpp/benchmarks $(wildcard packages/*/benchmarks) --benchmark-only \
		--benchmark-json=build/bench/pytest-benchmark.json
	$(BIN)/python tools/bench/ragged.py --json build/bench/ragged.json
	$(BIN)/python tools/bench/embedding.py --json build/bench/embedding.json
	$(BIN)/python tools/bench/sparse_step.py --json build/bench/sparse_step.json
	$(BIN)/python tools/bench/sparse_step_dist.py --json build/bench/sparse_step_dist.json
	$(BIN)/python tools/bench/train_e2e.py --json build/bench/train_e2e.json
	$(BIN)/python tools/bench/long_sequence.py --json build/bench/long_sequence.json
	$(BIN)/python tools/bench/serving.py --json build/bench/serving.json

# The packages' wheels in dist/ (recis-core for CPython 3.11 and cp312-abi3), repaired to manylinux.
wheels: install
	bash tools/ci/wheels.sh dist

demo: install
	$(BIN)/python -m recis.train.demo --out build/demo

clean:
	rm -rf build dist $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
