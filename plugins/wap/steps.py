"""The steps of one run: stage, audit, publish. Each writes its outcome to the ledger.

Plain functions with no Airflow in them: `tasks` calls them from TaskFlow tasks, tests
and scripts call them directly. Each takes the `Runtime` (settings, catalog, ledger,
Spark) first and fetches nothing from the environment itself; how the table is published
is the pipeline's `publish` mode (`wap.publish`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

from wap import audit as gate
from wap import sources, staging, tables
from wap.errors import DataError, GateFailedError, PartitionChangedError, SupersededError
from wap.partition import Partition, PartitionRange, from_key, key_of
from wap.pipeline import Pipeline
from wap.runtime import Runtime

log = logging.getLogger(__name__)
ERROR_CHARS = 16_000  # of an error kept in the ledger: whole messages, bounded
P = ParamSpec("P")
R = TypeVar("R")


class _Clock:
    """Seconds per phase of a step, kept in the ledger's details (where a run's time went)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 4)
        self._last = now


def _held(step: Callable[P, R]) -> Callable[P, R]:
    """Run a step inside `Ledger.hold` of its attempt, from its first line to its last.

    While the step runs its process holds the attempt's ledger row, so a killed step is seen
    dead (I4). The attempt: the `staged` run's, or for a stage the one its run id and try make
    (held from `Ledger.start` on, which writes the row held).
    """
    signature = inspect.signature(step)

    @functools.wraps(step)
    def held(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = signature.bind(*args, **kwargs).arguments
        staged = bound.get("staged")
        token = staged.run_token if staged is not None else staging.run_token(bound["run_id"], bound["try_number"])
        with bound["runtime"].ledger.hold(bound["pipeline"].name, token):
            return step(*args, **kwargs)

    return held


@_held
def stage(
    runtime: Runtime, pipeline: Pipeline, partition: Partition, run_id: str, try_number: int
) -> staging.StagedRun:
    """Read the partition's inputs, transform them with the pipeline's SQL, stage the result.

    Landed records the run cannot use are rejects: kept under the run's quarantine folder
    and reported; above the source's allowed share the run stops here (`GateFailedError`).
    Columns the SQL adds beyond the contract are dropped here if the contract allows them.
    """
    token = staging.run_token(run_id, try_number)
    contract = pipeline.contract
    attempt: dict[str, Any] = {
        "pipeline": pipeline.name,
        "table": pipeline.table,
        "partition": key_of(partition),
        "run_id": run_id,
        "try_number": try_number,
        "run_token": token,
        "code_version": pipeline.code_version(),
        "contract_version": contract.version,
    }
    ledger = runtime.ledger
    table = tables.ensure_table(pipeline.table, contract, runtime.catalog)  # ContractVersionError: a DataError
    ledger.reconcile(pipeline.name, key_of(partition), run_id, lambda t: tables.find_publish(table, t))
    ledger.start(**attempt)
    base = tables.live_version(table, pipeline.publish.replaces(partition))  # what this run's publish will replace
    quarantine = staging.partition_dir(table.location(), "quarantine", pipeline.partition_column, partition, token)
    clock = _Clock()
    try:
        spark = runtime.spark()
        clock.lap("spark_session")
        findings: list[gate.Finding] = []
        intakes: dict[str, dict[str, Any]] = {}
        for source, intake, rejects in read_sources(spark, runtime, pipeline, partition):
            intakes[source.view] = {
                "records": intake.records,
                "own": intake.own_records,
                "rejected": intake.rejected,
                "late": intake.late,
            }
            if rejects is not None:
                kept_in = f"{quarantine}/rejects/{source.view}"
                rejects.write.mode("overwrite").json(staging.spark_uri(kept_in))
                findings.append(gate.rejects_finding(intake, kept_in))
        clock.lap("read")
        rows_in = sum(int(i["records"]) for i in intakes.values())
        read = {"rows_in": rows_in, "details": {"intake": intakes}}
        if any(f.severity == gate.BLOCKING for f in findings):
            ledger.update(pipeline.name, token, **read)
            checked = gate.assertions(gate.load_suite(pipeline.suite), findings, staged=False)
            _quarantined(runtime, pipeline, token, partition, gate.AuditReport(None, findings), quarantine, {}, checked)
        result, added = result_of(spark, pipeline, partition, base_reader(spark, pipeline, table, {partition: base}))
        findings += added
        staged_dir = staging.partition_dir(table.location(), "data", pipeline.partition_column, partition, token)
        files, measured = _write_measured(spark, pipeline, partition, result, staged_dir, clock)
        staged = staging.StagedRun(
            **attempt,
            staged_dir=staged_dir,
            files=files,
            rows_in=rows_in,
            base_snapshot=base.snapshot_id if base else None,
            late_for=sorted({day for i in intakes.values() for day in i["late"]}),
            findings=[dataclasses.asdict(f) for f in findings],
            measured=measured,
        )
    except GateFailedError:
        raise
    except Exception as exc:  # the whole message: a DataError's says what to fix
        ledger.update(pipeline.name, token, status="failed", error=f"stage: {exc}"[:ERROR_CHARS])
        raise
    ledger.update(
        pipeline.name,
        token,
        rows_in=rows_in,
        staged_path=staged_dir,
        details={"intake": intakes, "seconds_stage": clock.seconds},
    )
    log.info(
        "staged %s files (%s rows read) for %s %s in %s", len(files), rows_in, pipeline.table, partition, staged_dir
    )
    return staged


def read_sources(
    spark: Any, runtime: Runtime, pipeline: Pipeline, partition: Partition
) -> list[tuple[sources.Source, sources.Intake, Any]]:
    """Each source read for the partition and its usable records registered as the source's
    view; per source, its accounting and its rejects (None: none)."""
    found = []
    for source in pipeline.sources:
        usable, rejects, intake = sources.take_in(spark, source, partition, runtime.places, pipeline.grain)
        usable.createOrReplaceTempView(source.view)
        found.append((source, intake, rejects))
    return found


def result_of(spark: Any, pipeline: Pipeline, partition: Partition, base: Callable[[], Any]) -> tuple[Any, list]:
    """What the run stages, from the registered views: the SQL's result as the publish mode
    stages it (`base` reads what it builds on), and the added columns the contract allows,
    dropped from it and returned as warnings."""
    contract = pipeline.contract
    result = pipeline.publish.staged_result(transformed(spark, pipeline, partition), list(contract.columns), base)
    added = []
    if contract.on_added_column == "allow":
        added = [f for f in gate.check_contract(result, contract) if f.check == gate.ADDED]
        result = result.drop(*[f.column for f in added if f.column])
    return result, added


def recent_rows(table: Any, pipeline: Pipeline, suite: dict[str, Any], partition: Partition) -> list[int]:
    """The row counts of the partitions before `partition` that the suite's volume rule compares with."""
    volume = suite.get("meta", {}).get("volume")
    if not volume or not pipeline.partition_column:
        return []
    return tables.recent_row_counts(table, pipeline.partition_column, partition, volume["recent_partitions"])


def _write_measured(
    spark: Any, pipeline: Pipeline, partition: Partition, result: Any, staged_dir: str, clock: _Clock
) -> tuple[list[str], dict[str, Any]]:
    """Write the staged files and measure what the gate needs in the same pass: the compiled
    checks, the row count and checksum observed while writing (`audit.Gate.observe`), the
    uniqueness checks over the written key columns alone (clock: `transform_write`, then
    `measure`). The staged files and the measure."""
    suite = gate.load_suite(pipeline.suite)
    also = staging.checksum_aggregates(result)
    column = pipeline.partition_column
    if pipeline.sql_spans and column in result.columns and pipeline.publish.replaces(partition) is not None:
        # SQL over a span may return rows of other partitions: none may be staged here.
        from pyspark.sql import functions as F

        also[_OUTSIDE] = F.count_if(~F.col(f"`{column}`").eqNullSafe(F.lit(partition)))
    contract, plan = gate.plan_for(result, suite, also)
    observed, values_of = plan.observe(result)
    files = staging.write_staged(observed, staged_dir)
    clock.lap("transform_write")
    # The uniqueness passes read their key columns of the written files (nothing without one).
    reads = files and plan.passes
    written = spark.read.parquet(*map(staging.spark_uri, files)).select(*plan.key_columns) if reads else None
    values = plan.count(written, {None: values_of()})[None]
    clock.lap("measure")
    if outside := int(values.pop(_OUTSIDE, 0) or 0):
        staging.remove_dir(staged_dir)
        raise outside_rows_error(pipeline, PartitionRange(partition, partition, pipeline.grain), f"{outside} rows")
    return files, gate.measurement(suite, contract, plan, values)


@_held
def audit(runtime: Runtime, pipeline: Pipeline, staged: staging.StagedRun) -> staging.StagedRun:
    """Gate the staged files; return the run with its row count and checksum.

    A passing partition whose compiled checks were measured while it was staged reads
    nothing and starts no Spark session; GX reads the staged files only for what it must
    judge (a compiled check that failed, for its samples, or a type the gate does not
    compile). A run staged under another suite than today's is measured again from its
    files. On a blocking failure, the files are quarantined and `GateFailedError` raised.
    """
    ledger = runtime.ledger
    clock = _Clock()
    partition = from_key(staged.partition)
    table = tables.load_table(pipeline.table, runtime.catalog)
    suite = gate.load_suite(pipeline.suite)
    recent = recent_rows(table, pipeline, suite, partition)

    @functools.cache
    def frame() -> Any:
        spark = runtime.spark()
        if staged.files:
            return spark.read.parquet(*map(staging.spark_uri, staged.files))
        # nothing written at all: gate an empty partition of the contract's shape
        return spark.createDataFrame([], pipeline.contract.ddl())

    if (measured := gate.remeasured(suite, staged.measured)) is not None:
        contract, plan, values = measured  # the values hold the checksum's too
        report, _ = gate.judge(suite, contract, plan, values, frame, recent)
    else:  # staged before the suite changed: measure it again, as it is now
        report, values = gate.audit(frame(), suite, also=staging.checksum_aggregates(frame()), recent_rows=recent)
    report.findings[:0] = [gate.Finding(**f) for f in staged.findings]
    rows_out, checksum = staging.format_checksum(values)
    clock.lap("gate")
    log.info("%s", report.summary())
    checked = gate.assertions(suite, report.findings)
    measured_run = dataclasses.replace(staged, rows_out=rows_out, checksum=checksum, assertions=checked)
    fields: dict[str, Any] = {"rows_out": rows_out, "checksum": checksum}
    if report.passed:
        details = {"audit": report.to_dict(), "seconds_audit": clock.seconds}
        ledger.update(pipeline.name, staged.run_token, **fields, details=details)
        return measured_run
    quarantine = staging.partition_dir(
        table.location(), "quarantine", pipeline.partition_column, partition, staged.run_token
    )
    staging.move_dir(staged.staged_dir, f"{quarantine}/data")
    _quarantined(
        runtime,
        pipeline,
        staged.run_token,
        partition,
        report,
        quarantine,
        {**fields, "details": {"seconds_audit": clock.seconds}},
        checked,
    )


def _quarantined(
    runtime: Runtime,
    pipeline: Pipeline,
    token: str,
    partition: Partition,
    report: gate.AuditReport,
    quarantine: str,
    fields: dict[str, Any],
    checked: list[dict[str, Any]],
) -> NoReturn:
    """Record a blocked run (what failed, where its files are) and stop it."""
    failed = record_quarantine(runtime, pipeline, token, report, quarantine, fields)
    raise GateFailedError(
        f"{pipeline.table} {partition} failed its quality gate ({failed}); the live partition is unchanged and "
        f"what the run made is quarantined in {quarantine} (wap quarantine show {pipeline.name} "
        f"{partition})\n{report.summary()}",
        checked,
    )


def record_quarantine(
    runtime: Runtime,
    pipeline: Pipeline,
    token: str,
    report: gate.AuditReport,
    quarantine: str,
    fields: dict[str, Any],
) -> str:
    """Record an attempt as quarantined in the ledger (what failed, where its files are); what failed."""
    failed = ", ".join(f"{f.check}({f.column})" if f.column else f.check for f in report.blocking)
    details = {**fields.pop("details", {}), "audit": report.to_dict()}
    runtime.ledger.update(
        pipeline.name,
        token,
        status="quarantined",
        staged_path=quarantine,
        error=f"quality gate failed: {failed}"[:ERROR_CHARS],
        details=details,
        **fields,
    )
    return failed


@_held
def publish(runtime: Runtime, pipeline: Pipeline, staged: staging.StagedRun) -> dict[str, Any]:
    """Swap the staged files in as the live partition, unless that is already done.

    - this attempt already published (a retry after a crash): no commit; the ledger is
      set from the table;
    - the live partition already holds exactly these rows (same checksum): no commit,
      status `skipped`, staged files removed;
    - another run published the partition after this one staged it: no commit, status
      `superseded`, staged files removed, `SupersededError` (the first to publish wins);
    - otherwise one atomic commit, recorded in the table and then in the ledger.
    """
    if staged.checksum is None:
        raise ValueError(f"{pipeline.table} {staged.partition}: publish needs an audited run (no checksum)")
    ledger = runtime.ledger
    clock = _Clock()
    partition = from_key(staged.partition)
    table = tables.load_table(pipeline.table, runtime.catalog)

    snapshot_id = tables.find_publish(table, staged.run_token)
    if snapshot_id is not None:
        status = "published"
        log.info("%s %s was already published by this attempt (snapshot %s)", pipeline.table, partition, snapshot_id)
    elif (
        live := tables.live_version(table, pipeline.publish.replaces(partition))
    ) and live.checksum == staged.checksum:
        status, snapshot_id = "skipped", live.snapshot_id
        staging.remove_dir(staged.staged_dir)
        log.info("%s %s unchanged (checksum %s): nothing to publish", pipeline.table, partition, staged.checksum)
    else:
        status = "published"
        try:
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
                    tables.PARTITION_ZONE: pipeline.grain.zone,
                    tables.ROWS: str(staged.rows_out),
                    tables.CHECKSUM: staged.checksum,
                    tables.CODE_VERSION: staged.code_version,
                    tables.CONTRACT_VERSION: str(staged.contract_version),
                },
                replaces=staged.base_snapshot,
                catalog=runtime.catalog,
            )
        except PartitionChangedError as exc:
            _superseded(runtime, pipeline, staged, exc.live)
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


