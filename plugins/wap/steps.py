"""The steps of one run: stage, audit, publish. Each writes its outcome to the ledger.

Plain functions with no Airflow in them: `tasks` calls them from TaskFlow tasks, tests
and scripts call them directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Any

from wap import audit as gate
from wap import staging, tables
from wap.ledger import Ledger
from wap.pipeline import Pipeline

log = logging.getLogger(__name__)


class _Clock:
    """Seconds per phase of a step, kept in the ledger's details (where a run's time went)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 4)
        self._last = now


class GateFailedError(RuntimeError):
    """Staged data broke a blocking check; it was quarantined and not published."""


def stage(pipeline: Pipeline, partition: dt.date, run_id: str, try_number: int) -> staging.StagedRun:
    """Transform the partition's inputs with the pipeline's SQL and stage the result."""
    from wap.spark import get_spark

    token = staging.run_token(run_id, try_number)
    attempt = {
        "pipeline": pipeline.name,
        "table": pipeline.table,
        "partition": partition.isoformat(),
        "run_id": run_id,
        "try_number": try_number,
        "run_token": token,
        "code_version": pipeline.code_version(),
    }
    ledger = Ledger()
    table = tables.ensure_table(pipeline.table, pipeline.contract.columns, pipeline.partition_column)
    ledger.reconcile(pipeline.name, partition.isoformat(), run_id, lambda t: tables.find_publish(table, t))
    ledger.start(**attempt)
    clock = _Clock()
    try:
        spark = get_spark()
        clock.lap("spark_session")
        rows_in = 0
        for source in pipeline.sources:
            # Not cached: building the cache costs more than the count, which reads no columns.
            frame = source.read(spark, partition)
            frame.createOrReplaceTempView(source.view)
            rows_in += frame.count()
        clock.lap("read")
        result = spark.sql(pipeline.sql_text(), args={"partition": partition})
        staged_dir = staging.partition_dir(table.location(), "data", pipeline.partition_column, partition, token)
        files = staging.write_staged(result, staged_dir)
        clock.lap("transform_write")
        staged = staging.StagedRun(**attempt, staged_dir=staged_dir, files=files, rows_in=rows_in)
    except Exception as exc:
        ledger.update(pipeline.name, token, status="failed", error=f"stage: {exc}"[:4000])
        raise
    ledger.update(
        pipeline.name, token, rows_in=rows_in, staged_path=staged_dir, details={"seconds_stage": clock.seconds}
    )
    log.info(
        "staged %s files (%s rows read) for %s %s in %s", len(files), rows_in, pipeline.table, partition, staged_dir
    )
    return staged


def audit(pipeline: Pipeline, staged: staging.StagedRun) -> staging.StagedRun:
    """Measure and gate the staged files; return the run with its row count and checksum.

    A passing partition costs one read of the staged files, plus one per uniqueness check
    (see `audit.evaluate`); on a blocking failure, the files are quarantined and
    `GateFailedError` raised.
    """
    from wap.spark import get_spark

    if not staged.files:
        raise GateFailedError(f"{pipeline.table} {staged.partition}: nothing was staged")
    ledger = Ledger()
    clock = _Clock()
    frame = get_spark().read.parquet(*staged.files)
    # The count, the checksum and the checks in one aggregation when the data is good.
    report, values = gate.audit(frame, gate.load_suite(pipeline.suite), also=staging.checksum_aggregates(frame))
    rows_out, checksum = staging.format_checksum(values)
    clock.lap("gate")
    log.info("%s", report.summary())
    measured = dataclasses.replace(staged, rows_out=rows_out, checksum=checksum)
    fields = {
        "rows_out": rows_out,
        "checksum": checksum,
        "details": {"audit": report.to_dict(), "seconds_audit": clock.seconds},
    }
    if report.passed:
        ledger.update(pipeline.name, staged.run_token, **fields)
        return measured

    table_location = tables.load_table(pipeline.table).location()
    quarantine = staging.partition_dir(
        table_location,
        "quarantine",
        pipeline.partition_column,
        dt.date.fromisoformat(staged.partition),
        staged.run_token,
    )
    staging.move_dir(staged.staged_dir, quarantine)
    failed = ", ".join(f"{f.check}({f.column})" if f.column else f.check for f in report.blocking)
    ledger.update(
        pipeline.name,
        staged.run_token,
        status="quarantined",
        staged_path=quarantine,
        error=f"quality gate failed: {failed}"[:4000],
        **fields,
    )
    raise GateFailedError(
        f"{pipeline.table} {staged.partition} failed its quality gate ({failed}); "
        f"the live partition is unchanged and the staged files are quarantined in {quarantine}\n{report.summary()}"
    )


def publish(pipeline: Pipeline, staged: staging.StagedRun) -> dict[str, Any]:
    """Swap the staged files in as the live partition, unless that is already done.

    - this attempt already published (a retry after a crash): no commit; the ledger is
      set from the table;
    - the live partition already holds exactly these rows (same checksum): no commit,
      status `skipped`, staged files removed;
    - otherwise one atomic commit, recorded in the table and then in the ledger.
    """
    if staged.checksum is None:
        raise ValueError(f"{pipeline.table} {staged.partition}: publish needs an audited run (no checksum)")
    ledger = Ledger()
    clock = _Clock()
    partition = dt.date.fromisoformat(staged.partition)
    table = tables.load_table(pipeline.table)

    snapshot_id = tables.find_publish(table, staged.run_token)
    if snapshot_id is not None:
        status = "published"
        log.info("%s %s was already published by this attempt (snapshot %s)", pipeline.table, partition, snapshot_id)
    elif (live := tables.live_version(table, partition)) and live.checksum == staged.checksum:
        status, snapshot_id = "skipped", live.snapshot_id
        staging.remove_dir(staged.staged_dir)
        log.info("%s %s unchanged (checksum %s): nothing to publish", pipeline.table, partition, staged.checksum)
    else:
        status = "published"
        snapshot_id = tables.swap_partition(
            pipeline.table,
            pipeline.partition_column,
            partition,
            staged.files,
            {
                tables.PIPELINE: pipeline.name,
                tables.RUN_ID: staged.run_id,
                tables.RUN_TOKEN: staged.run_token,
                tables.PARTITION: staged.partition,
                tables.ROWS: str(staged.rows_out),
                tables.CHECKSUM: staged.checksum,
                tables.CODE_VERSION: staged.code_version,
            },
        )
        log.info("published %s %s: %s rows, snapshot %s", pipeline.table, partition, staged.rows_out, snapshot_id)
    clock.lap("commit")
    fields: dict[str, Any] = {"staged_path": None} if status == "skipped" else {}  # its files were removed
    ledger.update(
        pipeline.name,
        staged.run_token,
        status=status,
        snapshot_id=snapshot_id,
        error=None,
        details={"seconds_publish": clock.seconds},
        **fields,
    )
    return {"status": status, "snapshot_id": snapshot_id, "partition": staged.partition, "rows": staged.rows_out}
