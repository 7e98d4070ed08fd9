"""Range runs: one run for consecutive partitions, one pass of work, an outcome per partition.

A run bound to a `PartitionRange` (params `{"partition": "2024-01-01/2024-01-31"}`) does
what a run of each of its partitions alone would do, with one read, one transform, one
gate pass and one commit for all of them:

- stage: every source is read once for the range (landed files: every folder of the range
  and the late folders after it) and the pipeline's SQL, unchanged, runs once per partition
  with `:partition` bound, over those records; the results are written in one Spark job,
  each partition's files in a folder of its own. A partition whose rejects are too many is
  stopped here, on its own;
- audit: the gate's compiled checks of every partition in one grouped aggregation, the
  volume rule per partition (as if the partitions before it had been run first); a failing
  partition is quarantined on its own, with its own ledger row and findings;
- publish: the partitions that passed, in one Iceberg commit whose summary names each
  partition's run token, rows and checksum (`tables.range_summary`). The winner rule (I5)
  holds per partition: one another run published after this one staged is superseded and
  left out of the commit.

Each partition has its own ledger row (its own run token, the run's id), so the planner,
quarantine, versions and rollback see it as a partition like any other. The pipeline's
`range_policy` may ask for all-or-nothing instead: one partition stopped stops the range.

A merged table (a mode that replaces the whole table) is one version for the whole range:
every partition's changes are merged in one pass, which gives the table merging them hour
by hour would (the merge's newest-wins rule is commutative), and one verdict decides.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from wap import audit as gate
from wap import sources, staging, tables
from wap.errors import BadSourceError, DataError, GateFailedError, PartitionChangedError
from wap.partition import Partition, PartitionRange, from_key, key_of
from wap.pipeline import ALL_OR_NOTHING, Pipeline
from wap.runtime import Runtime
from wap.steps import ERROR_CHARS, _Clock, base_reader, outside_rows_error, record_quarantine, transformed

log = logging.getLogger(__name__)


def _whole_table(pipeline: Pipeline, span: PartitionRange) -> bool:
    return pipeline.publish.replaces(span.first) is None


def stage(
    runtime: Runtime, pipeline: Pipeline, span: PartitionRange, run_id: str, try_number: int
) -> staging.StagedRange:
    """Stage every partition of `span` in one pass; see the module's docstring."""
    token = staging.run_token(run_id, try_number)
    keys = [key_of(p) for p in span.partitions()]
    tokens = {key: staging.partition_token(token, key) for key in keys}
    with runtime.ledger.hold(pipeline.name, *tokens.values()):  # every partition's attempt, together
        return _stage(runtime, pipeline, span, run_id, try_number, token, tokens)


