"""Backfills through a real Airflow: scheduler, dag-processor, triggerer and api-server with
the LocalExecutor on a PostgreSQL server started here, each task in its own process.

A three-day backfill of silver_orders from the CLI publishes every day once, with the rows
the landed files say; the same backfill again with `--reprocess-behavior completed` re-runs
every day and changes nothing: same checksums, no duplicated row, no new commit. The
scheduled run the unpause creates (yesterday, for which nothing landed) waits in the
triggerer and fails at its sensor: nothing staged, nothing published.

As deployed, the tasks' Spark work goes to one Spark Connect server (the deployment's default).
"""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from airflow_deployment import AirflowDeployment
from conftest import START
from expected import orders_for_day
from pg import PostgresServer

from wap.settings import REPO_ROOT

DAYS = [START + dt.timedelta(days=n) for n in range(3)]  # one wave of --max-active-runs 3
FINAL = ("success", "failed")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    from sample_data.orders import write_landing

    with contextlib.ExitStack() as stack:  # stops what started, in reverse, whatever fails
        postgres = PostgresServer().start()
        stack.callback(postgres.stop)
        deployment = AirflowDeployment(tmp_path_factory.mktemp("airflow"), postgres)
        stack.callback(deployment.stop)
        # One day more than the backfill: each day's run also reads the next day's late records.
        write_landing(deployment.base / "data" / "landing", START, days=len(DAYS) + 1, orders_per_day=60)
        yield deployment.start()


def backfill_runs(airflow: AirflowDeployment) -> list[dict]:
    runs = airflow.api("GET", "/api/v2/dags/silver_orders/dagRuns?run_type=backfill&limit=100")["dag_runs"]
    return sorted(runs, key=lambda r: r["logical_date"])


def wait_for_backfill(airflow: AirflowDeployment, backfill_id: int) -> list[dict]:
    def done():
        backfill = airflow.api("GET", f"/api/v2/backfills/{backfill_id}")
        runs = backfill_runs(airflow)
        return backfill["completed_at"] and all(r["state"] in FINAL for r in runs) and runs

    return airflow.wait_for(done, 900, f"backfill {backfill_id}")


def live_state(airflow: AirflowDeployment) -> dict[str, dict]:
    """Per day: the live version and the partition's order ids, read through Iceberg."""
    from pyiceberg.expressions import EqualTo

    from wap import tables

    table = tables.load_table("silver.orders")
    state = {}
    for day in DAYS:
        rows = table.scan(row_filter=EqualTo("order_date", day.isoformat())).to_arrow()
        state[day.isoformat()] = {
            "version": tables.live_version(table, day),
            "ids": rows.column("order_id").to_pylist(),
        }
    return state


def test_a_cli_backfill_on_a_real_scheduler_publishes_each_day_once_and_reprocessing_changes_nothing(
    airflow, monkeypatch
):
    from wap.ledger import Ledger

    for name in ("WAP_CATALOG_URI", "WAP_DATA_DIR", "WAP_LEDGER_URL"):  # this process reads what the tasks wrote
        monkeypatch.setenv(name, airflow.env[name])
    airflow.airflow("pools", "import", str(REPO_ROOT / "include" / "pools.json"))
    airflow.wait_for(lambda: airflow.api("GET", "/api/v2/dags/silver_orders"), 300, "the DAG to be parsed")
    airflow.api("PATCH", "/api/v2/dags/silver_orders", {"is_paused": False})

    window = ["--from-date", DAYS[0].isoformat(), "--to-date", DAYS[-1].isoformat(), "--max-active-runs", "3"]
    airflow.airflow("backfill", "create", "--dag-id", "silver_orders", *window, "--reprocess-behavior", "none")
    (first,) = airflow.api("GET", "/api/v2/backfills?dag_id=silver_orders")["backfills"]
    runs = wait_for_backfill(airflow, first["id"])
    assert [r["logical_date"][:10] for r in runs] == [d.isoformat() for d in DAYS]
    assert {r["state"] for r in runs} == {"success"}, f"{runs}\n{airflow.log_tail()}"

    landing = airflow.base / "data" / "landing"
    before = live_state(airflow)
    ledger = Ledger()
    for day in DAYS:
        live, ids = before[day.isoformat()]["version"], before[day.isoformat()]["ids"]
        assert sorted(ids) == sorted(orders_for_day(landing, day)), day
        assert len(ids) == len(set(ids)) == live.rows
        (row,) = ledger.rows("silver_orders", day.isoformat())
        assert (row["status"], row["snapshot_id"], row["checksum"]) == ("published", live.snapshot_id, live.checksum)
        assert row["run_id"].startswith("backfill__")

    airflow.airflow("backfill", "create", "--dag-id", "silver_orders", *window, "--reprocess-behavior", "completed")
    backfills = airflow.api("GET", "/api/v2/backfills?dag_id=silver_orders")["backfills"]
    (second,) = [b for b in backfills if b["id"] != first["id"]]
    runs = wait_for_backfill(airflow, second["id"])
    assert {r["state"] for r in runs} == {"success"}, f"{runs}\n{airflow.log_tail()}"

    after = live_state(airflow)
    for day in DAYS:
        assert after[day.isoformat()]["version"] == before[day.isoformat()]["version"], "no new commit"
        assert sorted(after[day.isoformat()]["ids"]) == sorted(before[day.isoformat()]["ids"])
        rows = ledger.rows("silver_orders", day.isoformat())
        assert [r["status"] for r in rows] == ["published", "skipped"], rows
        assert rows[1]["checksum"] == rows[0]["checksum"] and rows[1]["try_number"] > rows[0]["try_number"]


