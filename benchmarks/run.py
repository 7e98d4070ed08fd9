"""What the write-audit-publish pattern costs, measured against its baselines in one run.

    make bench          # full run (tens of minutes on 2 cores); writes benchmarks/results/
    make bench-quick    # the same code on tiny sizes (what the test suite runs)

Every figure is printed as a ratio against a baseline measured in the same run, and
written to `<out>/results.json`, `<out>/results.md` and `<out>/publish_sweep.png`.
Times are medians of `repeats` runs.

Every timed publish commits different content from what is live, and the run fails
(`NoCommitError`) unless each one made a new snapshot: an unchanged re-run is `skipped`
(no commit), so repeating identical rows would time something that publishes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "plugins"), str(HERE), str(REPO / "dags")]

from wap.embedded import prepare_airflow  # noqa: E402
from wap.runtime import Runtime  # noqa: E402

DAY = dt.date(2024, 1, 1)
# Run ids unique to this invocation: a reused --data-dir must not find an earlier run's
# attempt already published (steps.publish then commits nothing).
INVOCATION = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
# Content variants of the synthetic rows (synth.silver_rows), a new one per publish in this
# invocation, so no publish repeats what is live.
_VARIANTS = itertools.count(1)


def fresh_variant() -> int:
    return next(_VARIANTS)


FULL = {
    "sweep": [10_000, 100_000, 1_000_000, 10_000_000],
    "upsert_max": 100_000,  # pyiceberg upsert joins in Python: ~11 s per 100k rows here, so bounded
    "wap": [10_000, 1_000_000, 5_000_000],
    "wap_compound": [5_000_000],  # the example suite and a compound uniqueness check
    "backfill_days": 30,
    "backfill_orders": 1_000_000,
    "airflow_days": 12,  # Airflow's cost per run: small days, half with each lineage mode
    "airflow_orders": 500,
    # Range runs: days per range, orders per day (each size a range of its own days).
    "range_days": 30,
    "range_orders": [500, 2_500, 50_000],
    # The real scheduler (`--only scheduler`): a year of sample days as range runs.
    "scheduler_days": 365,
    "scheduler_orders": 500,
    "scheduler_batch": 31,
    "scheduler_small_days": 3,  # single-day runs timed after the year, one at a time
    "memory": [1_000_000, 10_000_000],
    "repeats": 3,
    "swap_repeats": 9,  # cheap, and short enough to be noisy
    "parse_repeats": 7,
}
QUICK = {
    "sweep": [1_000, 10_000],
    "upsert_max": 10_000,
    "wap": [5_000],
    "wap_compound": [5_000],
    "backfill_days": 2,
    "backfill_orders": 300,
    "airflow_days": 2,
    "airflow_orders": 200,
    "range_days": 3,
    "range_orders": [200],
    "memory": [1_000, 5_000],
    "repeats": 1,
    "swap_repeats": 2,
    "parse_repeats": 3,
}
SPARK_TASKS_PER_RUN = 1  # tasks of a passing single-partition run that start a Spark session
TARGETS = {
    "publish_10M_vs_10k": 1.5,
    "wap_vs_bare_write": 1.2,  # at 1M rows and more
    "wap_vs_bare_write_small": 1.5,  # below 1M rows (10k)
    "gate_rows_per_s": 2_000_000,  # at 5M rows
    "backfill_vs_single_pass": 3.0,
    "airflow_outside_steps_s": 1.5,
    "range_vs_single_pass": 1.5,
    "driver_rss_10M_vs_1M": 1.3,
    "dag_parse_vs_minimal": 1.5,
    "scheduler_small_day_s": 15.0,  # real scheduler, shared Spark Connect: queued -> published
    "check_cold_s": 20.0,  # `wap check` of a pipeline in a fresh process, wall time
}


def median_seconds(
    action: Callable[[int], Any], repeats: int, check: Callable[[int, Any], None] | None = None
) -> float:
    """Median seconds of `action(i)` for i in range(repeats); `check(i, result)` runs untimed after each."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        result = action(i)
        times.append(time.perf_counter() - start)
        if check is not None:
            check(i, result)
    return statistics.median(times)


class NoCommitError(RuntimeError):
    """A timed publish committed nothing (skipped, or found already published): not a publish."""


def snapshot_ids(identifier: str) -> set[int]:
    """Every snapshot id of the table (none if it does not exist yet)."""
    from pyiceberg.exceptions import NoSuchTableError

    from wap import tables

    try:
        return {s.snapshot_id for s in tables.load_table(identifier).snapshots()}
    except NoSuchTableError:
        return set()


class CommitCheck:
    """Fails the benchmark unless each publish it is shown made a new commit to the table.

    A commit: status `published`, and a snapshot id that the table did not have before and
    that is now its current snapshot. `committed` lists them, for the results.
    """

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        self.seen = snapshot_ids(identifier)
        self.committed: list[int] = []

    def __call__(self, what: str, status: str, snapshot_id: int | None) -> int:
        from wap import tables

        current = tables.load_table(self.identifier).current_snapshot()
        current_id = current and current.snapshot_id
        if status != "published" or snapshot_id is None or snapshot_id in self.seen or snapshot_id != current_id:
            raise NoCommitError(
                f"{what}: status {status!r}, snapshot {snapshot_id} (table {self.identifier} current {current_id}, "
                f"{'already seen' if snapshot_id in self.seen else 'new'}): a timed publish must commit a new snapshot"
            )
        self.seen = snapshot_ids(self.identifier)  # a swap commits two (the delete, then the add)
        self.committed.append(snapshot_id)
        return snapshot_id

    def current(self, what: str) -> int:
        """Check the table's current snapshot: for writers that return no snapshot id (pyiceberg)."""
        from wap import tables

        current = tables.load_table(self.identifier).current_snapshot()
        return self(what, "published", current and current.snapshot_id)


