# SliceRT-Farm. `make demo` sets everything up and runs the spec's manifest;
# `make test` sets everything up and runs the test suite.
.PHONY: setup demo test test-fast lint plugin images bench clean

VENV := .venv/bin
JOBS ?= 2

setup:
	bash scripts/setup.sh

plugin:
	bash qemu/build.sh

demo: setup
	$(VENV)/slicert run experiments/conv2d_5x5.yaml --jobs $(JOBS)

test: setup
	$(VENV)/python -m pytest -q

test-fast: setup
	$(VENV)/python -m pytest -q -m "not services and not airflow and not docker"

lint:
	$(VENV)/ruff check slicert_ops dags plugins tests bench
	scripts/lint-shell.sh

images: setup
	bash images/build.sh

bench: setup
	$(VENV)/python bench/bench_pipeline.py

clean:
	rm -rf build results artifacts
