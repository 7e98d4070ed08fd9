# The two commands of the quick start, each installing what it needs first:
#   make run    install, generate a week of sample orders, run silver + gold for each day
#   make test   install, run the test suite
#   make airflow  install, then a local Airflow for these DAGs (UI and REST API), until Ctrl-C
# The set-up on its own (both run it):
#   make install  .venv: the pinned requirements.txt, then this package, editable (the `wap` command)
# Everything installs into .venv: the pinned requirements.txt, the package, and (for run and
# test) the PostgreSQL JDBC driver.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JDBC_JAR := $(VENV)/jars/postgresql.jar
SYSTEM_JDBC_JAR := /usr/share/java/postgresql.jar

.PHONY: install run test airflow bench bench-quick lint format lock clean

install: $(STAMP)

# The pinned dependencies, then the package itself without dependencies (they are the pins)
# and editable: the `wap` console script runs plugins/wap as it is, and Airflow still finds
# the package through plugins/ when deployed.
# Compiled to bytecode at install: where PYTHONDONTWRITEBYTECODE is set (CI images, some
# shells) Python never writes a .pyc, so every new process (each Airflow task, each test's
# subprocess) would compile the ~800 modules it imports from source again: measured here,
# +2-5 s per task process. A stale .pyc (an edited file) is only ignored, never wrong, and a
# file that does not compile (some packages ship test data as .py) is compiled at import as before.
$(STAMP): requirements.txt pyproject.toml scripts/check_prereqs.py Makefile
	@$(PYTHON) scripts/check_prereqs.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip uv
	@echo "installing pinned dependencies into $(VENV) (first time: a minute or two)"
	@$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements.txt
	@$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	@touch $(STAMP)

# This repository's own modules, compiled again where they changed (seconds; nothing when none did).
.PHONY: bytecode
bytecode: $(STAMP)
	@$(PY) -m compileall -q plugins dags scripts tests benchmarks >/dev/null

# The PostgreSQL JDBC driver for Spark's JDBC reader (wap.settings.jdbc_jars looks here first).
# Not from Maven (unreachable here) but from Debian's libpostgresql-jdbc-java: the installed
# package's jar, else the jar inside its .deb (`apt-get download` needs no root). Copied to a
# temporary name first, so a failed attempt leaves no target behind.
$(JDBC_JAR): $(wildcard $(SYSTEM_JDBC_JAR))
	@mkdir -p $(@D)
	@if [ -f $(SYSTEM_JDBC_JAR) ]; then \
		cp $(SYSTEM_JDBC_JAR) $@.part; \
	else \
		echo "fetching the PostgreSQL JDBC driver from Debian's libpostgresql-jdbc-java"; \
		rm -rf $(@D)/deb && mkdir $(@D)/deb && \
		(cd $(@D)/deb && apt-get download -q libpostgresql-jdbc-java >/dev/null) && \
		dpkg-deb -x $(@D)/deb/libpostgresql-jdbc-java_*.deb $(@D)/deb && \
		cp $(@D)/deb$(SYSTEM_JDBC_JAR) $@.part; \
		rm -rf $(@D)/deb; \
	fi
	@test -s $@.part || { \
		echo "Cannot install the PostgreSQL JDBC driver (Spark's JDBC reader needs it). Either:" >&2; \
		echo "  sudo apt-get install libpostgresql-jdbc-java    (Debian/Ubuntu), then make again, or" >&2; \
		echo "  download postgresql-42.x.jar from https://jdbc.postgresql.org/download/ to $@" >&2; \
		rm -f $@.part; exit 1; }
	@mv $@.part $@

run: install bytecode $(JDBC_JAR)
	@$(PY) scripts/quickstart.py

# A local Airflow for these DAGs until Ctrl-C (`wap airflow`: standalone on the embedded default,
# the pools imported, one shared Spark Connect server); options: make airflow ARGS="--port 8090".
airflow: install bytecode $(JDBC_JAR)
	@$(VENV)/bin/wap airflow $(ARGS)

# Debian packages the tests drive, from Debian (never a binary downloaded at run time); installing
# needs root (CI's user). $(1): the packages.
apt_install = apt-get install -y -q $(1) >/dev/null 2>&1 || \
	(apt-get update -q >/dev/null && apt-get install -y -q $(1) >/dev/null) || { \
	echo "Cannot install $(1): sudo apt-get install $(1), then make test again" >&2; exit 1; }

# Debian's chromium and its driver, which the browser test drives (test_local_airflow.py).
CHROMEDRIVER := /usr/bin/chromedriver
$(CHROMEDRIVER):
	@echo "installing Debian's chromium and chromium-driver (the browser test drives them)"
	@$(call apt_install,chromium chromium-driver)

# Debian's redis-server, the broker of the cluster test's Celery workers (test_cluster.py).
REDIS_SERVER := /usr/bin/redis-server
$(REDIS_SERVER):
	@echo "installing Debian's redis-server (the broker of the cluster test's Celery workers)"
	@$(call apt_install,redis-server)

# Two processes (pytest-xdist), a whole test module each at a time: module fixtures stay shared.
# The modules in tests/conftest.py's order, the longest first: without --no-loadscope-reorder
# xdist would reorder them by their number of tests, and a long module of few tests (the
# cluster's) would start last and run alone at the end.
test: install bytecode $(JDBC_JAR) $(CHROMEDRIVER) $(REDIS_SERVER)
	@$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The pure-logic tests only (no Spark, no dag.test, no PostgreSQL or other server): under a
# minute. Which ones: the `fast` marker, given in tests/conftest.py (FAST_MODULES).
.PHONY: test-fast
test-fast: $(STAMP)
	@$(PY) -m pytest -m fast -q

# Benchmarks: ratios against baselines measured in the same run; results in benchmarks/results/.
bench: $(STAMP) bytecode
	@$(PY) benchmarks/run.py

bench-quick: $(STAMP) bytecode
	@$(PY) benchmarks/run.py --quick

lint: $(STAMP)
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/codespell

# mypy over the whole wap package ([tool.mypy] in pyproject.toml: strict on the core modules).
.PHONY: typecheck
typecheck: $(STAMP)
	@$(VENV)/bin/mypy

format: $(STAMP)
	@$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# Re-resolve requirements.in into exact pins (needs uv: `pip install uv`).
lock:
	@uv pip compile requirements.in --python-version 3.11 --no-header -o requirements.txt

clean:
	rm -rf data .pytest_cache
