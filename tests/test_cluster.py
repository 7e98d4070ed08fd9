"""Beyond one machine, with real engines: a Spark standalone cluster (a master and two workers,
each its own JVM from PySpark's jars, and a Spark Connect server whose application runs on
the master) and Airflow with the CeleryExecutor (Debian's redis-server as broker, two Celery
workers, scheduler, dag-processor, triggerer, api-server; Airflow's metadata and Celery's
results on one PostgreSQL server, the run ledger and the Iceberg catalog on another, the
catalog reached through a TCP proxy whose link a test can cut).

- Airflow's own backfill from the CLI (a run per day) and a range run over REST of
  silver_orders, and the gold_daily_sales runs their publishes start, spread over both Celery
  workers and both Spark workers, and publish exactly what the embedded run (`wap run`,
  dag.test, no servers) publishes for the same days: rows, checksums, ledger; the range in
  one commit. The same backfill with `--reprocess-behavior completed` changes nothing (every
  publish `skipped`); the scheduled run the unpause made, for a day that never landed, fails
  at its sensor (in the triggerer) and starts nothing.
- Faults under load, each followed by the invariant checks: a Celery worker SIGKILLed while
  it runs a stage, an audit and a publish; a Spark worker SIGKILLed (its executors die) while
  a stage's Spark job runs; the PostgreSQL server of ledger and catalog restarted during a
  backfill; the catalog unreachable when a publish starts. Checked after each: I1 (an
  observer in another thread reads every partition throughout: absent or complete, never
  part), I2 (every partition's rows and checksum equal the clean embedded run's and the
  independent expectation's), I4 (the ledger's published attempt is the table's live
  version; no attempt left `running`).

One cluster for the module. Each fault is injected once per round; more rounds are a soak:

    WAP_CLUSTER_ROUNDS=5 .venv/bin/python -m pytest tests/test_cluster.py -p no:xdist

What each fault cost (retries, seconds) is written to the module's data folder as
`faults.json` and printed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from airflow_deployment import AirflowDeployment
from conftest import START
from expected import orders_for_day
from pg import PostgresServer, free_port
from redis_server import RedisServer
from spark_cluster import SparkCluster
from tcp_proxy import TcpProxy

from wap.embedded import stop_process_tree
from wap.settings import REPO_ROOT

ROUNDS = int(os.environ.get("WAP_CLUSTER_ROUNDS", "1"))
SMALL = 60  # orders a day
LARGE = 20_000  # orders a day where a Spark worker is killed: a stage's Spark job lasts seconds
FINAL = ("success", "failed")


def _days(first: int, count: int) -> list[dt.date]:
    return [START + dt.timedelta(days=first + n) for n in range(count)]


# The module's days: the clean runs (a range run and a backfill at once), then per round each fault's own days.
CLEAN = _days(0, 4)
RANGED, BACKFILLED = CLEAN[:2], CLEAN[2:]
# The faults' runs start no lookback run (`lookback: False`): every day landed before any ran,
# so the day before's own run already read this day's late records; its lookback run would
# only cost a run and publish nothing new (`skipped`).
PER_ROUND = {"celery_worker": 1, "spark_worker": 2, "postgres_restart": 2, "catalog_cut": 1}
FAULT_DAYS: dict[str, list[list[dt.date]]] = {name: [] for name in PER_ROUND}
_next = len(CLEAN)
for _round in range(ROUNDS):
    for _name, _count in PER_ROUND.items():
        FAULT_DAYS[_name].append(_days(_next, _count))
        _next += _count
ALL_DAYS = _days(0, _next)


class Cluster:
    """The module's deployment and the checks every test makes against it."""

    def __init__(
        self, airflow: AirflowDeployment, spark: SparkCluster, spark_ui: str, data: PostgresServer, proxy: TcpProxy
    ) -> None:
        self.airflow, self.spark, self.spark_ui, self.data, self.proxy = airflow, spark, spark_ui, data, proxy
        self.landing = airflow.base / "data" / "landing"
        self.faults: list[dict[str, Any]] = []
        self.embedded: EmbeddedRun
        # What this process reads: the deployment's ledger, and its catalog directly (not
        # through the proxy, which a test cuts).
        self.read_env = {**airflow.env, "WAP_CATALOG_URI": data.url("wap_catalog")}

    # --------------------------------------------------------------- runs
    def trigger(self, dag_id: str, partition: str, lookback: bool = True) -> str:
        """A run of `partition` (a day or a range) over REST; without `lookback` it starts no run
        of the day before for late records in its folder."""
        conf: dict[str, Any] = {"partition": partition, **({} if lookback else {"lookback": False})}
        return self.airflow.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})[
            "dag_run_id"
        ]

    def backfill(self, days: list[dt.date], reprocess: str) -> list[tuple[str, str]]:
        """Airflow's own backfill of silver_orders from the CLI (a run per day, all at once), until
        it has completed: its runs, each of which must have succeeded."""
        api = self.airflow.api

        def backfills() -> set[int]:
            return {b["id"] for b in api("GET", "/api/v2/backfills?dag_id=silver_orders")["backfills"]}

        known = backfills()
        window = ["--from-date", days[0].isoformat(), "--to-date", days[-1].isoformat()]
        self.airflow.airflow(
            "backfill", "create", "--dag-id", "silver_orders", *window,
            "--max-active-runs", str(len(days)), "--reprocess-behavior", reprocess,
        )  # fmt: skip
        (made,) = backfills() - known
        self.airflow.wait_for(lambda: api("GET", f"/api/v2/backfills/{made}")["completed_at"], 900, f"backfill {made}")
        keys = {d.isoformat() for d in days}
        listed = api("GET", "/api/v2/dags/silver_orders/dagRuns?run_type=backfill&limit=100")["dag_runs"]
        runs = [("silver_orders", r["dag_run_id"]) for r in listed if r["logical_date"][:10] in keys]
        assert len(runs) == len(days), listed
        self.wait_runs(runs)
        return runs

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        return self.airflow.api("GET", path)["task_instances"]

    def wait_runs(self, runs: list[tuple[str, str]], seconds: float = 900) -> None:
        """Wait until every (dag_id, run_id) has ended; each must have succeeded."""

        def ended():
            return all(self.run(dag_id, run_id)["state"] in FINAL for dag_id, run_id in runs)

        self.airflow.wait_for(ended, seconds, f"runs {runs}")
        self.settle(seconds)
        states = {run: self.run(*run)["state"] for run in runs}
        failed = {run: state for run, state in states.items() if state != "success"}
        assert not failed, f"{failed}: {[self.task_instances(*run) for run in failed]}\n{self.airflow.log_tail()}"

    def settle(self, seconds: float = 900) -> None:
        """Wait until no run of any DAG is queued or running: the runs a publish starts (gold's,
        by asset event) and those `reprocess_late` starts (an earlier day's late records) too."""

        def quiet():
            path = "/api/v2/dags/~/dagRuns?state=queued&state=running&limit=1"
            return self.airflow.api("GET", path)["total_entries"] == 0

        self.airflow.wait_for(quiet, seconds, "every run to end")

    def gold_runs_for(self, days: list[dt.date], seconds: float = 900) -> list[tuple[str, str]]:
        """The gold runs the silver publishes of `days` started (one per day: asset events keyed
        by the day), once each has ended."""

        def started():
            runs = self.airflow.api("GET", "/api/v2/dags/gold_daily_sales/dagRuns?limit=500")["dag_runs"]
            found = {r["partition_key"]: r for r in runs if r.get("partition_key") in {d.isoformat() for d in days}}
            return found if len(found) == len(days) else None

        found = self.airflow.wait_for(started, seconds, f"gold runs for {days}")
        runs = [("gold_daily_sales", r["dag_run_id"]) for r in found.values()]
        self.wait_runs(runs, seconds)
        return runs

    def wait_task(self, runs: list[tuple[str, str]], task_id: str, states: tuple[str, ...], seconds: float = 600):
        """Poll quickly until a task instance `task_id` of one of `runs` is in one of `states`.
        Read from Airflow's metadata database: five polls a second through the REST API would
        keep the api-server busy on cores the deployment needs."""
        import sqlalchemy as sa

        query = sa.text(
            "SELECT dag_id, run_id AS dag_run_id, task_id, state, hostname, try_number FROM task_instance "
            "WHERE dag_id = :dag_id AND run_id = :run_id AND task_id = :task_id AND state IN :states"
        ).bindparams(sa.bindparam("states", expanding=True))
        engine = sa.create_engine(self.airflow.postgres.url("airflow"))
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    for dag_id, run_id in runs:
                        params = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "states": list(states)}
                        found = conn.execute(query, params).mappings().first()
                        if found:
                            return dict(found)
                time.sleep(0.2)
        finally:
            engine.dispose()
        raise TimeoutError(f"no {task_id} of {runs} reached {states} in {seconds} s\n{self.airflow.log_tail()}")

    # --------------------------------------------------------------- what was published
    def wap(self, env: dict[str, str], *args: str) -> Any:
        done = subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "wap"), *args, "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    def published(self, env: dict[str, str], days: list[dt.date]) -> dict[tuple[str, str], tuple[int, str]]:
        """(table, day) -> (rows, checksum) of the live partitions of `days`."""
        keys = {d.isoformat() for d in days}
        return {
            (p["table"], p["partition"]): (p["rows"], p["checksum"])
            for p in self.wap(env, "partitions")
            if p["partition"] in keys
        }

    def check_invariants(
        self, days: list[dt.date], clean: dict[tuple[str, str], tuple[int, str]], gold: bool = True
    ) -> None:
        """I2 and I4 for every day of `days`, for silver.orders and (with `gold`) gold.daily_sales."""
        from pyiceberg.expressions import EqualTo

        from wap import tables
        from wap.ledger import Ledger

        here = self.published(self.read_env, days)
        for table in ("silver.orders", "gold.daily_sales")[: 2 if gold else 1]:
            for day in days:
                assert here.get((table, day.isoformat())) == clean[(table, day.isoformat())], (table, day)  # I2
        silver = tables.load_table("silver.orders")
        ledger = Ledger()
        for day in days:
            ids = silver.scan(row_filter=EqualTo("order_date", day.isoformat())).to_arrow()["order_id"].to_pylist()
            assert sorted(ids) == sorted(orders_for_day(self.landing, day)), day  # I2, independently
            pipelines = [("silver_orders", silver)]
            if gold:
                pipelines.append(("gold_daily_sales", tables.load_table("gold.daily_sales")))
            for pipeline, table in pipelines:
                rows = ledger.rows(pipeline, day.isoformat())
                assert not [r for r in rows if r["status"] == "running"], rows  # I4: no attempt left running
                live = tables.live_version(table, day)
                (last,) = [r for r in rows if r["snapshot_id"] == live.snapshot_id and r["status"] == "published"]
                assert last["checksum"] == live.checksum and last["rows_out"] == live.rows, (pipeline, day)  # I4

    @contextlib.contextmanager
    def under_fault(self, days: list[dt.date], clean: dict[tuple[str, str], tuple[int, str]]):
        """Around a fault on the runs of `days`: I1 observed throughout, then I2 and I4."""
        observer = Observer(self, days)
        observer.start()
        try:
            yield
        finally:
            observer.stop()
        assert observer.reads and not observer.problems, (observer.problems, observer.reads)  # I1
        self.check_invariants(days, clean, gold=False)

    def record(self, fault: str, started: float, runs: list[tuple[str, str]], **what: Any) -> dict[str, Any]:
        """What a fault cost: its runs' retries (task tries beyond the first), the seconds from
        the fault to the last run's end."""
        tries = {
            f"{dag_id}.{ti['task_id']}": ti["try_number"]
            for dag_id, run_id in runs
            for ti in self.task_instances(dag_id, run_id)
            if ti["try_number"] > 1
        }
        ended = max(dt.datetime.fromisoformat(self.run(*run)["end_date"]).timestamp() for run in runs)
        cost = {"fault": fault, **what, "retried": tries, "seconds_to_recover": round(ended - started, 1)}
        self.faults.append(cost)
        print(json.dumps(cost))
        return cost


