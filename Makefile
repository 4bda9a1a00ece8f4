# One command each: `make demo` (set up + fine-tune on the built-in demo data + int8 export + predict)
# and `make test` (set up + the test suite, including the end-to-end test on the real MiniLM).
# The active virtualenv when there is one (scripts/setup.sh installs into it), else ./.venv.
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
BIN := $(VENV)/bin
DEMO := models/demo-minilm-l6

# The light core, type-checked by mypy: the runtime path, configs, tasks, the server, the engines' shared
# partition function and the light bench modules (no torch).
CORE := edgesent/config edgesent/runtime.py edgesent/predictor_tokenizer.py edgesent/sessions.py edgesent/artifacts.py edgesent/data.py \
	edgesent/errors.py edgesent/metrics.py edgesent/_imports.py edgesent/agreement.py edgesent/tasks edgesent/serve/*.py \
	edgesent/distributed/__init__.py edgesent/distributed/partition.py \
	edgesent/bench/__init__.py edgesent/bench/config.py edgesent/bench/gates.py edgesent/bench/report.py

.PHONY: setup demo test test-fast test-slow gate lint

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/edgesent finetune --overwrite
	$(BIN)/edgesent export $(DEMO) --int8 --out $(DEMO)-int8 --parity-data edgesent/demo/eval.csv --overwrite
	$(BIN)/edgesent predict $(DEMO)-int8 "The battery died after two days." "Check-in was quick and the staff were lovely." "The parcel arrived on Tuesday."

test: setup
	$(BIN)/python -m pytest -m "not gpu" -q

test-fast: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

gate: setup
	PATH="$(abspath $(BIN)):$$PATH" bash bench/ci_gate.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(CORE)