def say(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- 1 + 7: publish sweep, files
def bench_publish_sweep(cfg: dict, spark, pipeline) -> dict:
    """Publish time per size, for the metadata-only swap and for the copying alternatives."""
    from pyiceberg.expressions import EqualTo
    from synth import silver_rows

    from wap import staging, tables

    rows_out = []
    for size in cfg["sweep"]:
        # A fresh table per size: a commit's cost grows with the table's metadata (its
        # snapshot history), which must not grow along the sweep.
        swap_table = f"bench.swap_{size}"
        table = tables.ensure_table(swap_table, pipeline.contract)
        # Two copies of different content (same keys and sizes): each timed publish puts in
        # the one that is not live, so every repetition replaces the partition's content.
        copies = [
            staging.write_staged(
                silver_rows(spark, size, DAY, fresh_variant()),
                staging.partition_dir(table.location(), "data", "order_date", DAY, f"sweep-{size}-{c}"),
            )
            for c in "ab"
        ]
        swaps = CommitCheck(swap_table)

        def swap(i: int, copies=copies, swap_table=swap_table) -> int:
            return tables.swap_partition(swap_table, "order_date", DAY, copies[(i + 1) % 2], {})

        swaps(f"swap {size:,} rows, first publish", "published", swap(-1))  # into an empty table: not a swap, not timed
        swaps.committed.clear()
        publish = median_seconds(
            swap,
            cfg["swap_repeats"],
            lambda i, sid, s=swaps, n=size: s(f"swap {n:,} rows, repetition {i + 1}", "published", sid),
        )
        staged_dirs = [c[0].rsplit("/", 1)[0] for c in copies]
        rewrite_dir = f"{tempfile.gettempdir()}/wap-bench-rewrite"

        def spark_rewrite(i: int, staged_dirs=staged_dirs) -> None:
            # What a user without a table format does: overwrite the partition's files.
            source = staged_dirs[(i + 1) % 2]  # the same alternation as the swap
            spark.read.parquet(source).write.mode("overwrite").partitionBy("order_date").parquet(rewrite_dir)

        rewrite = median_seconds(spark_rewrite, cfg["repeats"])

        copy_name = f"bench.copy_{size}"
        copy_table = tables.ensure_table(copy_name, pipeline.contract)
        arrows = None
        if size <= cfg["upsert_max"] or size <= 1_000_000:
            arrows = [spark.read.parquet(d).toArrow() for d in staged_dirs]
        overwrite = upsert = None
        overwrites = CommitCheck(copy_name)
        upserts = None
        if arrows is not None:

            def iceberg_overwrite(i: int, arrows=arrows, copy_table=copy_table) -> None:
                # pyiceberg writing the rows itself: a copy of the data per publish.
                copy_table.overwrite(arrows[(i + 1) % 2], overwrite_filter=EqualTo("order_date", DAY.isoformat()))

            with warnings.catch_warnings():  # the first write deletes nothing; pyiceberg says so
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                iceberg_overwrite(-1)  # like the swap: the first write into an empty table is not timed
            overwrites.current(f"pyiceberg overwrite {size:,} rows, first write")
            overwrites.committed.clear()
            overwrite = median_seconds(
                iceberg_overwrite,
                cfg["repeats"],
                lambda i, _, c=overwrites, n=size: c.current(f"pyiceberg overwrite {n:,} rows, repetition {i + 1}"),
            )
        if size <= cfg["upsert_max"] and arrows is not None:
            upsert_name = f"bench.upsert_{size}"
            upsert_table = tables.ensure_table(upsert_name, pipeline.contract)
            upsert_table.append(arrows[0])  # the table already loaded; then upserts of the same keys
            upserts = CommitCheck(upsert_name)

            def iceberg_upsert(i: int, arrows=arrows, upsert_table=upsert_table) -> Any:
                # Every row's amount differs from the live one: each upsert updates all rows
                # (identical rows would be found unchanged and nothing committed).
                return upsert_table.upsert(arrows[(i + 1) % 2], join_cols=["order_id"])

            def upserted(i: int, result: Any, c=upserts, n=size) -> None:
                what = f"pyiceberg upsert {n:,} rows, repetition {i + 1}"
                if result.rows_updated != n or result.rows_inserted:
                    raise NoCommitError(f"{what}: updated {result.rows_updated}, inserted {result.rows_inserted}")
                c.current(what)

            upsert = median_seconds(iceberg_upsert, cfg["repeats"], upserted)
        sizes = [Path(f.removeprefix("file://")).stat().st_size for f in copies[0]]
        row = {
            "rows": size,
            "publish_s": publish,
            "spark_rewrite_s": rewrite,
            "iceberg_overwrite_s": overwrite,
            "iceberg_upsert_s": upsert,
            "files": len(sizes),
            "file_mb_min": min(sizes) / 2**20,
            "file_mb_max": max(sizes) / 2**20,
            "rows_per_file_max": staging.MAX_RECORDS_PER_FILE,
            # The snapshot each timed repetition committed (checked new, one per repetition).
            "commits": {
                "swap": swaps.committed,
                "iceberg_overwrite": overwrites.committed if overwrite is not None else [],
                "iceberg_upsert": upserts.committed if upserts is not None else [],
            },
        }
        rows_out.append(row)
        say(
            f"  publish {size:>11,} rows: swap {publish:.3f}s  spark rewrite {rewrite:.2f}s  "
            f"iceberg overwrite {overwrite if overwrite is None else round(overwrite, 2)}s  "
            f"upsert {upsert if upsert is None else round(upsert, 2)}s  files {len(sizes)}"
        )
    return {"sweep": rows_out, "ratio": rows_out[-1]["publish_s"] / rows_out[0]["publish_s"]}


# ---------------------------------------------------------------- 2 + 3: WAP vs bare write, gate
def run_wap(pipeline, rows: int, variant: int, run_id: str, try_number: int) -> dict[str, Any]:
    """One stage + audit + publish of `rows` synthetic rows in content `variant`; publish's result."""
    from wap import steps

    os.environ["BENCH_SYNTH_ROWS"] = str(rows)
    os.environ["BENCH_SYNTH_VARIANT"] = str(variant)
    staged = steps.stage(Runtime.from_env(), pipeline, DAY, run_id, try_number)
    staged = steps.audit(Runtime.from_env(), pipeline, staged)
    return {**steps.publish(Runtime.from_env(), pipeline, staged), "run_token": staged.run_token}


def bench_wap_vs_bare(cfg: dict, spark) -> dict:
    """Stage + audit + publish against a plain write of the same rows into the partition
    folder, with the example suite and with that suite plus a compound uniqueness check."""
    from bench_pipeline import bench_pipeline

    sizes = _wap_vs_bare(cfg["wap"], cfg, spark, bench_pipeline())
    compound = _wap_vs_bare(cfg["wap_compound"], cfg, spark, bench_pipeline(compound=True))
    return {"sizes": sizes, "compound": compound}


def _wap_vs_bare(sizes: list[int], cfg: dict, spark, pipeline) -> list[dict]:
    from synth import silver_rows

    from wap.ledger import Ledger

    results = []
    for size in sizes:
        bare_dir = f"{tempfile.gettempdir()}/wap-bench-bare/order_date={DAY}"
        run_id = f"bench-wap-{INVOCATION}-{size}"
        check = CommitCheck(pipeline.table)
        # Untimed: publish this size once, so every timed repetition replaces a live partition
        # of its size (a re-run's swap), in other content than the live one.
        check(
            f"write-audit-publish {size:,} rows, untimed first",
            **published(run_wap(pipeline, size, fresh_variant(), run_id, 1)),
        )
        check.committed.clear()

        phases: list[dict] = []
        publishes: list[dict] = []
        bare_times: list[float] = []
        wap_times: list[float] = []
        # Interleaved, each repetition in new content (the bare write the same rows): the
        # other workers on this machine then slow both alike.
        for i in range(cfg["repeats"]):
            variant = fresh_variant()
            start = time.perf_counter()
            silver_rows(spark, size, DAY, variant).write.mode("overwrite").parquet(bare_dir)
            bare_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = run_wap(pipeline, size, variant, run_id, i + 2)
            wap_times.append(time.perf_counter() - start)
            check(f"write-audit-publish {size:,} rows, repetition {i + 1}", **published(result))
            publishes.append({"status": result["status"], "snapshot_id": result["snapshot_id"]})
            (row,) = [r for r in Ledger().rows(pipeline.name) if r["run_token"] == result["run_token"]]
            phases.append(json.loads(row["details"]))
        bare_s = statistics.median(bare_times)
        wap_s = statistics.median(wap_times)
        # The gate's own work: the audit step (a verdict from the values measured while
        # staging wrote; GX only on a failure) and the stage's uniqueness passes over the
        # written key columns. What observing costs the write is in the ratio to the bare write.
        gate_s = statistics.median(sum(p["seconds_audit"].values()) + p["seconds_stage"]["measure"] for p in phases)
        split = {
            f"{step}.{phase}": statistics.median(p[f"seconds_{step}"][phase] for p in phases)
            for step in ("stage", "audit", "publish")
            for phase in phases[0][f"seconds_{step}"]
        }
        results.append(
            {
                "rows": size,
                "bare_write_s": bare_s,
                "wap_s": wap_s,
                "ratio": wap_s / bare_s,
                "gate_s": gate_s,
                "gate_rows_per_s": size / gate_s,
                "split_s": split,
                # Each repetition's seconds, interleaved: shows how noisy the shared machine was.
                "bare_write_runs_s": bare_times,
                "wap_runs_s": wap_times,
                "publishes": publishes,  # each timed repetition's publish: all `published`, new snapshots
            }
        )
        say(
            f"  {pipeline.name} {size:>11,} rows: bare write {bare_s:.2f}s, write-audit-publish {wap_s:.2f}s "
            f"= {wap_s / bare_s:.2f}x; gate {size / gate_s:,.0f} rows/s; split {split}"
        )
    return results


def published(result: dict[str, Any]) -> dict[str, Any]:
    """`CommitCheck`'s arguments from a `steps.publish` result."""
    return {"status": result["status"], "snapshot_id": result["snapshot_id"]}


# ---------------------------------------------------------------- 4: backfill through Airflow
def bench_backfill(cfg: dict, spark, data_dir: Path) -> dict:
    from synth import landed_events

    from wap import lineage
    from wap.ledger import Ledger
    from wap.settings import load_settings

    days, orders = cfg["backfill_days"], cfg["backfill_orders"]
    landing = load_settings().landing_dir
    events = landed_events(spark, DAY, days, orders, str(landing))
    say(f"  landed {events:,} events for {days} days x {orders:,} orders")

    # Ledger and lineage time: wrap the calls (in-process, so the wrappers see them).
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

    spent = {"ledger": 0.0, "lineage": 0.0}
    patched = [(Ledger, m, "ledger") for m in ("start", "update", "reconcile", "rows")]
    patched += [(lineage, "record", "lineage"), (OpenLineageAdapter, "emit", "lineage")]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]

    def timed(original: Callable, bucket: str) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[bucket] += time.perf_counter() - start

        return wrapper

    for (owner, name, bucket), (_, _, original) in zip(patched, originals, strict=True):
        setattr(owner, name, timed(original, bucket))
    try:
        per_day = run_backfill(days, spent)
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    for entry in per_day:
        named = sum(entry[k] for k in ("spark_session", "read", "transform", "audit", "publish", "ledger", "lineage"))
        entry["airflow_and_other"] = max(entry["wall_s"] - named, 0.0)

    # The floor: one Spark job over all days at once, same logic, no gate, no ledger.
    floor_dir = f"{tempfile.gettempdir()}/wap-bench-floor"

    def single_pass(_: int) -> None:
        single_pass_write(spark, landing, DAY, days, floor_dir)

    floor_s = median_seconds(single_pass, 1 if days > 5 else cfg["repeats"])
    cold_start_s = cold_spark_start(cfg)
    connect_start_s = connect_session_start(cfg)
    total = sum(d["wall_s"] for d in per_day)
    # Deployed with one process per task (LocalExecutor/Celery), the stage starts a session
    # (a passing audit starts none: tests/test_gate.py): a local one costs a cold JVM start,
    # a shared Spark Connect server only a client connection.
    cold_total = total + days * SPARK_TASKS_PER_RUN * cold_start_s
    connect_total = total + days * SPARK_TASKS_PER_RUN * connect_start_s
    split = {
        k: statistics.median(d[k] for d in per_day)
        for k in per_day[0]
        if k not in ("day", "rows", "status", "snapshot_id")
    }
    say(
        f"  backfill {days} days: {total:.1f}s in Airflow vs single pass {floor_s:.1f}s = {total / floor_s:.2f}x; "
        f"with a cold session per Spark task {cold_total / floor_s:.2f}x (cold start {cold_start_s:.1f}s); "
        f"with a shared Spark Connect server {connect_total / floor_s:.2f}x (connect {connect_start_s:.2f}s)"
    )
    return {
        "days": days,
        "orders_per_day": orders,
        "events": events,
        "total_s": total,
        "per_partition_s": total / days,
        "single_pass_s": floor_s,
        "ratio": total / floor_s,
        "cold_spark_start_s": cold_start_s,
        "ratio_cold_session_per_task": cold_total / floor_s,
        "connect_session_start_s": connect_start_s,
        "ratio_shared_spark_connect": connect_total / floor_s,
        "median_split_s": split,
        "per_day": per_day,
    }