class Observer(threading.Thread):
    """I1 throughout: reads every partition of `expected` again and again while faults happen;
    each read must find it absent (not yet published) or exactly its clean rows."""

    def __init__(self, cluster: Cluster, days: list[dt.date]) -> None:
        super().__init__(daemon=True, name="i1-observer")
        self.cluster, self.days = cluster, days
        self.expected = {d: sorted(orders_for_day(cluster.landing, d)) for d in days}
        self.reads, self.problems = 0, []
        self._done = threading.Event()

    def run(self) -> None:
        from pyiceberg.expressions import EqualTo

        from wap import tables

        while not self._done.wait(1.0):
            try:
                table = tables.load_table("silver.orders")
            except Exception:  # no table yet, or its server restarting: nothing to read
                continue
            snapshot = table.current_snapshot()
            for day in self.days:
                try:
                    scan = table.scan(
                        row_filter=EqualTo("order_date", day.isoformat()), snapshot_id=snapshot.snapshot_id
                    )
                    ids = sorted(scan.to_arrow()["order_id"].to_pylist())
                except Exception:  # a file expired under the read: read again next time
                    continue
                self.reads += 1
                if ids and ids != self.expected[day]:
                    self.problems.append((day.isoformat(), snapshot.snapshot_id, len(ids)))

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from sample_data.orders import write_landing
    from wap.spark import JIT_OPTIONS, ConnectServer

    base = tmp_path_factory.mktemp("cluster")
    with contextlib.ExitStack() as stack:  # stops what started, in reverse, whatever fails
        postgres = PostgresServer().start()  # Airflow's metadata and Celery's results
        stack.callback(postgres.stop)
        data = PostgresServer().start()  # the run ledger and the Iceberg catalog
        stack.callback(data.stop)
        redis = RedisServer().start()
        stack.callback(redis.stop)
        spark = SparkCluster(base / "spark", workers=2).start()
        stack.callback(spark.stop)
        # The tasks' Spark work: one Connect server, its application on the cluster's master,
        # its executors in the workers' JVMs; its UI answers which executor runs what.
        ui_port = free_port()
        connect = ConnectServer(
            master=spark.master_url,
            conf={
                "spark.ui.enabled": "true",
                "spark.ui.port": str(ui_port),
                "spark.executor.memory": "1g",
                "spark.executor.extraJavaOptions": f"{JIT_OPTIONS} {spark.java_options}",
            },
        ).start()
        stack.callback(connect.stop)
        airflow = AirflowDeployment(
            base / "airflow", postgres, parallelism=4, spark=connect.remote, data_postgres=data, celery_broker=redis.url
        )
        stack.callback(airflow.stop)
        proxy = TcpProxy(data.port)
        stack.callback(proxy.stop)
        airflow.env.update(
            {
                "WAP_CATALOG_URI": f"postgresql+psycopg2://postgres@127.0.0.1:{proxy.port}/wap_catalog",
                # A dead worker's task is failed (and retried) 20 s after its last heartbeat,
                # and its attempt's ledger lease lapses as soon (defaults: 300 s and 60 s).
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                "WAP_LEASE_SECONDS": "20",
                "WAP_RETRY_DELAY_S": "2",  # and retried 2 s later (default 30 s)
            }
        )
        landing = airflow.base / "data" / "landing"
        large = {d for days in FAULT_DAYS["spark_worker"] for d in days}
        # Every day of the module, and a day more (the last day's late records), in stretches of one size.
        sizes = [(d, LARGE if d in large else SMALL) for d in [*ALL_DAYS, ALL_DAYS[-1] + dt.timedelta(days=1)]]
        for size, stretch in itertools.groupby(sizes, key=lambda pair: pair[1]):
            stretch = list(stretch)
            write_landing(landing, stretch[0][0], days=len(stretch), orders_per_day=size)
        embedded = EmbeddedRun(landing, base / "embedded")  # while the deployment starts
        stack.callback(embedded.stop)
        airflow.start()
        airflow.airflow("pools", "import", str(REPO_ROOT / "include" / "pools.json"))
        for dag_id in ("silver_orders", "gold_daily_sales"):
            airflow.wait_for(lambda d=dag_id: airflow.api("GET", f"/api/v2/dags/{d}"), 300, f"{dag_id} to be parsed")
            airflow.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        made = Cluster(airflow, spark, f"http://127.0.0.1:{ui_port}", data, proxy)
        made.embedded = embedded
        # This process reads what the tasks wrote: the deployment's ledger and warehouse, and its
        # catalog directly (not through the proxy, which a test cuts).
        reading = {name: made.read_env[name] for name in ("WAP_CATALOG_URI", "WAP_DATA_DIR", "WAP_LEDGER_URL")}
        saved = {name: os.environ.get(name) for name in reading}
        os.environ.update(reading)
        stack.callback(
            lambda: [os.environ.pop(n, None) if v is None else os.environ.__setitem__(n, v) for n, v in saved.items()]
        )
        yield made
        (base / "faults.json").write_text(json.dumps(made.faults, indent=2))


