# The two commands of the quick start:
#   make run    install, generate a week of sample orders, run silver + gold for each day
#   make test   install, run the test suite
# Everything installs into .venv from the pinned requirements.txt.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-quick lint format lock clean

$(STAMP): requirements.txt scripts/check_prereqs.py
	@$(PYTHON) scripts/check_prereqs.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip uv
	@echo "installing pinned dependencies into $(VENV) (first time: a minute or two)"
	@$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements.txt
	@touch $(STAMP)

run: $(STAMP)
	@$(PY) scripts/quickstart.py

# Two processes (pytest-xdist), a whole test module each at a time: module fixtures stay shared.
test: $(STAMP)
	@$(PY) -m pytest -n 2 --dist loadfile

# Benchmarks: ratios against baselines measured in the same run; results in benchmarks/results/.
bench: $(STAMP)
	@$(PY) benchmarks/run.py

bench-quick: $(STAMP)
	@$(PY) benchmarks/run.py --quick

lint: $(STAMP)
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	@$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# Re-resolve requirements.in into exact pins (needs uv: `pip install uv`).
lock:
	@uv pip compile requirements.in --python-version 3.11 --no-header -o requirements.txt

clean:
	rm -rf data .pytest_cache
