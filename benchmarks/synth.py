"""Synthetic data made by Spark, at any size: silver-shaped rows, and landed order events.

Spark generates it (spark.range), so 10M rows take seconds, not the minutes a Python
generator would. Same shapes as the example pipeline, so the real SQL and suite apply.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F


def _pick(values: tuple[str, ...], index: Column) -> Column:
    return F.element_at(F.array(*[F.lit(v) for v in values]), (index % len(values) + 1).cast("int"))


def silver_rows(spark: SparkSession, rows: int, day: dt.date, variant: int = 0) -> DataFrame:
    """`rows` rows of silver.orders for `day`, valid against its contract and suite.

    `variant` shifts every row's amount by a cent per step (wrapping within its range): the
    same keys, shape and sizes, different content. Repeated publishes need it: a run whose
    checksum equals the live partition's is `skipped`, not published.
    """
    start = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())
    oid = F.col("id")
    return spark.range(rows).select(
        F.format_string("O-%s-%09d", F.lit(day.strftime("%Y%m%d")), oid).alias("order_id"),
        F.lit(day).alias("order_date"),
        F.format_string("C-%07d", (oid * 7919) % 1_000_003).alias("customer_id"),
        _pick(("placed", "paid", "shipped", "cancelled"), oid * 31).alias("status"),
        ((oid * 37 + variant) % 49_500 / 100 + 5).cast("decimal(12,2)").alias("amount"),
        _pick(("EUR", "USD", "GBP"), oid * 13).alias("currency"),
        _pick(("web", "app", "store", "unknown"), oid * 17).alias("channel"),
        F.timestamp_seconds(F.lit(start) + (oid * 11) % 72_000).alias("placed_ts"),
        F.timestamp_seconds(F.lit(start) + (oid * 11) % 72_000 + 600).alias("updated_ts"),
        (oid % 3 + 1).alias("event_count"),
    )


def landed_events(spark: SparkSession, start: dt.date, days: int, orders_per_day: int, out: str) -> int:
    """Write order events as JSON lines under `out/orders/dt=<landing day>/`; return the event count.

    Like the sample generator: 1-3 events per order on its day, ~4% re-sent twice,
    ~5% landing a day late, ~3% without a channel.
    """
    epoch = int(dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC).timestamp())
    n = F.col("id")
    day = (n / orders_per_day).cast("int")
    orders = spark.range(days * orders_per_day).select(
        n,
        day.alias("day"),
        F.format_string("O-%09d", n).alias("order_id"),
        F.format_string("C-%07d", (n * 7919) % 1_000_003).alias("customer_id"),
        _pick(("EUR", "USD", "GBP"), n * 13).alias("currency"),
        F.when((n * 7) % 100 < 3, F.lit(None)).otherwise(_pick(("web", "app", "store"), n * 17)).alias("channel"),
        ((n * 37) % 49_500 / 100 + 5).cast("decimal(12,2)").alias("amount"),
        (F.lit(epoch) + day * 86_400 + (n * 11) % 72_000).alias("at"),
        # 10% placed+cancelled, 35% placed+paid, 35% placed+paid+shipped, 20% placed only
        F.when(n % 20 < 2, F.array(F.lit("placed"), F.lit("cancelled")))
        .when(n % 20 < 9, F.array(F.lit("placed"), F.lit("paid")))
        .when(n % 20 < 16, F.array(F.lit("placed"), F.lit("paid"), F.lit("shipped")))
        .otherwise(F.array(F.lit("placed")))
        .alias("steps"),
    )
    events = orders.select("*", F.posexplode("steps").alias("step", "status")).select(
        F.format_string("E-%s-%d", "order_id", "step").alias("event_id"),
        "order_id",
        "customer_id",
        F.timestamp_seconds(F.col("at") + F.col("step") * 900).alias("event_ts"),
        "status",
        F.when(F.col("step") == 0, F.col("amount")).alias("amount"),
        "currency",
        "channel",
        F.date_add(F.lit(start), F.col("day") + F.when(F.xxhash64("order_id", "step") % 20 == 0, 1).otherwise(0)).alias(
            "dt"
        ),
        F.when(F.xxhash64("order_id", "step", F.lit("dup")) % 25 == 0, 2).otherwise(1).alias("copies"),
    )
    events = events.select("*", F.explode(F.sequence(F.lit(1), F.col("copies"))).alias("copy")).drop("copies", "copy")
    events.write.mode("overwrite").partitionBy("dt").json(f"{out.rstrip('/')}/orders")
    return spark.read.json(f"{out.rstrip('/')}/orders").count()