class EmbeddedRun:
    """The embedded run of every day of the module (`wap run` of silver, then of gold: dag.test,
    local Spark, SQLite catalog and ledger, no servers) on the same landed files, in the
    background from the moment they landed: what each partition must hold."""

    def __init__(self, landing: Path, data: Path) -> None:
        data.mkdir()
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AIRFLOW", "WAP_")) or name == "WAP_JDBC_JARS"
        }
        self.env.update({"WAP_DATA_DIR": str(data), "WAP_LANDING_DIR": str(landing), "HOME": str(data)})
        self.log = data / "wap-run.log"
        wap, span = REPO_ROOT / ".venv" / "bin" / "wap", f"--from {ALL_DAYS[0]} --to {ALL_DAYS[-1]}"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", f"{wap} run silver_orders {span} && {wap} run gold_daily_sales {span}"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self) -> dict[str, str]:
        """Its environment (to read what it published), once it has succeeded."""
        returncode = self.process.wait(timeout=1800)
        assert returncode == 0, self.log.read_text()[-6000:]
        return self.env

    def stop(self) -> None:
        stop_process_tree([self.process], grace=0)


@pytest.fixture(scope="module")
def clean(cluster) -> dict[tuple[str, str], tuple[int, str]]:
    """(table, day) -> (rows, checksum) the embedded run published."""
    published = cluster.published(cluster.embedded.wait(), ALL_DAYS)
    assert len(published) == 2 * len(ALL_DAYS), sorted(published)
    return published


