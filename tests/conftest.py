"""Shared test setup: one embedded Airflow, one Spark session, a fresh data folder per module.

The Airflow environment must be in place before anything imports airflow, so it is set
here at import time. Each test module that runs pipelines gets its own data folder
(tables, ledger, landing files) through the `data_dir` fixture.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from wap.embedded import prepare_airflow
from wap.settings import REPO_ROOT

SESSION_DIR = Path(tempfile.mkdtemp(prefix="wap-tests-"))
atexit.register(shutil.rmtree, SESSION_DIR, ignore_errors=True)  # every module's tables, ledger, landing
prepare_airflow(SESSION_DIR / "session")
# The DAG folder Airflow syncs in dag.test(): the repository's DAG files, plus test-only
# variants from tests/dags/ (dag.test() runs only DAGs it finds in the DAG folder).
DAGS_DIR = SESSION_DIR / "dags"
DAGS_DIR.mkdir()
for dag_file in [*(REPO_ROOT / "dags").glob("*.py"), *(Path(__file__).parent / "dags").glob("*.py")]:
    shutil.copy(dag_file, DAGS_DIR)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_DIR)
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
os.environ.setdefault("WAP_SPARK_MASTER", "local[2]")
# A run of a day with no landed files fails at its sensor in 2 minutes, not 6 hours.
os.environ.setdefault("WAP_ARRIVAL_TIMEOUT_S", "120")
# Every JVM spark-submit starts for the tests (each test process's Spark, every subprocess's,
# the Connect servers) compiles with C1 only. The tests' JVMs are short and their data small:
# the optimising C2 compiler's threads cost more CPU than they save (a small job measured here:
# 36 CPU-s with both compilers, 22 with C1 only), and the suite is bound by 2 cores' CPU.
# Not for real data (C2's code is faster on long jobs): `make run`, `make bench` and the DAGs keep
# the JVM's default.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1")

START = dt.date(2024, 1, 1)
ORDERS_PER_DAY = 80


# The longest modules first (as measured in `make test`): `make test` spreads the modules over
# two processes (pytest-xdist, by file, in this order), and a long module started last would
# run alone at the end.
LONGEST_FIRST = (
    "test_cluster.py",
    "test_bad_inputs.py",
    "test_benchmarks.py",
    "test_local_airflow.py",
    "test_lineage.py",
    "test_gate_engine.py",
    "test_spark_connect.py",
    # Not beside the cluster's module: each of them kills and restarts processes, and both
    # took twice as long side by side (584 s instead of 304 s for this one).
    "test_crash_safety.py",
    "test_planning.py",
    "test_template.py",
    "test_range_runs.py",
    "test_preview.py",
    "test_lineage_transport.py",
    "test_dead_attempts.py",
    "test_check.py",
    "test_cli.py",
    "test_end_to_end.py",
    "test_dim_customers.py",
    "test_serialised.py",
)


# The fast tier (`make test-fast`, `pytest -m fast`): pure logic, under a minute. A test is
# marked `fast` when its module is listed here AND it uses none of HEAVY_FIXTURES and is
# not a PostgreSQL case of a backend parameter: a test added later that starts Spark, runs
# a DAG or a server drops out of the tier by itself, listed module or not. A new module is
# in the full suite only until it is listed.
FAST_MODULES = (
    "test_arrival.py",
    "test_compose.py",
    "test_contract_versions.py",
    "test_dag_integrity.py",
    "test_layers.py",
    "test_local_days.py",
    "test_ledger.py",
    "test_lineage_transport.py",
    "test_partition.py",
    "test_publish_modes.py",
    "test_range_runs.py",
    "test_runtime.py",
    "test_suite_check.py",
)
# A JVM (spark), dag.test() (dags), landed files for a pipeline run (landed), a PostgreSQL server.
HEAVY_FIXTURES = frozenset({"spark", "dags", "landed", "postgres"})
# Tests of the listed modules that use no such fixture but take 10-20 s each: a fresh Python
# importing Airflow, GX or the CLI in a subprocess, or GX imported in this one. An entry that
# no longer names a test is an error (below), so this list cannot go stale unseen.
NOT_FAST = frozenset(
    {
        "test_dag_integrity.py::test_dag_file_is_light_to_parse",
        "test_suite_check.py::test_each_is_refused_before_spark_or_great_expectations_is_even_imported",
        "test_suite_check.py::test_the_cli_reports_a_broken_suite_cleanly",
        "test_suite_check.py::test_the_static_type_names_are_great_expectations_own",
    }
)


def _is_fast(item: pytest.Item) -> bool:
    if item.path.name not in FAST_MODULES or HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return False
    if f"{item.path.name}::{getattr(item, 'originalname', item.name)}" in NOT_FAST:
        return False
    callspec = getattr(item, "callspec", None)
    return callspec is None or "postgres" not in callspec.params.values()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m fast` alone: the other modules are not even imported (collecting them costs more than the tier)."""
    name = collection_path.name
    if config.getoption("markexpr") == "fast" and name.startswith("test_") and name.endswith(".py"):
        return name not in FAST_MODULES or None  # None: collected as usual
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_fast(item):
            item.add_marker(pytest.mark.fast)
    modules = {item.path.name: item.module for item in items if isinstance(item, pytest.Function)}
    stale = [m for m in FAST_MODULES if not (Path(__file__).parent / m).is_file()]
    for entry in NOT_FAST:
        module, test = entry.split("::")
        if module in modules and not hasattr(modules[module], test):
            stale.append(entry)
    if stale:
        raise pytest.UsageError(f"tests/conftest.py names tests that do not exist: {stale}")
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def spark():
    from wap.spark import get_spark

    session = get_spark()
    yield session
    session.stop()


