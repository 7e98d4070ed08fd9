"""The quality gate (I3): bad data is quarantined, the live partition stays as it was byte
for byte, the ledger says why, and Airflow does not retry."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from conftest import START, run_dag

DAY = START


def add_landed_events(landing: Path, name: str, events: list[dict]) -> None:
    path = landing / "orders" / f"dt={DAY.isoformat()}" / f"{name}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def order_event(order_id: str, **overrides) -> dict:
    event = {
        "event_id": f"E-{order_id}-0",
        "order_id": order_id,
        "customer_id": "C-999999",
        "event_ts": f"{DAY.isoformat()}T12:00:00Z",
        "status": "placed",
        "amount": 10.0,
        "currency": "EUR",
        "channel": "web",
    }
    return {**event, **overrides}


def live_files(table: str) -> dict[str, str]:
    """Every live data file of the partition with the sha256 of its bytes."""
    from wap import tables

    files = tables.partition_files(tables.load_table(table), "order_date", DAY)
    return {f: hashlib.sha256(Path(f.removeprefix("file://")).read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def good_day(dags, landed, spark):
    states = run_dag(dags["silver_orders"], day=DAY)
    assert states["dag"] == "success", states
    return live_files("silver.orders")


def test_a_warning_is_recorded_and_published(good_day, dags, landed):
    from wap.ledger import Ledger

    add_landed_events(landed, "no-customer", [order_event("O-WARN-1", customer_id=None)])
    states = run_dag(dags["silver_orders"], day=DAY)
    assert states["dag"] == "success", states
    row = Ledger().rows("silver_orders", DAY.isoformat())[-1]
    assert row["status"] == "published"
    findings = json.loads(row["details"])["audit"]["findings"]
    assert [(f["check"], f["column"], f["severity"], f["unexpected_count"]) for f in findings] == [
        ("expect_column_values_to_not_be_null", "customer_id", "warning", 1)
    ]


def test_a_blocking_failure_quarantines_and_keeps_the_live_partition(good_day, dags, landed):
    from wap import tables
    from wap.ledger import Ledger

    before_files = live_files("silver.orders")
    before_version = tables.live_version(tables.load_table("silver.orders"), DAY)

    add_landed_events(
        landed, "negative", [order_event("O-BAD-1", amount=-42.0), order_event("O-BAD-2", currency="XXX")]
    )
    states = run_dag(dags["silver_orders"], day=DAY)

    assert states["dag"] == "failed"
    assert states["audit"] == "failed"
    assert states["publish"] != "success"
    assert states["_tries"]["audit"] == 1, "a gate failure must not be retried"

    # Nothing published: same files, same bytes, same live version.
    assert live_files("silver.orders") == before_files
    assert tables.live_version(tables.load_table("silver.orders"), DAY) == before_version

    row = Ledger().rows("silver_orders", DAY.isoformat())[-1]
    assert row["status"] == "quarantined"
    assert "expect_column_values_to_be_between(amount)" in row["error"]
    assert "expect_column_values_to_be_in_set(currency)" in row["error"]
    findings = {f["check"] + ":" + str(f["column"]): f for f in json.loads(row["details"])["audit"]["findings"]}
    assert findings["expect_column_values_to_be_between:amount"]["unexpected_count"] == 1
    assert findings["expect_column_values_to_be_between:amount"]["sample"] == ["-42.00"]
    assert findings["expect_column_values_to_be_in_set:currency"]["sample"] == ["XXX"]

    # The staged files moved to quarantine, under the run's token and partition.
    quarantine = Path(row["staged_path"].removeprefix("file://"))
    assert "/quarantine/order_date=2024-01-01/run-" in str(quarantine)
    assert list((quarantine / "data").glob("*.parquet"))
    staged = Path(str(quarantine).replace("/quarantine/", "/data/"))
    assert not staged.exists()


def test_contract_names_the_column_and_the_types(spark):
    from wap.audit import check_contract
    from wap.contract import Contract

    contract = Contract(
        version=1, partition_column="d", columns={"id": "string", "amount": "decimal(12,2)", "d": "date"}
    )
    frame = spark.sql("SELECT 'a' AS id, 'ten' AS amount, current_date() AS d, 1 AS surprise")
    messages = sorted((f.severity, f.message) for f in check_contract(frame, contract))
    assert messages == [
        ("blocking", "added column 'surprise' (int): the contract blocks added columns"),
        ("blocking", "column 'amount': expected decimal(12,2), found string"),
    ]
    frame = spark.sql("SELECT 'a' AS id, current_date() AS d")
    assert [f.message for f in check_contract(frame, contract)] == ["missing column 'amount' (expected decimal(12,2))"]
    # A rename shows as a missing column and an added one of the same type: say so.
    frame = spark.sql("SELECT 'a' AS id, CAST(1 AS DECIMAL(12,2)) AS amount_eur, current_date() AS d")
    assert next(f.message for f in check_contract(frame, contract)) == (
        "missing column 'amount' (expected decimal(12,2)); renamed to 'amount_eur'?"
    )
    # Policy `allow`: an added column is a warning, and is not published.
    allowing = Contract(version=1, partition_column="d", columns=contract.columns, on_added_column="allow")
    frame = spark.sql("SELECT 'a' AS id, CAST(1 AS DECIMAL(12,2)) AS amount, current_date() AS d, 1 AS surprise")
    (finding,) = check_contract(frame, allowing)
    assert (finding.severity, finding.column) == ("warning", "surprise")
    assert "not published" in finding.message


def test_an_expectation_that_errors_is_a_failure_not_a_pass(spark):
    from wap.audit import run_suite

    suite = {
        "name": "broken",
        "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}}],
    }
    findings = run_suite(spark.sql("SELECT 1 AS id"), suite["expectations"])
    assert len(findings) == 1
    assert findings[0].severity == "blocking"
    assert findings[0].column == "no_such_column"


class CountedSpark:
    """A runtime's Spark factory that counts the sessions asked for (the real session)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self):
        from wap.spark import get_spark

        self.calls += 1
        return get_spark()