def _span(days: list[dt.date]) -> str:
    return f"{days[0].isoformat()}/{days[-1].isoformat()}"


def test_a_backfill_and_a_range_run_spread_over_both_celery_and_both_spark_workers_and_publish_what_the_embedded_run_does(
    cluster, clean
):
    from wap import tables
    from wap.ledger import Ledger

    ranged = ("silver_orders", cluster.trigger("silver_orders", _span(RANGED)))  # one run, over REST
    silver = [ranged, *cluster.backfill(BACKFILLED, "none")]  # meanwhile, a run per day from the CLI
    cluster.wait_runs(silver)
    gold = cluster.gold_runs_for(CLEAN)  # started by silver's asset events, a run per day
    cluster.check_invariants(CLEAN, clean)  # gold's range runs: the last test

    silver_table = tables.load_table("silver.orders")
    live = {day: tables.live_version(silver_table, day).snapshot_id for day in RANGED}
    assert len(set(live.values())) == 1, f"the range in one commit: {live}"
    for day in BACKFILLED:
        (row,) = Ledger().rows("silver_orders", day.isoformat())
        assert row["status"] == "published" and row["run_id"].startswith("backfill__"), row

    ran_on = {ti["hostname"] for run in [*silver, *gold] for ti in cluster.task_instances(*run)}
    assert {"worker-1", "worker-2"} <= ran_on, ran_on  # the Celery workers' names (hostname_callable)
    spark_tasks = cluster.spark.tasks_per_worker()
    assert all(spark_tasks.values()), spark_tasks  # each Spark worker's executor ran tasks
    print(f"task instances by Celery worker: {ran_on}; Spark tasks by worker: {spark_tasks}")
    # From here on gold waits: the faults hit silver's runs, and gold reads every faulted day in
    # one range run at the end (test_gold_over_every_faulted_day...).
    cluster.airflow.api("PATCH", "/api/v2/dags/gold_daily_sales", {"is_paused": True})


