# One virtual environment in .venv; every target sets it up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test lint bench clean

$(BIN)/amc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $(BIN)/amc

install: $(BIN)/amc

quickstart: install  ## a small search on the bundled digits data: policy, TensorBoard log, summary in runs/quickstart
	@if [ -f runs/quickstart/config.yaml ]; then \
		echo "runs/quickstart exists: continuing it (make clean removes it, to start over)"; \
		$(BIN)/amc search --resume runs/quickstart; \
	else \
		$(BIN)/amc search --config configs/quickstart.yaml; \
	fi

test: install  ## lint + the default test suite (a few minutes on two cores)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf runs/quickstart bench_out .pytest_cache