def run_backfill(
    days: int, spent: dict[str, float], first: dt.date = DAY, before_each: Callable[[int], None] | None = None
) -> list[dict]:
    """Run the silver DAG for each day from `first`, as a backfill would; time each run and
    its phases. `before_each(n)` is called before the n-th day's run."""
    from airflow.dag_processing.dagbag import DagBag
    from silver_orders import ORDERS

    from wap.ledger import Ledger

    check = CommitCheck(ORDERS.table)
    per_day = []
    for n in range(days):
        day = first + dt.timedelta(days=n)
        if before_each is not None:
            before_each(n)
        dag = DagBag(str(REPO / "dags" / "silver_orders.py")).dags["silver_orders"]
        before = dict(spent)
        start = time.perf_counter()
        run = dag.test(logical_date=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
        wall = time.perf_counter() - start
        if "success" not in str(run.state):
            raise RuntimeError(f"backfill day {day} failed: {run.state}")
        # This run's own attempt, not an earlier run's: it must have committed (a skipped
        # day would be a backfill that published nothing).
        mine = [r for r in Ledger().rows(ORDERS.name, day.isoformat()) if r["run_id"] == run.run_id]
        if not mine:
            raise NoCommitError(f"backfill day {day}: no ledger row for run {run.run_id}")
        row = mine[-1]
        check(f"backfill day {day}", row["status"], row["snapshot_id"])
        details = json.loads(row["details"])
        per_day.append(
            {
                "day": day.isoformat(),
                "wall_s": wall,
                "status": row["status"],
                "snapshot_id": row["snapshot_id"],
                "rows": row["rows_out"],
                "spark_session": details["seconds_stage"]["spark_session"],
                "read": details["seconds_stage"]["read"],
                "transform": details["seconds_stage"]["transform_write"] + details["seconds_stage"].get("measure", 0),
                "audit": sum(details["seconds_audit"].values()),
                "publish": details["seconds_publish"]["commit"],
                "ledger": spent["ledger"] - before["ledger"],
                "lineage": spent["lineage"] - before["lineage"],
            }
        )
        say(f"  backfill {day}: {wall:.1f}s ({row['rows_out']:,} rows)")
    return per_day


# ---------------------------------------------------------------- 4d: Airflow's cost per run
def bench_airflow(cfg: dict, spark, data_dir: Path) -> dict:
    """What the embedded runner (`dag.test`) costs a run of a small day outside its steps
    (wall time minus the stage, audit and publish phases the ledger records), with the
    OpenLineage provider emitting from a thread of the task (this repository's setting) and,
    day by day interleaved, from a forked copy the task waits for (the provider's default)."""
    from airflow.providers.openlineage import conf as lineage_conf
    from synth import landed_events

    from wap.settings import load_settings

    days, orders = cfg["airflow_days"], cfg["airflow_orders"]
    first = DAY + dt.timedelta(days=400)  # days no other section runs
    landed_events(spark, first, days, orders, str(load_settings().landing_dir))
    modes = ["thread", "fork"]
    previous = os.environ.get("AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD")
    # The provider caches its settings (not under pytest, where it has no cache_clear).
    forget = getattr(lineage_conf.execute_in_thread, "cache_clear", lambda: None)

    def mode_of(n: int) -> None:
        os.environ["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = str(modes[n % 2] == "thread")
        forget()

    try:
        per_day = run_backfill(days, {"ledger": 0.0, "lineage": 0.0}, first, mode_of)
    finally:
        os.environ["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = previous or "True"
        forget()
    outside: dict[str, list[float]] = {mode: [] for mode in modes}
    for n, entry in enumerate(per_day):
        steps_s = sum(entry[k] for k in ("spark_session", "read", "transform", "audit", "publish"))
        outside[modes[n % 2]].append(entry["wall_s"] - steps_s)
    medians = {mode: statistics.median(values) for mode, values in outside.items()}
    say(
        f"  Airflow outside the steps, per run of {orders:,} orders: "
        + ", ".join(f"{mode} {value:.2f}s" for mode, value in medians.items())
    )
    return {
        "days": days,
        "orders_per_day": orders,
        "outside_steps_s": medians["thread"],
        "outside_steps_fork_s": medians["fork"],
        "ratio_fork_vs_thread": medians["fork"] / medians["thread"],
        "per_day": [{**entry, "lineage_mode": modes[n % 2]} for n, entry in enumerate(per_day)],
    }


# ---------------------------------------------------------------- 4b: range runs
def single_pass_write(spark, landing: Path, first: dt.date, days: int, out: str) -> None:
    """The floor: silver's logic over every day at once, in one Spark job (no gate, no ledger)."""
    from silver_orders import ORDERS

    sql = (HERE / "single_pass_orders.sql").read_text()
    folders = [str(landing / "orders" / f"dt={first + dt.timedelta(days=i)}") for i in range(days + 1)]
    present = [f for f in folders if Path(f).is_dir()]
    spark.read.schema(ORDERS.sources[0].schema).json(present).createOrReplaceTempView("landed_orders")
    spark.sql(sql).write.mode("overwrite").partitionBy("order_date").parquet(out)


def _catalog_of(folder: Path) -> dict[str, str]:
    """Settings (as environment variables) of a catalog and ledger of their own in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "WAP_CATALOG_URI": f"sqlite:///{folder / 'catalog.db'}",
        "WAP_WAREHOUSE": (folder / "warehouse").as_uri(),
        "WAP_LEDGER_URL": f"sqlite:///{folder / 'ledger.db'}",
    }


class _Environment:
    """Set environment variables for a block (the DAG's tasks build their runtime from them)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.saved = values, {}

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc: Any) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _live_checksums(first: dt.date, days: int) -> dict[str, tuple[int, str]]:
    """Each day's live (rows, checksum) in the environment's catalog; every day must be live."""
    from silver_orders import ORDERS

    from wap import tables

    table = tables.load_table(ORDERS.table, Runtime.from_env().catalog)
    found = {}
    for n in range(days):
        day = first + dt.timedelta(days=n)
        version = tables.live_version(table, day)
        if version is None:
            raise NoCommitError(f"range benchmark: {day} is not published")
        found[day.isoformat()] = (version.rows, version.checksum)
    return found


def bench_ranges(cfg: dict, spark, data_dir: Path) -> dict:
    """30 days through four paths, each into a catalog of its own (each publishes every day):
    one Spark job (the floor), `dag.test` per day, one range run through `dag.test`, and the
    range's steps alone (no Airflow); then the per-day and range results, day by day."""
    from airflow.dag_processing.dagbag import DagBag
    from synth import landed_events

    from wap.embedded import run_dag
    from wap.settings import load_settings

    days = cfg["range_days"]
    landing = load_settings().landing_dir
    sizes = []
    for n, orders in enumerate(cfg["range_orders"]):
        first = dt.date(2025 + n, 1, 1)  # each size on days of its own
        last = first + dt.timedelta(days=days - 1)
        events = landed_events(spark, first, days, orders, str(landing))
        say(f"  landed {events:,} events for {days} days x {orders:,} orders from {first}")
        root = data_dir / "ranges" / str(orders)
        floor_s = median_seconds(
            lambda _: single_pass_write(spark, landing, first, days, str(root / "floor")), cfg["repeats"]
        )

        with _Environment(_catalog_of(root / "per_day")):
            start = time.perf_counter()
            for i in range(days):
                day = first + dt.timedelta(days=i)
                dag = DagBag(str(REPO / "dags" / "silver_orders.py")).dags["silver_orders"]
                run = dag.test(
                    logical_date=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC), run_conf={"partition": str(day)}
                )
                if "success" not in str(run.state):
                    raise RuntimeError(f"per-day run of {day} failed: {run.state}")
            per_day_s = time.perf_counter() - start
            per_day = _live_checksums(first, days)

        with _Environment(_catalog_of(root / "range_dag")):
            start = time.perf_counter()
            state = run_dag("silver_orders", f"{first}/{last}")
            range_dag_s = time.perf_counter() - start
            if "success" not in state:
                raise RuntimeError(f"range run {first}/{last} failed: {state}")
            range_dag = _live_checksums(first, days)

        with _Environment(_catalog_of(root / "range_steps")):
            from silver_orders import ORDERS

            from wap import ranges
            from wap.partition import PartitionRange

            runtime = Runtime.from_settings(load_settings(), spark=lambda: spark)
            start = time.perf_counter()
            span = PartitionRange(first, last)
            staged = ranges.stage(runtime, ORDERS, span, f"bench__{INVOCATION}", 1)
            result = ranges.publish(runtime, ORDERS, ranges.audit(runtime, ORDERS, staged))
            range_steps_s = time.perf_counter() - start
            if set(result["partitions"].values()) != {"published"}:
                raise NoCommitError(f"range steps {span.key}: {result['partitions']}")
            range_steps = _live_checksums(first, days)
            # Where the range's time went (every partition's row holds the range's phases).
            row = runtime.ledger.rows(ORDERS.name, first.isoformat())[-1]
            details = json.loads(row["details"])
            split = {
                **{f"stage_{k}": v for k, v in details["seconds_stage"].items()},
                **{f"audit_{k}": v for k, v in details["seconds_audit"].items()},
                **{f"publish_{k}": v for k, v in details["seconds_publish"].items()},
            }

        if not per_day == range_dag == range_steps:
            differ = [d for d in per_day if not per_day[d] == range_dag[d] == range_steps[d]]
            raise AssertionError(f"range runs differ from per-day runs on {differ}")
        entry = {
            "orders_per_day": orders,
            "events": events,
            "rows": sum(rows for rows, _ in per_day.values()),
            "single_pass_s": floor_s,
            "per_day_dag_s": per_day_s,
            "range_dag_s": range_dag_s,
            "range_steps_s": range_steps_s,
            "ratio_per_day": per_day_s / floor_s,
            "ratio_range_dag": range_dag_s / floor_s,
            "ratio_range_steps": range_steps_s / floor_s,
            "checksums_equal": True,
            "range_steps_split_s": split,
        }
        say(
            f"  {orders:,} orders/day: floor {floor_s:.1f}s; per day {per_day_s:.1f}s ({entry['ratio_per_day']:.1f}x); "
            f"range run {range_dag_s:.1f}s ({entry['ratio_range_dag']:.2f}x); range steps {range_steps_s:.1f}s "
            f"({entry['ratio_range_steps']:.2f}x); every day's checksum equal"
        )
        sizes.append(entry)
    return {"days": days, "sizes": sizes}


def bench_scheduler(cfg: dict, spark, data_dir: Path) -> dict:
    """A year of the sample through a real Airflow (scheduler, dag-processor, triggerer,
    api-server, LocalExecutor, PostgreSQL; tasks on a shared Spark Connect server), as range
    runs of `scheduler_batch` days triggered over the REST API; against the single pass. Then
    `scheduler_small_days` single small days, one at a time on the idle deployment: seconds
    from the run queued to its publish task done (the table exists, the server is warm)."""
    import contextlib

    sys.path.insert(0, str(REPO / "tests"))
    from airflow_deployment import AirflowDeployment
    from pg import PostgresServer

    from sample_data.orders import write_landing
    from wap.partition import PartitionRange

    days, batch = cfg["scheduler_days"], cfg["scheduler_batch"]
    first = dt.date(2023, 1, 1)
    span = PartitionRange(first, first + dt.timedelta(days=days - 1))
    with contextlib.ExitStack() as stack:
        postgres = PostgresServer().start()
        stack.callback(postgres.stop)
        airflow = AirflowDeployment(data_dir / "scheduler", postgres, parallelism=3)  # + its Spark Connect server
        stack.callback(airflow.stop)
        landing = airflow.base / "data" / "landing"
        write_landing(landing, first, days=days + 1, orders_per_day=cfg["scheduler_orders"])
        floor_s = median_seconds(
            lambda _: single_pass_write(spark, landing, first, days, str(data_dir / "scheduler-floor")), cfg["repeats"]
        )
        airflow.start()
        airflow.airflow("pools", "import", str(REPO / "include" / "pools.json"))
        airflow.wait_for(lambda: airflow.api("GET", "/api/v2/dags/silver_orders"), 300, "the DAG to be parsed")
        airflow.api("PATCH", "/api/v2/dags/silver_orders", {"is_paused": False})
        start = time.perf_counter()
        runs = [
            airflow.api(
                "POST",
                "/api/v2/dags/silver_orders/dagRuns",
                {"logical_date": None, "conf": {"partition": part.key, **({"lookback": False} if n else {})}},
            )["dag_run_id"]
            for n, part in enumerate(span.batches(batch))
        ]

        def finished() -> list[dict] | None:
            states = [airflow.api("GET", f"/api/v2/dags/silver_orders/dagRuns/{r}")["state"] for r in runs]
            return states if all(s in ("success", "failed") for s in states) else None

        states = airflow.wait_for(finished, 7200, f"{len(runs)} range runs")
        total_s = time.perf_counter() - start
        if set(states) != {"success"}:
            raise RuntimeError(f"range runs on the scheduler: {states}\n{airflow.log_tail()}")
        with _Environment({k: airflow.env[k] for k in ("WAP_CATALOG_URI", "WAP_DATA_DIR", "WAP_LEDGER_URL")}):
            published = _live_checksums(first, days)
        say(
            f"  {days} days in {len(runs)} range runs on the real scheduler: {total_s:.1f}s vs single pass "
            f"{floor_s:.1f}s = {total_s / floor_s:.2f}x"
        )
        small = _small_days(airflow, landing, first + dt.timedelta(days=days + 30), cfg)
    small_s = statistics.median(run["queued_to_published_s"] for run in small)
    say(f"  a small day on the real scheduler, queued -> published: median {small_s:.1f}s of {len(small)} days")
    return {
        "days": days,
        "orders_per_day": cfg["scheduler_orders"],
        "range_runs": len(runs),
        "batch": batch,
        "rows": sum(rows for rows, _ in published.values()),
        "total_s": total_s,
        "single_pass_s": floor_s,
        "ratio": total_s / floor_s,
        "small_days": small,
        "small_day_s": small_s,
    }


def _small_days(airflow: Any, landing: Path, first: dt.date, cfg: dict) -> list[dict[str, Any]]:
    """Single-day runs of `scheduler_small_days` new days, each triggered when no other run is
    active (a day's late-record re-run of the day before included), so each is timed alone:
    queued -> publish done, and each task's seconds (the task's own start to end)."""
    from urllib.parse import quote

    from sample_data.orders import write_landing

    days = cfg["scheduler_small_days"]
    write_landing(landing, first, days=days + 1, orders_per_day=cfg["scheduler_orders"])

    def when(stamp: str) -> dt.datetime:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    def idle() -> bool:
        active = airflow.api("GET", "/api/v2/dags/silver_orders/dagRuns?state=queued&state=running")["dag_runs"]
        # the scheduled run of today's interval waits for data that never lands: not work
        return not [r for r in active if not r["dag_run_id"].startswith("scheduled__")]

    out = []
    for n in range(days):
        day = (first + dt.timedelta(days=n)).isoformat()
        airflow.wait_for(idle, 600, "no active run")
        run = airflow.api(
            "POST", "/api/v2/dags/silver_orders/dagRuns", {"logical_date": None, "conf": {"partition": day}}
        )["dag_run_id"]
        path = f"/api/v2/dags/silver_orders/dagRuns/{quote(run, safe='')}"
        state = airflow.wait_for(
            lambda path=path: (r := airflow.api("GET", path))["state"] in ("success", "failed") and r, 600, day
        )
        if state["state"] != "success":
            raise RuntimeError(f"the small day {day} on the scheduler: {state['state']}\n{airflow.log_tail()}")
        tasks = airflow.api("GET", f"{path}/taskInstances")["task_instances"]
        done = {t["task_id"]: t for t in tasks if t["state"] == "success"}
        out.append(
            {
                "partition": day,
                "queued_to_published_s": (when(done["publish"]["end_date"]) - when(state["queued_at"])).total_seconds(),
                "queued_to_run_end_s": (when(state["end_date"]) - when(state["queued_at"])).total_seconds(),
                "tasks_s": {task: round(t["duration"], 2) for task, t in done.items()},
            }
        )
    return out


def connect_session_start(cfg: dict) -> float:
    """Seconds for a fresh process to get a session from an already running Spark Connect
    server and run a trivial query: a task's start-up cost when workers share one server."""
    from wap.spark import ConnectServer

    with ConnectServer() as server:
        probe = (
            "import time; t=time.perf_counter(); from wap.spark import get_spark; "
            "get_spark().range(1).count(); print(time.perf_counter()-t)"
        )
        env = {**os.environ, "WAP_SPARK_REMOTE": server.remote}
        times = []
        for _ in range(max(1, cfg["repeats"])):
            out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
            times.append(float(out.stdout.strip().splitlines()[-1]))
        return statistics.median(times)


def cold_spark_start(cfg: dict) -> float:
    """Seconds for a fresh process to get a local Spark session and run a trivial query."""
    probe = "import time,sys; t=time.perf_counter(); from wap.spark import get_spark; get_spark().range(1).count(); print(time.perf_counter()-t)"
    times = []
    for _ in range(max(1, cfg["repeats"] - 1)):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


# ---------------------------------------------------------------- 5: driver memory
def bench_memory(cfg: dict) -> dict:
    """Peak RSS of a process (Python + its JVM) running one write-audit-publish of N rows."""
    from bench_pipeline import bench_pipeline

    check = CommitCheck(bench_pipeline().table)  # the probes share this process's data folder
    results = []
    for size in cfg["memory"]:
        # Its own run id and content: a probe must commit, not find its attempt or its rows live.
        probe = [str(size), str(fresh_variant()), f"memory-probe-{INVOCATION}-{size}"]
        out = subprocess.run(
            [sys.executable, str(HERE / "memory_probe.py"), *probe], capture_output=True, text=True, check=True
        )
        results.append({"rows": size, **json.loads(out.stdout.strip().splitlines()[-1])})
        check(f"memory probe {size:,} rows", results[-1]["status"], results[-1]["snapshot_id"])
        say(
            f"  memory {size:>11,} rows: peak RSS python {results[-1]['python_mb']:.0f} MB, jvm {results[-1]['jvm_mb']:.0f} MB"
        )
    first, last = results[0], results[-1]
    return {
        "sizes": results,
        "python_ratio": last["python_mb"] / first["python_mb"],
        "jvm_ratio": last["jvm_mb"] / first["jvm_mb"],
        "ratio": (last["python_mb"] + last["jvm_mb"]) / (first["python_mb"] + first["jvm_mb"]),
    }


# ---------------------------------------------------------------- 6: DAG parse time
MINIMAL_DAG = """
import datetime as dt
from airflow.sdk import CronDataIntervalTimetable, dag, task

# The baseline: a minimal daily DAG with an explicit timetable, as DESIGN.md asks of every DAG.
@dag(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), start_date=dt.datetime(2024, 1, 1), catchup=False)
def minimal():
    @task
    def hello():
        return 1
    hello()

minimal()
"""
PARSE_PROBE = """
import sys, time, runpy
# What every DAG file pays, and a DAG processor has loaded already: the comparison is
# what the file itself adds (its own imports, e.g. the wap package, included).
from airflow.sdk import dag, task, Param, Asset  # noqa: F401  (resolves the lazy imports)
start = time.perf_counter()
runpy.run_path(sys.argv[1])
print(time.perf_counter() - start)
"""


def bench_parse(cfg: dict) -> dict:
    minimal = Path(tempfile.mkdtemp()) / "minimal_dag.py"
    minimal.write_text(MINIMAL_DAG)
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}

    def parse(path: Path) -> float:
        samples = [
            float(
                subprocess.run(
                    [sys.executable, "-c", PARSE_PROBE, str(path)], capture_output=True, text=True, check=True, env=env
                ).stdout.strip()
            )
            for _ in range(cfg["parse_repeats"])
        ]
        return statistics.median(samples)

    baseline = parse(minimal)
    files = {p.name: parse(p) for p in sorted((REPO / "dags").glob("*.py"))}
    for name, seconds in files.items():
        say(f"  parse {name}: {seconds * 1000:.1f} ms vs minimal {baseline * 1000:.1f} ms = {seconds / baseline:.2f}x")
    return {
        "minimal_s": baseline,
        "files_s": files,
        "ratio": max(files.values()) / baseline,
        "note": "each file parsed in a fresh interpreter that has airflow.sdk's dag/task/Param/Asset "
        "loaded (as a DAG processor has), so a DAG file's own imports (the wap package) are counted",
    }


# ---------------------------------------------------------------- 7: wap check, cold
def bench_check(cfg: dict) -> dict:
    """`wap check silver_orders` as a person runs it: a fresh process (imports, a local JVM,
    the DAG file, the analysis), wall time; next to a fresh process's own Spark start (the
    floor of anything that needs Spark), measured in the same run."""
    times = []
    for _ in range(max(1, cfg["repeats"])):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "wap.cli", "check", "silver_orders"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    check_s, floor_s = statistics.median(times), cold_spark_start(cfg)
    say(
        f"  wap check, cold: {check_s:.1f} s (runs {', '.join(f'{t:.1f}' for t in times)}); Spark start {floor_s:.1f} s"
    )
    return {"check_s": check_s, "runs_s": times, "cold_spark_s": floor_s, "ratio": check_s / floor_s}


# ---------------------------------------------------------------- report
def machine() -> dict:
    from importlib.metadata import version

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "java": java,
        **{p: version(p) for p in ("apache-airflow", "pyspark", "pyiceberg", "great-expectations")},
    }