def test_the_same_backfill_reprocessing_completed_days_changes_nothing(cluster, clean):
    from wap import tables
    from wap.ledger import Ledger

    table = tables.load_table("silver.orders")
    before = {day: tables.live_version(table, day) for day in BACKFILLED}
    cluster.backfill(BACKFILLED, "completed")  # every day run again, on the same landed files
    table = tables.load_table("silver.orders")
    assert {day: tables.live_version(table, day) for day in BACKFILLED} == before, "no new commit"
    cluster.check_invariants(BACKFILLED, clean, gold=False)  # no row lost or duplicated
    for day in BACKFILLED:
        rows = Ledger().rows("silver_orders", day.isoformat())
        assert [r["status"] for r in rows] == ["published", "skipped"], rows
        assert rows[1]["checksum"] == rows[0]["checksum"] and rows[1]["try_number"] > rows[0]["try_number"]


def test_a_scheduled_day_whose_data_never_lands_fails_at_its_sensor_and_starts_nothing(cluster):
    """The run the unpause scheduled (the last whole day: nothing landed for it) waited in the
    triggerer for its files until WAP_ARRIVAL_TIMEOUT_S (45 s here), then failed."""
    from wap import tables
    from wap.ledger import Ledger

    def scheduled():
        runs = cluster.airflow.api("GET", "/api/v2/dags/silver_orders/dagRuns?run_type=scheduled")["dag_runs"]
        return [r for r in runs if r["state"] in FINAL] or None

    (run,) = cluster.airflow.wait_for(scheduled, 300, "the scheduled run to end")
    day = run["logical_date"][:10]
    assert not any(cluster.landing.glob(f"orders/dt={day}")), "nothing landed for that day"
    assert run["state"] == "failed"
    states = cluster.airflow.task_states("silver_orders", run["dag_run_id"])
    assert states["wait_for_orders"] == "failed" and states["stage"] == "upstream_failed", states
    assert Ledger().rows("silver_orders", day) == [], "no attempt was even started"
    assert tables.live_version(tables.load_table("silver.orders"), dt.date.fromisoformat(day)) is None


