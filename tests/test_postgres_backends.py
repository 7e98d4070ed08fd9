"""The run ledger and the Iceberg catalog on a real PostgreSQL server, as deployed, with
concurrent writers: publishes of different partitions of one table at the same instant all
land (each commit that collides is re-applied), and two runs of one partition at once
leave one winner (I5), exactly as on the embedded SQLite default.

Only the environment changes (`WAP_CATALOG_URI`, `WAP_LEDGER_URL`); the server is Debian's
PostgreSQL 15 started by the fixture, one database each for the catalog and the ledger.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import time

import pytest
import sqlalchemy as sa
from conftest import START, read_partition, session_runtime
from pg import PostgresServer
from publish_worker import publish_at
from test_serialised import extra_order

from wap import steps, tables
from wap.ledger import Ledger

DAYS = [START + dt.timedelta(days=n) for n in range(3)]


@pytest.fixture(scope="module")
def postgres(data_dir):
    server = PostgresServer().start()
    with sa.create_engine(server.url(), isolation_level="AUTOCOMMIT").connect() as conn:
        for database in ("wap_catalog", "wap_ledger"):
            conn.execute(sa.text(f"CREATE DATABASE {database}"))
    env = {"WAP_CATALOG_URI": server.url("wap_catalog"), "WAP_LEDGER_URL": server.url("wap_ledger")}
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    yield server
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()


@pytest.fixture(scope="module")
def orders(postgres, landed, spark):
    from silver_orders import ORDERS

    return ORDERS


@pytest.fixture(scope="module")
def workers(orders):
    # Spawned after the environment points at PostgreSQL: the workers inherit it.
    with multiprocessing.get_context("spawn").Pool(len(DAYS)) as pool:
        yield pool


def staged_run(orders, day: dt.date, run_id: str):
    return steps.audit(session_runtime(), orders, steps.stage(session_runtime(), orders, day, run_id, 1))


def publish_together(workers, runs) -> dict[str, str]:
    moment = time.time() + 1.0
    results = [workers.apply_async(publish_at, (moment, run.to_dict())) for run in runs]
    return dict(r.get(timeout=180) for r in results)


def test_catalog_and_ledger_live_in_postgres(postgres, orders, data_dir):
    steps.publish(session_runtime(), orders, staged_run(orders, DAYS[-1] + dt.timedelta(days=1), "pg-first"))
    with sa.create_engine(postgres.url("wap_catalog")).connect() as conn:
        names = conn.execute(sa.text("SELECT table_namespace, table_name FROM iceberg_tables")).all()
    assert (*orders.table.split("."),) in [tuple(row) for row in names]
    with sa.create_engine(postgres.url("wap_ledger")).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM wap_run_ledger WHERE run_id = 'pg-first'")).scalar() == 1
    assert not (data_dir / "catalog.db").exists() and not (data_dir / "ledger.db").exists()


def test_publishes_of_different_partitions_at_once_all_land(orders, workers):
    runs = [staged_run(orders, day, f"pg-burst-{day:%d}") for day in DAYS]
    before = {s.snapshot_id for s in tables.load_table(orders.table).snapshots()}

    outcomes = publish_together(workers, runs)

    assert outcomes == {run.run_id: "published" for run in runs}
    table = tables.load_table(orders.table)
    ledger = {row["run_token"]: row for row in Ledger().rows(orders.name)}
    for day, run in zip(DAYS, runs, strict=True):
        live = tables.live_version(table, day)
        assert (live.run_id, live.checksum, live.rows) == (run.run_id, run.checksum, run.rows_out)
        ids = read_partition(orders.table, "order_date", day).column("order_id").to_pylist()
        assert len(ids) == len(set(ids)) == run.rows_out, f"{day}: each order once"
        row = ledger[run.run_token]
        assert (row["status"], row["snapshot_id"], row["checksum"]) == ("published", live.snapshot_id, run.checksum)
    new = [s for s in table.snapshots() if s.snapshot_id not in before]
    assert {s.summary[tables.RUN_TOKEN] for s in new} == {run.run_token for run in runs}, "every publish committed"


def test_two_runs_of_one_partition_at_once_leave_one_winner(orders, workers, landed):
    day = DAYS[1]
    runs = []
    for side in "ab":  # each with an extra order of its own: different from each other and from what is live
        extra = extra_order(landed / "orders" / f"dt={day.isoformat()}", f"pg-{side}", day)
        try:
            runs.append(staged_run(orders, day, f"pg-race-{side}"))
        finally:
            extra.unlink()
    a, b = runs
    live = tables.live_version(tables.load_table(orders.table), day)
    assert a.base_snapshot == b.base_snapshot == live.snapshot_id
    assert len({a.checksum, b.checksum, live.checksum}) == 3

    outcomes = publish_together(workers, [a, b])

    assert sorted(status.split(":")[0] for status in outcomes.values()) == ["published", "superseded"], outcomes
    winner = a if outcomes[a.run_id] == "published" else b
    live = tables.live_version(tables.load_table(orders.table), day)
    assert (live.run_id, live.checksum) == (winner.run_id, winner.checksum)
    ids = read_partition(orders.table, "order_date", day).column("order_id").to_pylist()
    assert len(ids) == len(set(ids)) == winner.rows_out
    statuses = {row["run_id"]: row["status"] for row in Ledger().rows(orders.name, day.isoformat())}
    assert {statuses["pg-race-a"], statuses["pg-race-b"]} == {"published", "superseded"}
