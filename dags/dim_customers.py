"""dim.customers: the customer dimension, one row per customer, kept up to date every hour.

Recipe: resolve the hour -> extract the customers changed in that hour from the shop's
PostgreSQL database (JDBC, by updated_at) and shape them with include/sql/dim_customers.sql
-> merge them into the live dimension by customer_id (newest updated_at wins) and stage the
result -> gate with expectations/dim.customers.json -> publish the new version atomically.

Every run merges one hour; re-running an hour, or running hours out of order in a backfill,
gives the same dimension. Runs of this DAG publish one at a time (max_active_runs=1): each
builds on the version the previous one published.
"""

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag

from wap.partition import HOURLY
from wap.pipeline import Pipeline
from wap.publish import Merge
from wap.sources import DatabaseTable
from wap.tasks import DEFAULT_ARGS, HOURLY_PARTITION_PARAM, audit, publish, quarantine_review, resolve_partition, stage

CUSTOMERS = Pipeline(
    name="dim_customers",
    table="dim.customers",
    sql="dim_customers.sql",
    suite="dim.customers.json",
    sources=(DatabaseTable(conn_id="shop_db", table="public.customers", updated_at="updated_at"),),
    grain=HOURLY,
    publish=Merge(key="customer_id", newest="updated_at"),
)


@dag(
    # Hourly intervals: the run for hour H starts at H+1:10 UTC, once the hour's transactions have committed.
    schedule=CronDataIntervalTimetable("10 * * * *", timezone="UTC"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    params={"partition": HOURLY_PARTITION_PARAM},
    default_args={"owner": "data-platform", **DEFAULT_ARGS},
    tags=["dimension", "customers", "write-audit-publish"],
    doc_md=__doc__,
)
def dim_customers():
    partition = resolve_partition(CUSTOMERS)
    publish(CUSTOMERS, audit(CUSTOMERS, stage(CUSTOMERS, partition)))


dim_customers()
quarantine_review(CUSTOMERS, owner="data-platform")  # a person releases or discards a quarantined partition, in the UI