def test_a_celery_worker_killed_while_it_runs_a_stage_an_audit_or_a_publish_loses_and_duplicates_nothing(
    cluster, clean
):
    for days in FAULT_DAYS["celery_worker"]:
        with cluster.under_fault(days, clean):
            # One run hit three times: the worker running its stage killed, then the one running
            # its audit, then its publish (each task on whichever worker took it).
            runs = [("silver_orders", cluster.trigger("silver_orders", days[0].isoformat(), lookback=False))]
            started, killed = time.time(), []
            for task_id in ("stage", "audit", "publish"):
                ti = cluster.wait_task(runs, task_id, ("running",))
                worker = ti["hostname"]
                cluster.airflow.kill(worker)  # SIGKILL: the worker, its pool, the task's supervisor and process
                killed.append(f"{task_id} try {ti['try_number']} on {worker}")
                cluster.airflow.launch(worker)  # a replacement worker of the same name comes up
            cluster.wait_runs(runs)
        cost = cluster.record("celery worker SIGKILL", started, runs, killed=killed)
        # The killed tasks ran again: the stage surely (it lasts seconds); the audit and the
        # publish of a small day may end before the kill lands, and then need no retry.
        assert cost["retried"].get("silver_orders.stage") == 2, cost


def _executor_worker(cluster: Cluster, executor_id: str) -> int:
    """Which Spark worker runs executor `executor_id` (its work dir holds the executor's folder)."""
    for n in cluster.spark.workers:
        if any(cluster.spark.work_dir(n).glob(f"app-*/{executor_id}")):
            return n
    raise AssertionError(f"executor {executor_id} is in no worker's work dir")