def test_a_scheduled_day_whose_data_never_lands_fails_at_its_sensor_and_publishes_nothing(airflow, monkeypatch):
    from wap import tables
    from wap.ledger import Ledger

    for name in ("WAP_CATALOG_URI", "WAP_DATA_DIR", "WAP_LEDGER_URL"):
        monkeypatch.setenv(name, airflow.env[name])

    def scheduled():
        runs = airflow.api("GET", "/api/v2/dags/silver_orders/dagRuns?run_type=scheduled")["dag_runs"]
        return [r for r in runs if r["state"] in FINAL] or None

    (run,) = airflow.wait_for(scheduled, 300, "the scheduled run to end")
    day = run["logical_date"][:10]
    assert not any(airflow.base.glob(f"data/landing/orders/dt={day}")), "nothing landed for that day"
    assert run["state"] == "failed"
    states = airflow.task_states("silver_orders", run["dag_run_id"])
    assert states["wait_for_orders"] == "failed" and states["stage"] == "upstream_failed", states
    assert Ledger().rows("silver_orders", day) == [], "no attempt was even started"
    assert tables.live_version(tables.load_table("silver.orders"), dt.date.fromisoformat(day)) is None


def test_a_range_run_triggered_over_rest_publishes_every_day_in_one_commit(airflow, monkeypatch):
    """The range as conf, through the public REST API: one DAG run, each task in its own
    process, every day of the range published by one commit with a ledger row per day."""
    from sample_data.orders import write_landing
    from wap import tables
    from wap.ledger import Ledger

    for name in ("WAP_CATALOG_URI", "WAP_DATA_DIR", "WAP_LEDGER_URL"):
        monkeypatch.setenv(name, airflow.env[name])
    airflow.airflow("pools", "import", str(REPO_ROOT / "include" / "pools.json"))
    airflow.wait_for(lambda: airflow.api("GET", "/api/v2/dags/silver_orders"), 300, "the DAG to be parsed")
    airflow.api("PATCH", "/api/v2/dags/silver_orders", {"is_paused": False})
    landing = airflow.base / "data" / "landing"
    days = [START + dt.timedelta(days=n) for n in (3, 4)]  # day 3 landed with the fixture; 4 and 5 here
    write_landing(landing, days[1], days=2, orders_per_day=60)

    span = f"{days[0]}/{days[1]}"
    run = airflow.api("POST", "/api/v2/dags/silver_orders/dagRuns", {"logical_date": None, "conf": {"partition": span}})

    def finished():
        found = airflow.api("GET", f"/api/v2/dags/silver_orders/dagRuns/{run['dag_run_id']}")
        return found if found["state"] in FINAL else None

    done = airflow.wait_for(finished, 600, f"range run {span}")
    assert done["state"] == "success", (
        f"{airflow.task_states('silver_orders', run['dag_run_id'])}\n{airflow.log_tail()}"
    )
    table = tables.load_table("silver.orders")
    snapshots = set()
    for day in days:
        live = tables.live_version(table, day)
        (row,) = [r for r in Ledger().rows("silver_orders", day.isoformat()) if r["run_id"] == run["dag_run_id"]]
        assert (row["status"], row["snapshot_id"], row["checksum"]) == ("published", live.snapshot_id, live.checksum)
        from pyiceberg.expressions import EqualTo

        ids = table.scan(row_filter=EqualTo("order_date", day.isoformat())).to_arrow().column("order_id").to_pylist()
        assert sorted(ids) == sorted(orders_for_day(landing, day)), day
        snapshots.add(live.snapshot_id)
    assert len(snapshots) == 1, "one commit for the range"