def transformed(
    spark: Any, pipeline: Pipeline, partition: Partition, last: Partition | None = None, text: str | None = None
) -> Any:
    """The pipeline's SQL (or `text` in its place) on the views of the partition (of the span
    to `last`, for SQL that takes one: `Pipeline.sql_spans`). SQL that Spark cannot analyse (a
    column that does not exist, a syntax error) is a `DataError` caused by Spark's error: the
    same SQL fails every retry."""
    from pyspark.errors import AnalysisException  # also the base of Spark Connect's

    # Spark binds a date as a DATE (daily) and an hour's start as a TIMESTAMP (hourly); `:zone`
    # is the zone of a local day's grain ('UTC' for the others), for from_utc_timestamp.
    args = {"first": partition, "last": last or partition, "partition": partition, "zone": pipeline.grain.zone}
    if last is not None and not pipeline.sql_spans:
        raise ValueError(f"include/sql/{pipeline.sql} takes :partition, one partition: run it once per partition")
    try:
        result = spark.sql(pipeline.sql_text() if text is None else text, args=args)
        result.schema  # noqa: B018 -- analysed now: Spark Connect analyses lazily
    except AnalysisException as exc:
        raise DataError(
            f"include/sql/{pipeline.sql} does not analyse, so no retry can help: fix the SQL, then run the "
            f"partition again (wap run {pipeline.name} --from {key_of(partition)}). Spark says: "
            + str(exc).split("\n\nJVM stacktrace:")[0]
        ) from exc
    return result