def _busy_executor(ui: str) -> str | None:
    """An executor of the Connect server's application running tasks now (its REST API)."""
    import urllib.request

    with urllib.request.urlopen(f"{ui}/api/v1/applications", timeout=5) as response:
        (app,) = json.loads(response.read())
    with urllib.request.urlopen(f"{ui}/api/v1/applications/{app['id']}/executors", timeout=5) as response:
        executors = json.loads(response.read())
    busy = [e["id"] for e in executors if e["id"] != "driver" and e["activeTasks"] > 0]
    return busy[0] if busy else None


def test_a_spark_worker_killed_during_a_stage_loses_and_duplicates_nothing(cluster, clean):
    for days in FAULT_DAYS["spark_worker"]:
        with cluster.under_fault(days, clean):
            runs = [("silver_orders", cluster.trigger("silver_orders", _span(days), lookback=False))]  # large days
            cluster.wait_task(runs, "stage", ("running",))
            executor = cluster.airflow.wait_for(lambda: _busy_executor(cluster.spark_ui), 300, "a Spark task to run")
            worker = _executor_worker(cluster, executor)
            started = time.time()
            cluster.spark.kill_worker(worker)  # SIGKILL: the worker JVM and its executor JVM
            cluster.spark.start_worker(worker)
            cluster.wait_runs(runs)
        cluster.record("spark worker SIGKILL", started, runs, killed=f"worker {worker} (executor {executor})")


def test_the_postgres_server_of_ledger_and_catalog_restarted_during_a_backfill_loses_and_duplicates_nothing(
    cluster, clean
):
    for days in FAULT_DAYS["postgres_restart"]:
        with cluster.under_fault(days, clean):
            runs = [("silver_orders", cluster.trigger("silver_orders", d.isoformat(), lookback=False)) for d in days]
            cluster.wait_task(runs, "stage", ("running",))
            time.sleep(2)  # in the stage's work, others queued behind it
            started = time.time()
            cluster.data.restart()
            cluster.wait_runs(runs)
        cluster.record("postgres restart (ledger, catalog)", started, runs)


def test_the_catalog_unreachable_when_a_publish_starts_fails_it_retryably_and_the_retry_publishes(cluster, clean):
    for days in FAULT_DAYS["catalog_cut"]:
        with cluster.under_fault(days, clean):
            runs = [("silver_orders", cluster.trigger("silver_orders", d.isoformat(), lookback=False)) for d in days]
            cluster.wait_task(runs, "audit", ("success",))
            started = time.time()
            cluster.proxy.cut()
            try:
                ti = cluster.wait_task(runs, "publish", ("up_for_retry", "failed"))
            finally:
                cluster.proxy.restore()
            cluster.wait_runs(runs)
        cost = cluster.record("catalog unreachable at publish", started, runs)
        assert cost["retried"].get("silver_orders.publish") == 2, cost
        assert ti["state"] == "up_for_retry", ti
        path = f"/api/v2/dags/silver_orders/dagRuns/{urllib.parse.quote(ti['dag_run_id'], safe='')}"
        log = json.dumps(cluster.airflow.api("GET", f"{path}/taskInstances/publish/logs/1"))
        assert "DatabaseUnreachableError" in log and "the Iceberg catalog's database" in log, log[-3000:]


def test_gold_over_every_faulted_day_in_one_range_run_equals_the_embedded_run(cluster, clean):
    days = sorted(d for rounds in FAULT_DAYS.values() for stretch in rounds for d in stretch)
    cluster.airflow.api("PATCH", "/api/v2/dags/gold_daily_sales", {"is_paused": False})
    run = ("gold_daily_sales", cluster.trigger("gold_daily_sales", _span(days)))
    cluster.wait_runs([run])
    cluster.check_invariants(days, clean)
    faults = cluster.faults
    print(json.dumps(faults, indent=1))