class FreshDags:
    """`dags["silver_orders"]` parses the DAG file anew, like a worker does for each task.

    dag.test() runs tasks in this process on the DAG object it is given, and a run's conf
    is merged into that object's params: reusing one object would leak one run's
    `partition` into the next.
    """

    def __getitem__(self, dag_id: str):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(str(DAGS_DIR / f"{dag_id}.py"))
        assert not bag.import_errors, bag.import_errors
        return bag.dags[dag_id]


@pytest.fixture(scope="session")
def dags() -> FreshDags:
    return FreshDags()


@pytest.fixture(scope="module")
def data_dir(request) -> Path:
    """A fresh data folder (tables, ledger, landing) for one test module."""
    path = SESSION_DIR / request.module.__name__
    previous = os.environ.get("WAP_DATA_DIR")
    os.environ["WAP_DATA_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("WAP_DATA_DIR", None)
    else:
        os.environ["WAP_DATA_DIR"] = previous


@pytest.fixture(scope="module")
def landed(data_dir: Path) -> Path:
    """Five days of generated order events in the module's landing folder."""
    from sample_data.orders import write_landing

    landing = data_dir / "landing"
    write_landing(landing, START, days=5, orders_per_day=ORDERS_PER_DAY)
    return landing


def run_dag(dag, day: dt.date | None = None, conf: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, str]:
    """Run a DAG with dag.test(); return {"dag": state, task_id: state, ...}."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    if day is not None:
        kwargs["logical_date"] = utc_midnight(day)
    run = dag.test(run_conf=conf, **kwargs)
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag.dag_id, run_id=run.run_id).all()
        states = {ti.task_id: str(ti.state) for ti in tis}
        states["_tries"] = {ti.task_id: ti.try_number for ti in tis}
    states["dag"] = str(run.state)
    states["run_id"] = run.run_id
    return states


def publish_then_quarantine(dag, landed: Path, published: list[dt.date], quarantined: dt.date) -> None:
    """Run silver for each `published` day (each must succeed), then for `quarantined` with one
    order of a negative amount landed: the gate quarantines it (the record is removed after)."""
    import json

    for day in published:
        assert run_dag(dag, day=day)["dag"] == "success"
    day = quarantined

    bad = {"event_id": "E-B", "order_id": "O-B", "customer_id": "C", "status": "placed", "amount": -1}
    bad |= {"event_ts": f"{day}T10:00:00Z", "currency": "EUR", "channel": "web"}
    path = landed / "orders" / f"dt={day}" / "bad.jsonl"
    path.write_text(json.dumps(bad) + "\n")
    try:
        assert run_dag(dag, day=day)["dag"] == "failed"
    finally:
        path.unlink()


def read_partition(table: str, column: str, day: dt.date):
    """The live rows of one partition, as a pyarrow table (read through Iceberg)."""
    from pyiceberg.expressions import EqualTo

    from wap import tables

    return tables.load_table(table).scan(row_filter=EqualTo(column, day.isoformat())).to_arrow()


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def crash_after_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the ledger update that follows a publish commit die."""
    from wap.ledger import Ledger

    real_update = Ledger.update

    def dying_update(self, pipeline_name, run_token, **fields):
        if fields.get("status") in ("published", "skipped"):
            raise Crash("process died after the commit, before the ledger update")
        return real_update(self, pipeline_name, run_token, **fields)

    monkeypatch.setattr(Ledger, "update", dying_update)


def session_runtime():
    """The runtime this test session's environment configures: what the Airflow tasks build
    (`wap.runtime.Runtime.from_env`). Tests needing other places construct their own."""
    from wap.runtime import Runtime

    return Runtime.from_env()