_OUTSIDE = "_wap_outside"  # the audit's count of rows not of the run's partition


def outside_rows_error(pipeline: Pipeline, span: PartitionRange, which: str) -> DataError:
    """SQL that takes :first and :last gave rows of partitions the run is not for."""
    first, last = key_of(span.first), key_of(span.last)
    return DataError(
        f"include/sql/{pipeline.sql} returned rows whose {pipeline.partition_column} is outside the run's "
        f"partitions {first} to {last} ({which}): a SQL that takes :first and :last must keep only the rows of "
        "those partitions, each with its partition in that column, so no retry can help. Fix the SQL, then run "
        f"again (wap run {pipeline.name} --from {first} --to {last})."
    )


def base_reader(
    spark: Any, pipeline: Pipeline, table: Any, bases: dict[Partition, tables.PublishedVersion | None]
) -> Callable[[], Any]:
    """Reads what the run replaces as of each partition's version in `bases` (its partitions,
    or the whole table), for a mode that builds on it; nothing is read unless the mode asks."""

    def read() -> Any:
        files = []
        for partition, base in bases.items():
            scope = pipeline.publish.replaces(partition)
            column = pipeline.partition_column if scope is not None else None
            files += tables.partition_files(table, column, scope, as_of=base.snapshot_id) if base else []
        return spark.read.parquet(*map(staging.spark_uri, files)) if files else None

    return read


def _superseded(
    runtime: Runtime, pipeline: Pipeline, staged: staging.StagedRun, live: tables.PublishedVersion | None
) -> NoReturn:
    """Record a run that lost its publish to another run of the same partition, and stop it."""
    staging.remove_dir(staged.staged_dir)
    winner = live.run_id if live else "?"
    message = (
        f"{pipeline.table} {staged.partition}: run {winner} published this partition after run {staged.run_id} "
        "staged it. The first run to publish a partition wins: this run published nothing and its staged files "
        f"are removed. Clear the whole DAG run to re-run it if its data should replace run {winner}'s."
    )
    runtime.ledger.update(pipeline.name, staged.run_token, status="superseded", staged_path=None, error=message)
    raise SupersededError(message)
