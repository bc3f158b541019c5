# `make demo` and `make test` create .venv when missing; everything else assumes it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
# Persistent XLA compile cache shared by tests, demo and benchmarks (first run fills it).
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES ?= -1

.PHONY: demo test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m lumiere_jax.demo --workdir $(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --durations=15 tests

bench: $(VENV)/.installed
	$(PY) benchmarks/train_step_mfu.py

clean:
	rm -rf $(VENV) .cache workdirs
