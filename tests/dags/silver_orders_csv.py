"""Test-only: silver_orders with its orders landed as CSV files (the bad-input corpus's CSV cases).

Same table, SQL and suite as dags/silver_orders.py; only the source's format differs.
"""

from airflow.sdk import dag

from wap.pipeline import Pipeline
from wap.sources import LandedFiles
from wap.tasks import DEFAULT_ARGS, PARTITION_PARAM, audit, publish, resolve_partition, stage

ORDERS_CSV = Pipeline(
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
            format="csv",
            event_time="event_ts",
            max_rejected_share=0.01,
        ),
    ),
)


@dag(schedule=None, params={"partition": PARTITION_PARAM}, default_args=DEFAULT_ARGS, tags=["test"])
def silver_orders_csv():
    partition = resolve_partition()
    publish(ORDERS_CSV, audit(ORDERS_CSV, stage(ORDERS_CSV, partition)))


silver_orders_csv()