def verdict(value: float | None, target: float, higher_is_better: bool = False) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    lines = [
        f"# Benchmark results ({results['mode']})",
        "",
        f"{results['finished']}: {results['machine']['cores']} cores, {results['machine']['memory_gib']} GiB; "
        f"Airflow {results['machine']['apache-airflow']}, PySpark {results['machine']['pyspark']}, "
        f"pyiceberg {results['machine']['pyiceberg']}, GX {results['machine']['great-expectations']}. "
        f"Medians of {results['config']['repeats']} runs.",
        "",
    ]
    loads = [
        f"{k} {v['load_average_1m'][0]:.1f}→{v['load_average_1m'][1]:.1f}"
        for k, v in results["sections"].items()
        if "load_average_1m" in v
    ]
    if loads:  # on a 2-core machine, a load above 2 means the figures were measured sharing it
        lines += [f"Load average (1 min) at the start→end of each section: {', '.join(loads)}.", ""]
    # A run of some sections keeps the others' last results: say when each was measured.
    dates = [f"{k} {v['measured'][:10]}" for k, v in results["sections"].items() if "measured" in v]
    if dates:
        lines += [f"Measured on (sections without a date: before dates were recorded): {', '.join(dates)}.", ""]
    lines += [
        "| # | measure | value | target | |",
        "|---|---|---|---|---|",
    ]
    s = results["sections"]
    rows: list[tuple[str, str, float, float, bool]] = []
    if "publish" in s:
        rows.append(
            ("1", "publish(largest) / publish(smallest)", s["publish"]["ratio"], TARGETS["publish_10M_vs_10k"], False)
        )
    if "wap" in s:
        measured = [("", r) for r in s["wap"]["sizes"]] + [(", + compound unique", r) for r in s["wap"]["compound"]]
        for suite, r in measured:
            target = TARGETS["wap_vs_bare_write" if r["rows"] >= 1_000_000 else "wap_vs_bare_write_small"]
            rows.append(
                ("2", f"write-audit-publish / bare write, {r['rows']:,} rows{suite}", r["ratio"], target, False)
            )
        for suite, r in measured:
            if r["rows"] >= 1_000_000 or len(measured) == 2:  # the target is at 5M rows (quick: the one size)
                what = f"gate rows/s, {r['rows']:,} rows{suite}"
                rows.append(("3", what, r["gate_rows_per_s"], TARGETS["gate_rows_per_s"], True))
    if "backfill" in s:
        b, target = s["backfill"], TARGETS["backfill_vs_single_pass"]
        rows.append(
            ("4", f"backfill {b['days']} days / single pass, warm session (dag.test)", b["ratio"], target, False)
        )
        rows.append(
            ("4", "same + a cold local Spark session per Spark task", b["ratio_cold_session_per_task"], target, False)
        )
        if "ratio_shared_spark_connect" in b:
            rows.append(
                ("4", "same + a Spark Connect session per Spark task", b["ratio_shared_spark_connect"], target, False)
            )
    if "airflow" in s:
        a = s["airflow"]
        what = f"dag.test seconds per run outside the steps, {a['orders_per_day']:,} orders (lineage from a thread)"
        rows.append(("4d", what, a["outside_steps_s"], TARGETS["airflow_outside_steps_s"], False))
        what = "same, lineage from a forked process (the provider's default)"
        rows.append(("4d", what, a["outside_steps_fork_s"], TARGETS["airflow_outside_steps_s"], False))
    if "ranges" in s:
        target = TARGETS["range_vs_single_pass"]
        for r in s["ranges"]["sizes"]:
            what = f"{s['ranges']['days']} days x {r['orders_per_day']:,} orders"
            rows.append(("4b", f"range run (dag.test) / single pass, {what}", r["ratio_range_dag"], target, False))
            rows.append(("4b", f"per-day runs (dag.test) / single pass, {what}", r["ratio_per_day"], target, False))
    if "scheduler" in s:
        r = s["scheduler"]
        what = f"{r['days']} days in {r['range_runs']} range runs (real scheduler, REST)"
        rows.append(("4c", f"{what} / single pass", r["ratio"], TARGETS["range_vs_single_pass"], False))
        if "small_day_s" in r:
            what = "real scheduler, shared Spark Connect: a small day's run, queued -> published, median (s)"
            rows.append(("4e", what, r["small_day_s"], TARGETS["scheduler_small_day_s"], False))
    if "memory" in s:
        m, target = s["memory"], TARGETS["driver_rss_10M_vs_1M"]
        if "python_ratio" in m:
            rows.append(
                ("5", "peak RSS of the task process (Python), largest / smallest", m["python_ratio"], target, False)
            )
            rows.append(("5", "peak RSS of the local Spark JVM, largest / smallest", m["jvm_ratio"], target, False))
        rows.append(("5", "peak RSS, task + local JVM, largest / smallest", m["ratio"], target, False))
    if "parse" in s:
        rows.append(
            ("6", "DAG parse / minimal DAG (worst file)", s["parse"]["ratio"], TARGETS["dag_parse_vs_minimal"], False)
        )
    if "check" in s:
        c = s["check"]
        what = f"wap check of a pipeline, a fresh process (s); {c['ratio']:.2f}x a fresh Spark start"
        rows.append(("7", what, c["check_s"], TARGETS["check_cold_s"], False))
    for num, name, value, target, higher in rows:
        unit = (
            " s"
            if name.endswith("(s)") or "(s);" in name or name.startswith(("dag.test seconds", "same, lineage"))
            else "x"
        )
        shown = f"{value:,.0f}" if higher else f"{value:.2f}{unit}"
        bound = f"≥ {target:,.0f}" if higher else f"≤ {target}{unit}"
        lines.append(f"| {num} | {name} | {shown} | {bound} | {verdict(value, target, higher)} |")
    if "publish" in s:
        lines += [
            "",
            "## Publish sweep (seconds) and staged files",
            "",
            "| rows | swap (metadata) | Spark rewrite | pyiceberg overwrite | pyiceberg upsert | files | file MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in s["publish"]["sweep"]:
            fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(
                f"| {r['rows']:,} | {fmt(r['publish_s'])} | {fmt(r['spark_rewrite_s'])} | {fmt(r['iceberg_overwrite_s'])} "
                f"| {fmt(r['iceberg_upsert_s'])} | {r['files']} | {r['file_mb_min']:.1f}–{r['file_mb_max']:.1f} |"
            )
    if "backfill" in s:
        lines += ["", "## Backfill: median seconds per partition", "", "| phase | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in s["backfill"]["median_split_s"].items()]
        lines += [
            f"| single pass, per partition | {s['backfill']['single_pass_s'] / s['backfill']['days']:.3f} |",
            f"| cold Spark session start | {s['backfill']['cold_spark_start_s']:.3f} |",
        ]
        if "connect_session_start_s" in s["backfill"]:
            lines.append(f"| Spark Connect session start | {s['backfill']['connect_session_start_s']:.3f} |")
    if "ranges" in s:
        lines += [
            "",
            f"## Range runs: {s['ranges']['days']} days, seconds (every day's rows and checksum equal on every path)",
            "",
            "| orders/day | rows | single pass | range run (dag.test) | range steps | per-day runs (dag.test) |",
            "|---|---|---|---|---|---|",
        ]
        for r in s["ranges"]["sizes"]:
            lines.append(
                f"| {r['orders_per_day']:,} | {r['rows']:,} | {r['single_pass_s']:.1f} | {r['range_dag_s']:.1f} "
                f"({r['ratio_range_dag']:.2f}x) | {r['range_steps_s']:.1f} ({r['ratio_range_steps']:.2f}x) "
                f"| {r['per_day_dag_s']:.1f} ({r['ratio_per_day']:.1f}x) |"
            )
        lines += ["", "Range steps, seconds per phase:", ""]
        for r in s["ranges"]["sizes"]:
            phases = ", ".join(f"{k} {v:.2f}" for k, v in r.get("range_steps_split_s", {}).items())
            lines.append(f"- {r['orders_per_day']:,} orders/day: {phases}")
    if s.get("scheduler", {}).get("small_days"):
        lines += [
            "",
            "## A small day on the real scheduler (LocalExecutor, PostgreSQL, one Spark Connect server)",
            "",
            "Seconds from the run queued to its publish task done, to the run done, and each task's own.",
            "",
            "| day | queued → published | queued → run done | tasks |",
            "|---|---|---|---|",
        ]
        for r in s["scheduler"]["small_days"]:
            tasks = ", ".join(f"{k} {v:.2f}" for k, v in r["tasks_s"].items())
            lines.append(
                f"| {r['partition']} | {r['queued_to_published_s']:.1f} | {r['queued_to_run_end_s']:.1f} | {tasks} |"
            )
    if "wap" in s:
        lines += ["", "## Write-audit-publish split (median seconds)", ""]
        for suite, r in [("", r) for r in s["wap"]["sizes"]] + [
            (" + compound unique", r) for r in s["wap"]["compound"]
        ]:
            split = ", ".join(f"{k} {v:.2f}" for k, v in r["split_s"].items())
            lines.append(f"- {r['rows']:,} rows{suite}: {split}")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    if "publish" in s:
        chart(s["publish"]["sweep"], out / "publish_sweep.png")


def chart(sweep: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = {
        "publish_s": "Iceberg swap (this project)",
        "spark_rewrite_s": "Spark partition overwrite",
        "iceberg_overwrite_s": "pyiceberg overwrite (copy)",
        "iceberg_upsert_s": "pyiceberg upsert",
    }
    for key, label in series.items():
        points = [(r["rows"], r[key]) for r in sweep if r[key] is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows in the partition")
    ax.set_ylabel("seconds to publish (median)")
    ax.set_title("Publishing one partition: metadata swap vs copying")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SECTIONS = ("publish", "wap", "backfill", "airflow", "ranges", "memory", "parse")
# Sections of the full run only (not --quick): they start servers and take long.
EXTRA_SECTIONS = ("scheduler", "check")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code, measures nothing useful")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results[-quick])")
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {SECTIONS + EXTRA_SECTIONS} (default: all; --quick: {SECTIONS})",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a config value")
    parser.add_argument("--report-only", action="store_true", help="rewrite results.md and the chart from results.json")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for item in args.set:
        key, _, value = item.partition("=")
        cfg[key] = json.loads(value)
    out = args.out or HERE / ("results-quick" if args.quick else "results")
    if args.report_only:
        results = json.loads((out / "results.json").read_text())
        write_report(results, out)
        say((out / "results.md").read_text())
        return results
    named = args.only or ",".join(SECTIONS if args.quick else SECTIONS + EXTRA_SECTIONS)
    only = [s for s in named.split(",") if s]
    # A scratch folder of our own is removed at the end: a full run leaves ~14 GB in it.
    scratch = None if args.data_dir else Path(tempfile.mkdtemp(prefix="wap-bench-"))
    data_dir = args.data_dir or scratch
    try:
        if "WAP_DATA_DIR" not in os.environ or args.data_dir:
            prepare_airflow(data_dir)
            os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
        bench_dir = Path(os.environ["WAP_DATA_DIR"])
        results: dict[str, Any] = {
            "mode": "quick" if args.quick else "full",
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "config": cfg,
            "targets": TARGETS,
            "sections": {},
        }
        from bench_pipeline import bench_pipeline

        from wap.spark import get_spark

        spark = get_spark()
        pipeline = bench_pipeline()
        steps = {
            "publish": lambda: bench_publish_sweep(cfg, spark, pipeline),
            "wap": lambda: bench_wap_vs_bare(cfg, spark),
            "backfill": lambda: bench_backfill(cfg, spark, bench_dir),
            "airflow": lambda: bench_airflow(cfg, spark, bench_dir),
            "ranges": lambda: bench_ranges(cfg, spark, bench_dir),
            "scheduler": lambda: bench_scheduler(cfg, spark, bench_dir),
            "memory": lambda: bench_memory(cfg),
            "parse": lambda: bench_parse(cfg),
            "check": lambda: bench_check(cfg),
        }
        previous = out / "results.json"
        if previous.exists():  # a run of some sections keeps the others' last results
            earlier = json.loads(previous.read_text())
            if earlier.get("mode") == results["mode"]:
                results["sections"] = {k: v for k, v in earlier["sections"].items() if k not in only}
        for name in only:
            say(f"[{name}]")
            load_before = os.getloadavg()[0]
            results["sections"][name] = steps[name]()
            # Other work on the machine slows a section; its load says how much to trust it.
            results["sections"][name]["load_average_1m"] = [load_before, os.getloadavg()[0]]
            results["sections"][name]["measured"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            write_report(results, out)  # after each section: a long run keeps what it measured
        say(f"results: {out / 'results.md'}")
        say((out / "results.md").read_text())
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
