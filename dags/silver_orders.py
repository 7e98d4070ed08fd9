"""silver.orders: each day's landed order events, cleaned and deduplicated, one row per order.

Recipe: resolve the day -> wait for its landed files -> transform landed events with
include/sql/silver_orders.sql and stage -> gate with expectations/silver.orders.json ->
publish the day atomically -> re-run earlier days that got late records in this day's folder.
"""

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag

from wap.pipeline import Pipeline
from wap.sources import LandedFiles
from wap.tasks import (
    DEFAULT_ARGS,
    PARTITION_PARAM,
    audit,
    publish,
    quarantine_review,
    reprocess_late,
    resolve_partition,
    stage,
    wait_for_data,
)

ORDERS = Pipeline(
    name="silver_orders",
    table="silver.orders",
    sql="silver_orders.sql",
    suite="silver.orders.json",
    sources=(
        LandedFiles(
            dataset="orders",
            schema=(
                "event_id STRING, order_id STRING, customer_id STRING, event_ts TIMESTAMP, "
                "status STRING, amount DECIMAL(12,2), currency STRING, channel STRING"
            ),
            format="json",
            late_folders=1,
            event_time="event_ts",  # a record landed on day F must have happened on F or F - 1
            max_rejected_share=0.01,  # up to 1% unusable records: kept in quarantine, reported, run goes on
        ),
    ),
)


@dag(
    # Daily intervals: the run for day D starts at D+1 00:00 UTC with logical_date = D.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=3,
    params={"partition": PARTITION_PARAM},
    default_args={"owner": "data-platform", **DEFAULT_ARGS},
    tags=["silver", "orders", "write-audit-publish"],
    doc_md=__doc__,
)
def silver_orders():
    partition = resolve_partition(ORDERS)
    staged = stage(ORDERS, partition)
    wait_for_data(ORDERS, partition) >> staged  # the day's files have landed (deferred wait)
    audited = audit(ORDERS, staged)
    reprocess_late(audited, after=publish(ORDERS, audited))  # late records for earlier days: run those again


silver_orders()
quarantine_review(ORDERS, owner="data-platform")  # a person releases or discards a quarantined partition, in the UI