def _stage(
    runtime: Runtime,
    pipeline: Pipeline,
    span: PartitionRange,
    run_id: str,
    try_number: int,
    token: str,
    tokens: dict[str, str],
) -> staging.StagedRange:
    from pyspark.sql import functions as F

    contract, ledger = pipeline.contract, runtime.ledger
    table = tables.ensure_table(pipeline.table, contract, runtime.catalog)
    values = dict(zip(tokens, span.partitions(), strict=True))
    first_key = key_of(span.first)
    whole = _whole_table(pipeline, span)  # one version for the range: its files are under the first key
    attempts: dict[str, dict[str, Any]] = {}
    bases: dict[str, tables.PublishedVersion | None] = {}
    code_version = pipeline.code_version()
    for key, value in values.items():
        ledger.reconcile(pipeline.name, key, run_id, lambda t: tables.find_publish(table, t))
        attempts[key] = {
            "pipeline": pipeline.name,
            "table": pipeline.table,
            "partition": key,
            "run_id": run_id,
            "try_number": try_number,
            "run_token": tokens[key],
            "code_version": code_version,
            "contract_version": contract.version,
        }
        ledger.start(**attempts[key])
        bases[key] = tables.live_version(table, pipeline.publish.replaces(value))
    quarantine = {
        key: staging.partition_dir(table.location(), "quarantine", pipeline.partition_column, value, tokens[key])
        for key, value in values.items()
    }
    clock = _Clock()
    stopped: dict[str, str] = {}  # partitions stopped on their own (their ledger rows say why)
    try:
        spark = runtime.spark()
        clock.lap("spark_session")
        findings: dict[str, list[gate.Finding]] = {key: [] for key in values}
        intakes: dict[str, dict[str, dict[str, Any]]] = {key: {} for key in values}
        kept: list[Any] = []  # the sources' records, read once for the counts and the transform
        refused: dict[str, str] = {}  # partitions a refused landed folder stops, as it stops their own runs
        for source in pipeline.sources:
            usable, rejects, taken = sources.take_in_range(spark, source, span, runtime.places, kept)
            usable.createOrReplaceTempView(source.view)
            for key, intake in taken.items():
                if intake.refused:
                    refused.setdefault(key, intake.refused)
                intakes[key][source.view] = {
                    "records": intake.records,
                    "own": intake.own_records,
                    "rejected": intake.rejected,
                    "late": intake.late,
                }
                if intake.rejected and rejects is not None:
                    kept_in = f"{quarantine[key]}/rejects/{source.view}"
                    rejects.where(F.col(sources.LANDED) == key).write.mode("overwrite").json(staging.spark_uri(kept_in))
                    findings[key].append(gate.rejects_finding(intake, kept_in))
        clock.lap("read")
        if refused and (pipeline.range_policy == ALL_OR_NOTHING or whole):
            raise BadSourceError(next(iter(refused.values())))  # as a single run: the whole run stops
        rows_in = {key: sum(int(i["records"]) for i in intakes[key].values()) for key in values}
        ledger.updates(
            pipeline.name,
            {tokens[key]: {"status": "failed", "error": f"stage: {why}"[:ERROR_CHARS]} for key, why in refused.items()},
        )
        stopped.update({key: f"refused: {why}" for key, why in refused.items()})
        suite = gate.load_suite(pipeline.suite)
        for key in values:
            if key not in refused and any(f.severity == gate.BLOCKING for f in findings[key]):
                report = gate.AuditReport(None, findings[key])
                stopped[key] = _quarantine(
                    runtime, pipeline, tokens[key], report, quarantine[key], rows_in=rows_in[key]
                )
                ledger.update(pipeline.name, tokens[key], details={"intake": intakes[key]})
        if stopped and (pipeline.range_policy == ALL_OR_NOTHING or whole):
            _stop_all(runtime, pipeline, span, tokens, stopped, suite)
        going = [key for key in values if key not in stopped]
        if not going:  # every partition stopped at its rejects: nothing to transform
            return staging.StagedRange(pipeline.name, span.key, run_id, try_number, token, [], stopped)
        staged_dir = staging.partition_dir(table.location(), "data", pipeline.partition_column, span.first, token)
        staged_dir = f"{staged_dir}-range-{len(values)}"
        spans = pipeline.sql_spans  # the SQL's form, read once for the stage
        result = _range_result(spark, pipeline, table, span, {key: values[key] for key in going}, bases, whole, spans)
        if contract.on_added_column == "allow":
            added = [f for f in gate.check_contract(result.drop(staging.RANGE_KEY), contract) if f.check == gate.ADDED]
            result = result.drop(*[f.column for f in added if f.column])
            for key in going:
                findings[key] += added
        # The SQL once per partition: each query is its own aggregation over 1/N of the range's
        # rows, so fewer shuffle partitions each, or N times the default's tasks (and AQE's re-planning).
        shuffle = spark.conf.get("spark.sql.shuffle.partitions") or "200"
        if not spans:
            spark.conf.set("spark.sql.shuffle.partitions", str(max(2, -(-int(shuffle) // len(going)))))
        try:
            files = staging.write_staged_by(result, staged_dir)
        finally:
            spark.conf.set("spark.sql.shuffle.partitions", shuffle)
            for frame in kept:
                frame.unpersist()
            for name in spark.catalog.listTables():
                if name.name.startswith(_PARTS) and name.isTemporary:
                    spark.catalog.dropTempView(name.name)
        if outside := sorted(set(files) - set(going)):
            staging.remove_dir(staged_dir)
            shown = ["null" if key == _NULL_KEY else key for key in outside[:5]]
            raise outside_rows_error(pipeline, span, ", ".join(shown))
        clock.lap("transform_write")
    except GateFailedError:
        raise
    except Exception as exc:  # the whole message: a DataError's says what to fix
        failed = {"status": "failed", "error": f"stage: {exc}"[:ERROR_CHARS]}
        ledger.updates(pipeline.name, {tokens[key]: failed for key in values if key not in stopped})
        raise
    runs = []
    recorded: dict[str, dict[str, Any]] = {}
    late_before = {day for key in going for i in intakes[key].values() for day in i["late"] if day < first_key}
    for key in going:
        written = first_key if whole else key
        own = files.get(written, [])
        folder = f"{staged_dir}/{staging.RANGE_KEY}={written}"
        runs.append(
            staging.StagedRun(
                **attempts[key],
                staged_dir=folder,
                files=own,
                rows_in=rows_in[key],
                base_snapshot=base.snapshot_id if (base := bases[key]) else None,
                # Late records for partitions inside the range are in their runs already.
                late_for=sorted(
                    day for day in late_before if day in {d for i in intakes[key].values() for d in i["late"]}
                ),
                findings=[dataclasses.asdict(f) for f in findings[key]],
            )
        )
        recorded[tokens[key]] = {
            "rows_in": rows_in[key],
            "staged_path": folder,
            "details": {"intake": intakes[key], "range": span.key, "seconds_stage": clock.seconds},
        }
    ledger.updates(pipeline.name, recorded)
    log.info(
        "staged %s partitions of %s %s (%s stopped) in %s",
        len(runs),
        pipeline.table,
        span.key,
        len(stopped),
        staged_dir,
    )
    return staging.StagedRange(pipeline.name, span.key, run_id, try_number, token, runs, stopped)


_PARTS = "wap_range_part_"  # temporary views of one range's per-partition results
_NULL_KEY = "__HIVE_DEFAULT_PARTITION__"  # Spark's folder for a null partitionBy value
QUARANTINED = "quarantined: "  # how the reason of a partition stopped by its gate or rejects starts


def _range_result(
    spark: Any,
    pipeline: Pipeline,
    table: Any,
    span: PartitionRange,
    going: dict[str, Partition],
    bases: dict[str, tables.PublishedVersion | None],
    whole: bool,
    spans: bool,
) -> Any:
    """The staged result of the partitions `going`, keyed by `staging.RANGE_KEY`.

    SQL that takes a span runs once, for the range, and each row's partition column says its
    partition (rows of a partition stopped at its rejects are left out); SQL of one partition
    runs once per partition, and the results are unioned. A merged table is one version: every
    partition's changes merged in, under the first partition's key.
    """
    from pyspark.sql import functions as F

    columns = list(pipeline.contract.columns)
    first_key = key_of(span.first)
    if whole:
        reader = base_reader(spark, pipeline, table, {span.first: bases[first_key]})
        if spans:
            changes = transformed(spark, pipeline, span.first, span.last)
        else:
            changes = _union(spark, [transformed(spark, pipeline, value) for value in going.values()])
        return pipeline.publish.staged_result(changes, columns, reader).withColumn(staging.RANGE_KEY, F.lit(first_key))
    if not spans:
        parts = [
            pipeline.publish.staged_result(
                transformed(spark, pipeline, value), columns, base_reader(spark, pipeline, table, {value: bases[key]})
            ).withColumn(staging.RANGE_KEY, F.lit(key))
            for key, value in going.items()
        ]
        return _union(spark, parts)
    changes = transformed(spark, pipeline, span.first, span.last)
    column = pipeline.partition_column
    if column is None or column not in changes.columns:
        raise DataError(
            f"include/sql/{pipeline.sql} takes :first and :last but returns no {column}, the table's partition "
            f"column, so its rows cannot be put in their partitions: no retry can help. Return {column}, then run "
            f"the range again (wap run {pipeline.name} --from {first_key} --to {key_of(span.last)})."
        )
    reader = base_reader(spark, pipeline, table, {value: bases[key] for key, value in going.items()})
    result = pipeline.publish.staged_result(changes, columns, reader)
    result = result.withColumn(staging.RANGE_KEY, F.date_format(F.col(column), span.grain.spark_key_format))
    stopped = [key_of(p) for p in span.partitions() if key_of(p) not in going]
    # A null key is kept: written under Hive's default partition, it is refused as outside the range.
    return result.where(~F.coalesce(F.col(staging.RANGE_KEY).isin(stopped), F.lit(False))) if stopped else result


def _union(spark: Any, parts: list[Any]) -> Any:
    """The union of the partitions' results, by column name, in one analysis (a chain of
    `unionByName` analyses the growing plan again at each step: quadratic in the partitions)."""
    columns = ", ".join(f"`{c}`" for c in parts[0].columns)
    for n, part in enumerate(parts):
        part.createOrReplaceTempView(f"{_PARTS}{n}")
    return spark.sql(" UNION ALL ".join(f"SELECT {columns} FROM {_PARTS}{n}" for n in range(len(parts))))


def _quarantine(
    runtime: Runtime,
    pipeline: Pipeline,
    token: str,
    report: gate.AuditReport,
    quarantine: str,
    **fields: Any,
) -> str:
    """Record one partition of the range as quarantined; the reason it stopped."""
    return QUARANTINED + record_quarantine(runtime, pipeline, token, report, quarantine, fields)


def _stop_all(
    runtime: Runtime,
    pipeline: Pipeline,
    span: PartitionRange,
    tokens: dict[str, str],
    stopped: dict[str, str],
    suite: dict[str, Any],
    staged: dict[str, str] | None = None,
) -> Any:
    """All or nothing: a stopped partition stops the range; the others publish nothing."""
    why = "; ".join(f"{key} {reason}" for key, reason in stopped.items())
    for key, token in tokens.items():
        if key in stopped:
            continue
        if staged and key in staged:
            staging.remove_dir(staged[key])
        runtime.ledger.update(
            pipeline.name,
            token,
            status="failed",
            staged_path=None,
            error=f"range {span.key} is all or nothing and partitions of it were stopped ({why})"[:ERROR_CHARS],
        )
    raise GateFailedError(_stopped_message(pipeline, span, stopped, published=False), [])


def _stopped_message(pipeline: Pipeline, span: PartitionRange, stopped: dict[str, str], *, published: bool) -> str:
    shown = "\n".join(
        f"  {key}: {reason}"
        + (f" (wap quarantine show {pipeline.name} {key})" if reason.startswith(QUARANTINED) else "")
        for key, reason in stopped.items()
    )
    rest = (
        "the others are published"
        if published
        else "nothing of the range is published (range_policy all-or-nothing)"
        if pipeline.range_policy == ALL_OR_NOTHING or _whole_table(pipeline, span)
        else "the others go on"
    )
    return (
        f"{pipeline.table} {span.key}: {len(stopped)} partition(s) did not pass; {rest}; the live partitions of those "
        f"stopped are unchanged. Fix the data or the suite, then run them again.\n{shown}"
    )


def audit(runtime: Runtime, pipeline: Pipeline, staged: staging.StagedRange) -> staging.StagedRange:
    """Gate every staged partition in one pass; quarantine those that fail, each on its own."""
    with runtime.ledger.hold(pipeline.name, *[run.run_token for run in staged.runs]):
        return _audit(runtime, pipeline, staged)


def _audit(runtime: Runtime, pipeline: Pipeline, staged: staging.StagedRange) -> staging.StagedRange:
    from pyspark.sql import functions as F

    ledger, clock = runtime.ledger, _Clock()
    span = pipeline.grain.parse_range(staged.partition)
    if not staged.runs:
        return staged
    spark = runtime.spark()
    table = tables.load_table(pipeline.table, runtime.catalog)
    suite = gate.load_suite(pipeline.suite)
    whole = _whole_table(pipeline, span)
    keys = [staged.runs[0].partition] if whole else [run.partition for run in staged.runs]
    files = sorted({f for run in staged.runs for f in run.files})
    if files:
        frame = spark.read.parquet(*map(staging.spark_uri, files))
        frame = frame.drop(staging.RANGE_KEY).withColumn(
            staging.RANGE_KEY, F.regexp_extract(F.col("_metadata.file_path"), f"/{staging.RANGE_KEY}=([^/]+)/", 1)
        )
    else:
        frame = spark.createDataFrame([], f"{pipeline.contract.ddl()}, {staging.RANGE_KEY} STRING")
    volume = suite.get("meta", {}).get("volume")
    live_rows = tables.live_row_counts(table, pipeline.partition_column) if volume and pipeline.partition_column else {}
    checksum = staging.checksum_aggregates(frame.drop(staging.RANGE_KEY))
    reports = gate.audit_by(frame, staging.RANGE_KEY, keys, suite, also=checksum, live_rows=live_rows)
    clock.lap("gate")
    passed, stopped = [], dict(staged.stopped)
    recorded: dict[str, dict[str, Any]] = {}  # the passing partitions' rows, written together
    checked_by: dict[str, list[dict[str, Any]]] = {}
    table_location = table.location()
    for run in staged.runs:
        report, values = reports[keys[0] if whole else run.partition]
        report = gate.AuditReport(report.rows, [gate.Finding(**f) for f in run.findings] + report.findings)
        rows_out, checksum_text = staging.format_checksum(values)
        checked = checked_by[run.partition] = gate.assertions(suite, report.findings)
        measured = dataclasses.replace(run, rows_out=rows_out, checksum=checksum_text, assertions=checked)
        fields: dict[str, Any] = {"rows_out": rows_out, "checksum": checksum_text}
        if report.passed:
            recorded[run.run_token] = {**fields, "details": {"audit": report.to_dict(), "seconds_audit": clock.seconds}}
            passed.append(measured)
            continue
        quarantine = staging.partition_dir(
            table_location, "quarantine", pipeline.partition_column, from_key(run.partition), run.run_token
        )
        if not whole or run is staged.runs[0]:
            staging.move_dir(run.staged_dir, f"{quarantine}/data")
        stopped[run.partition] = _quarantine(runtime, pipeline, run.run_token, report, quarantine, **fields)
    ledger.updates(pipeline.name, recorded)
    log.info("gated %s partitions of %s %s: %s passed", len(staged.runs), pipeline.table, span.key, len(passed))
    result = dataclasses.replace(staged, runs=passed, stopped=stopped, checked=gate.merged_assertions(checked_by))
    if stopped and passed and (pipeline.range_policy == ALL_OR_NOTHING or whole):
        tokens = {run.partition: run.run_token for run in passed}
        _stop_all(runtime, pipeline, span, tokens, stopped, suite, {run.partition: run.staged_dir for run in passed})
    return result


def publish(runtime: Runtime, pipeline: Pipeline, staged: staging.StagedRange) -> dict[str, Any]:
    """Publish every partition that passed in one commit; an outcome per partition (as `steps.publish`)."""
    with runtime.ledger.hold(pipeline.name, *[run.run_token for run in staged.runs]):
        return _publish(runtime, pipeline, staged)


def _publish(runtime: Runtime, pipeline: Pipeline, staged: staging.StagedRange) -> dict[str, Any]:
    ledger, clock = runtime.ledger, _Clock()
    span = pipeline.grain.parse_range(staged.partition)
    whole = _whole_table(pipeline, span)
    table = tables.load_table(pipeline.table, runtime.catalog)
    outcome: dict[str, str] = {}
    snapshots: dict[str, int | None] = {}
    going: dict[str, staging.StagedRun] = {}
    for run in staged.runs:
        if run.checksum is None:
            raise ValueError(f"{pipeline.table} {run.partition}: publish needs an audited run (no checksum)")
        if (snapshot_id := tables.find_publish(table, run.run_token)) is not None:
            outcome[run.partition], snapshots[run.partition] = "published", snapshot_id  # a retry after a crash
        elif (live := tables.live_version(table, pipeline.publish.replaces(from_key(run.partition)))) and (
            live.checksum == run.checksum
        ):
            outcome[run.partition], snapshots[run.partition] = "skipped", live.snapshot_id
            if not whole:
                staging.remove_dir(run.staged_dir)
        else:
            going[run.partition] = run
    superseded: dict[str, str] = {}
    if whole and going and len(going) < len(staged.runs):
        going = {}  # the table's version is already live (a retry after the commit); nothing to add
    while going:
        first = next(iter(going.values()))
        changes: dict[Partition, tuple[list[str], int | object | None]] = (
            {from_key(key): (run.files, run.base_snapshot) for key, run in going.items()}
            if not whole
            else {span.first: (first.files, first.base_snapshot)}
        )
        properties = {
            tables.PIPELINE: pipeline.name,
            tables.RUN_ID: staged.run_id,
            tables.RUN_TOKEN: staged.run_token,
            tables.PARTITION: span.key,
            tables.PARTITION_ZONE: pipeline.grain.zone,
            tables.ROWS: str(sum(run.rows_out or 0 for run in going.values())),
            tables.CHECKSUM: "",
            tables.CODE_VERSION: first.code_version,
            tables.CONTRACT_VERSION: str(first.contract_version),
            **tables.range_summary(
                {key: (run.run_token, run.rows_out or 0, run.checksum or "") for key, run in going.items()}
            ),
        }
        try:
            snapshot_id = tables.swap_partitions(
                pipeline.table, pipeline.partition_column, changes, properties, catalog=runtime.catalog
            )
        except PartitionChangedError as exc:
            lost = [key for key in going if whole or from_key(key) == exc.partition]
            for key in lost:
                run = going.pop(key)
                winner = exc.live.run_id if exc.live else "?"
                superseded[key] = f"superseded: run {winner} published it after this run staged it"
                outcome[key] = "superseded"
                if not whole or not going:
                    staging.remove_dir(run.staged_dir)
                ledger.update(
                    pipeline.name,
                    run.run_token,
                    status="superseded",
                    staged_path=None,
                    error=f"{pipeline.table} {key}: {superseded[key]}. The first run to publish a partition wins.",
                )
            continue
        for key in going:
            outcome[key], snapshots[key] = "published", snapshot_id
        log.info("published %s partitions of %s %s in snapshot %s", len(going), pipeline.table, span.key, snapshot_id)
        break
    clock.lap("commit")
    ledger.updates(
        pipeline.name,
        {
            run.run_token: {
                "status": status,
                "snapshot_id": snapshots[run.partition],
                "error": None,
                "details": {"seconds_publish": clock.seconds},
                **({"staged_path": None} if status == "skipped" else {}),
            }
            for run in staged.runs
            if (status := outcome[run.partition]) != "superseded"
        },
    )
    stopped = {**staged.stopped, **superseded}
    return {
        "status": "published" if "published" in outcome.values() else "skipped" if outcome else "none",
        "partition": span.key,
        "partitions": {run.partition: outcome[run.partition] for run in staged.runs},
        "published": [key for key, status in outcome.items() if status in ("published", "skipped")],
        "snapshot_id": max((s for s in snapshots.values() if s is not None), default=None),
        "rows": sum(run.rows_out or 0 for run in staged.runs if outcome[run.partition] != "superseded"),
        "stopped": stopped,
        "message": _stopped_message(pipeline, span, stopped, published=True) if stopped else "",
    }