def counted_runtime():
    from conftest import session_runtime

    counter = CountedSpark()
    return dataclasses.replace(session_runtime(), spark_factory=counter), counter


def test_a_passing_run_starts_spark_in_stage_alone(good_day, landed):
    """The compiled checks are measured while staging writes its files: the audit of a
    passing run judges from those values and starts no Spark session, nor does the publish."""
    import datetime as dt

    from silver_orders import ORDERS

    from wap import steps

    day = DAY + dt.timedelta(days=1)
    started = {}
    runtime, counter = counted_runtime()
    staged = steps.stage(runtime, ORDERS, day, "manual__counted", 1)
    started["stage"] = counter.calls
    assert staged.measured is not None and staged.rows_out is None, "stage measures; the audit decides"
    runtime, counter = counted_runtime()
    audited = steps.audit(runtime, ORDERS, staged)
    started["audit"] = counter.calls
    runtime, counter = counted_runtime()
    assert steps.publish(runtime, ORDERS, audited)["status"] == "published"
    started["publish"] = counter.calls
    assert started == {"stage": 1, "audit": 0, "publish": 0}

    # Measured again from the files, as a run staged under another suite is: the same verdict,
    # the same row count and checksum as the values observed while writing.
    runtime, counter = counted_runtime()
    restaged = steps.stage(runtime, ORDERS, day, "manual__remeasured", 1)
    stale = dataclasses.replace(restaged, measured={**restaged.measured, "suite": "an-older-suite"})
    again = steps.audit(runtime, ORDERS, stale)
    assert counter.calls > 1, "the files were read again"
    assert (again.rows_out, again.checksum) == (audited.rows_out, audited.checksum)
    assert [a["success"] for a in again.assertions] == [a["success"] for a in audited.assertions]
