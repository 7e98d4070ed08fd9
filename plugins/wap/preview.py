"""`wap preview`: a partition's transform and gate on its landed data, shown; nothing written.

The same steps as a run, up to the gate's verdict: the sources are read with the run's
reject accounting (`steps.read_sources`), the SQL's result is made as the stage makes it
(`steps.result_of`, on the live table's version for a publish mode that builds on it), and
the gate judges it with the suite, the contract and the volume rule against the live
table's recent partitions (`audit.audit`, the gate's full measure). Nothing is staged, no
table is created or changed, no ledger row is written, no rejects are kept: the `dbt show`
of this repository.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from wap import audit as gate
from wap import staging, steps, tables
from wap.partition import Partition, key_of
from wap.pipeline import Pipeline
from wap.runtime import Runtime

NOT_KEPT = "no folder (a preview keeps nothing)"


@dataclass
class Previewed:
    """What a run of the partition would stage and what its gate would say."""

    pipeline: str
    partition: str
    sources: list[dict[str, Any]]  # per source: view, records, own, rejected (by reason), sample, late
    passed: bool
    checks: list[dict[str, Any]]  # every check the gate ran: check, column, success, severity
    findings: list[dict[str, Any]]  # what failed or warned, with observed values and samples
    rows: int | None = None  # None: the run would stop at its rejects, before the transform
    checksum: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)  # the result's first rows


def preview(runtime: Runtime, pipeline: Pipeline, partition: Partition, rows: int = 10) -> Previewed:
    """Read, transform and gate `partition` as a run would; show up to `rows` of its result."""
    from pyiceberg.exceptions import NoSuchTableError

    spark = runtime.spark()
    suite = gate.load_suite(pipeline.suite)
    try:
        table = tables.load_table(pipeline.table, runtime.catalog)
    except NoSuchTableError:  # never published: nothing to build on or compare with
        table = None
    findings: list[gate.Finding] = []
    read = []
    for source, intake, rejects in steps.read_sources(spark, runtime, pipeline, partition):
        read.append({"view": source.view, **{k: v for k, v in dataclasses.asdict(intake).items() if k != "source"}})
        if rejects is not None:
            findings.append(gate.rejects_finding(intake, NOT_KEPT))
    shown = Previewed(pipeline.name, key_of(partition), read, passed=True, checks=[], findings=[])
    if any(f.severity == gate.BLOCKING for f in findings):  # the run stops here
        return _judged(shown, suite, gate.AuditReport(None, findings), staged=False)
    if table is None:
        base: Any = lambda: None  # noqa: E731
        recent: list[int] = []
    else:
        live = tables.live_version(table, pipeline.publish.replaces(partition))
        base = steps.base_reader(spark, pipeline, table, {partition: live})
        recent = steps.recent_rows(table, pipeline, suite, partition)
    result, added = steps.result_of(spark, pipeline, partition, base)
    result = result.cache()  # read by the gate and for the sample: the sources are read once
    try:
        report, values = gate.audit(result, suite, also=staging.checksum_aggregates(result), recent_rows=recent)
        shown.rows, shown.checksum = staging.format_checksum(values)
        shown.columns = {f.name: f.dataType.simpleString() for f in result.schema.fields}
        shown.sample = [row.asDict() for row in result.limit(rows).collect()] if rows > 0 else []
    finally:
        result.unpersist()
    report.findings[:0] = [*findings, *added]
    return _judged(shown, suite, report)


def _judged(shown: Previewed, suite: dict[str, Any], report: gate.AuditReport, staged: bool = True) -> Previewed:
    shown.passed = report.passed
    shown.checks = gate.assertions(suite, report.findings, staged=staged)
    shown.findings = [dataclasses.asdict(f) for f in report.findings]
    return shown
