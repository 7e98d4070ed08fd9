"""The PostgreSQL JDBC driver reaches the shared Spark session (`make` installs it, wap.settings
finds it): an updated_at window read through `spark.read.format("jdbc")` returns exactly the
rows sample_data.customers wrote in that hour, from a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from pg import PostgresServer

from sample_data import customers
from wap.settings import load_settings

HOUR = dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_hours(postgres) -> tuple[list[dict], list[dict]]:
    url = postgres.url()
    customers.create_table(url)
    customers.create_table(url)  # idempotent
    return customers.write_hour(url, HOUR), customers.write_hour(url, HOUR + dt.timedelta(hours=1))


def test_the_generator_writes_valid_hours(postgres, two_hours):
    first, second = two_hours
    assert len(first) == 20, "the first hour has no earlier customers to change"
    assert len(second) == 25
    for hour, rows in zip((HOUR, HOUR + dt.timedelta(hours=1)), two_hours, strict=True):
        assert all(hour <= row["updated_at"] < hour + dt.timedelta(hours=1) for row in rows)
        assert len({row["updated_at"] for row in rows}) == len(rows)
        assert {row["country"] for row in rows} <= set(customers.COUNTRIES)
        assert {row["tier"] for row in rows} <= set(customers.TIERS)
    before = {row["customer_id"]: row for row in first}
    changed = [row for row in second if row["customer_id"] in before]
    assert len(changed) == 5
    for row in changed:
        old = before[row["customer_id"]]
        assert row["name"] == old["name"]
        assert any(row[column] != old[column] for column in customers.CHANGEABLE)
    table = customers.snapshot(postgres.url())
    assert len(table) == 40
    assert all(table[row["customer_id"]] == row for row in second)
    with pytest.raises(ValueError, match="write each hour once"):
        customers.write_hour(postgres.url(), HOUR)


def test_the_generator_is_deterministic(postgres, two_hours):
    with sa.create_engine(postgres.url(), isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text("CREATE DATABASE again"))
    url = postgres.url("again")
    customers.create_table(url)
    assert (customers.write_hour(url, HOUR), customers.write_hour(url, HOUR + dt.timedelta(hours=1))) == two_hours


def test_spark_reads_one_hour_through_jdbc(spark, postgres, two_hours):
    assert load_settings().jdbc_jars, "no JDBC driver: `make .venv/jars/postgresql.jar` installs it"
    start, end = HOUR + dt.timedelta(hours=1), HOUR + dt.timedelta(hours=2)
    frame = (
        spark.read.format("jdbc")
        .option("url", f"jdbc:postgresql://127.0.0.1:{postgres.port}/postgres")
        .option("user", "postgres")
        .option("driver", "org.postgresql.Driver")
        .option(
            "query",
            "SELECT customer_id, name, email, country, tier, updated_at FROM public.customers"
            f" WHERE updated_at >= '{start.isoformat()}' AND updated_at < '{end.isoformat()}'",
        )
        .load()
    )
    # collect() gives naive local times; astimezone reads them as such.
    read = [{**row.asDict(), "updated_at": row.updated_at.astimezone(dt.UTC)} for row in frame.collect()]
    assert sorted(read, key=lambda row: row["customer_id"]) == sorted(two_hours[1], key=lambda row: row["customer_id"])
