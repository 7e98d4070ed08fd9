"""gold.daily_sales: orders and revenue per day, channel and currency.

Runs once per published silver.orders partition: the silver publish emits an asset
event keyed by the day, and this DAG's partitioned-asset schedule starts a run for
that same day. Recipe: resolve the day -> aggregate the live silver partition with
include/sql/gold_daily_sales.sql and stage -> gate with expectations/gold.daily_sales.json
-> publish the day atomically.
"""

import datetime as dt

from airflow.sdk import PartitionedAssetTimetable, dag

from wap.pipeline import Pipeline, table_asset
from wap.sources import PublishedTable
from wap.tasks import DEFAULT_ARGS, PARTITION_PARAM, audit, publish, quarantine_review, resolve_partition, stage

DAILY_SALES = Pipeline(
    name="gold_daily_sales",
    table="gold.daily_sales",
    sql="gold_daily_sales.sql",
    suite="gold.daily_sales.json",
    sources=(PublishedTable("silver.orders", partition_column="order_date"),),
)


@dag(
    schedule=PartitionedAssetTimetable(assets=table_asset("silver.orders")),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=3,
    params={"partition": PARTITION_PARAM},
    default_args={"owner": "data-platform", **DEFAULT_ARGS},
    tags=["gold", "orders", "write-audit-publish"],
    doc_md=__doc__,
)
def gold_daily_sales():
    partition = resolve_partition(DAILY_SALES)
    staged = stage(DAILY_SALES, partition)
    publish(DAILY_SALES, audit(DAILY_SALES, staged))


gold_daily_sales()
quarantine_review(
    DAILY_SALES, owner="data-platform"
)  # a person releases or discards a quarantined partition, in the UI
