"""OpenLineage: what each task read and wrote, named as the live data, with facets.

The `apache-airflow-providers-openlineage` provider emits the events (START, then
COMPLETE or FAIL, for every task and DAG run) and owns transport: a file of JSON lines
on the embedded default, HTTP to Marquez deployed, chosen by the environment only
(`AIRFLOW__OPENLINEAGE__TRANSPORT`). The WAP tasks tell it their datasets through
`get_openlineage_facets_on_complete/failure` (see `tasks`): each task body calls
`record(...)`, the operator hands the record to the provider.

Naming (OpenLineage conventions): a dataset is named by where its data lives —
namespace `file` and the absolute path on a local disk, `s3://<bucket>` and the key for
object stores — never a staging or quarantine path. A table also carries a `symlinks`
facet with its catalog name (`iceberg://<catalog>`, `silver.orders`).

Facets on a published table: schema, outputStatistics (rows, bytes, files),
dataQualityAssertions (every check of the gate, pass or fail), columnLineage (parsed
from the pipeline's SQL by `openlineage-sql`), version (the Iceberg snapshot id). Run
facets: `wapPartition` (the partition and its window) and `wapLedger` (the ledger row:
pipeline, run id, try, attempt token, status). Their JSON schemas are in `lineage_facets/`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wap.partition import Grain, Partition, PartitionRange, grain_of, span_from_key, span_key

if TYPE_CHECKING:
    from openlineage.client.event_v2 import Dataset

    from wap.pipeline import Pipeline
    from wap.staging import StagedRun

FACET_SCHEMAS = Path(__file__).with_name("lineage_facets")
# Where the custom facets' schemas are named; resolved offline from FACET_SCHEMAS.
FACET_SCHEMA_URL = "https://wap-templates.invalid/spec/facets/1-0-0/{name}.json#/$defs/{name}"


def transport_problem() -> str | None:
    """Make sure the configured OpenLineage file transport can write its file; else say why.

    The provider's file transport does not create its folder: with a fresh data folder every
    event fails to write and every run succeeds with no lineage, saying so only at debug
    level. So the folder is made wherever these DAGs load, and what cannot be fixed is said.
    """
    import json
    import os

    from airflow.configuration import conf

    text = conf.get("openlineage", "transport", fallback="") or ""
    try:
        transport = json.loads(text) if text.strip() else {}
    except ValueError:
        return f"OpenLineage transport {text[:200]!r} is not JSON: no lineage events are sent"
    if not isinstance(transport, dict) or transport.get("type") != "file" or not transport.get("log_file_path"):
        return None
    folder = Path(transport["log_file_path"]).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return (
            f"OpenLineage events cannot be written to {transport['log_file_path']}: {exc}; this run's lineage is lost"
        )
    if not os.access(folder, os.W_OK):
        return f"OpenLineage events cannot be written to {folder} (not writable); this run's lineage is lost"
    return None


# ------------------------------------------------------------------ what a task records
_recorded: dict[str, Any] = {}


def begin() -> None:
    """Start a task's record afresh (one task per process on a worker, many under dag.test)."""
    _recorded.clear()
    _recorded.update(inputs=[], outputs=[], run_facets={})


def record(
    inputs: list[Dataset] | None = None,
    outputs: list[Dataset] | None = None,
    run_facets: dict[str, Any] | None = None,
) -> None:
    """Add datasets and run facets to the running task's lineage (replacing same-named ones)."""
    if not _recorded:
        begin()
    for key, new in (("inputs", inputs or []), ("outputs", outputs or [])):
        names = {(d.namespace, d.name) for d in new}
        _recorded[key] = [d for d in _recorded[key] if (d.namespace, d.name) not in names] + list(new)
    _recorded["run_facets"].update(run_facets or {})


def recorded() -> Any:
    """The task's lineage as the provider wants it (an `OperatorLineage`)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=list(_recorded.get("inputs", [])),
        outputs=list(_recorded.get("outputs", [])),
        run_facets=dict(_recorded.get("run_facets", {})),
    )


# ------------------------------------------------------------------ naming
def location_name(location: str) -> tuple[str, str]:
    """(namespace, name) of a storage location, by the OpenLineage naming conventions."""
    scheme, _, rest = location.partition("://")
    if not _:
        return "file", str(Path(location).resolve())
    if scheme == "file":
        return "file", "/" + rest.lstrip("/")
    bucket, _, key = rest.partition("/")
    return f"{scheme}://{bucket}", key or "/"


def catalog_namespace() -> str:
    from wap.settings import load_settings

    return f"iceberg://{load_settings().catalog_name}"


def dataset(location: str, facets: dict[str, Any] | None = None, table: str | None = None) -> Dataset:
    """A dataset named by where it lives; a table adds its catalog name (symlinks) and catalog."""
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import catalog_dataset, symlinks_dataset

    namespace, name = location_name(location)
    facets = dict(facets or {})
    if table:
        from wap.settings import load_settings

        settings = load_settings()
        facets["symlinks"] = symlinks_dataset.SymlinksDatasetFacet(
            identifiers=[symlinks_dataset.Identifier(namespace=catalog_namespace(), name=table, type="TABLE")]
        )
        facets["catalog"] = catalog_dataset.CatalogDatasetFacet(
            framework="iceberg",
            type="sql",
            name=settings.catalog_name,
            warehouseUri=settings.warehouse,
            source="pyiceberg",
        )
    return Dataset(namespace=namespace, name=name, facets=facets)


def schema_facet(columns: dict[str, str]) -> Any:
    from openlineage.client.facet_v2 import schema_dataset

    return schema_dataset.SchemaDatasetFacet(
        fields=[schema_dataset.SchemaDatasetFacetFields(name=c, type=t) for c, t in columns.items()]
    )


def output_statistics(rows: int | None, files: list[str]) -> Any:
    from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

    from wap import staging

    size = 0
    for path in files:
        filesystem, local = staging.file_system(path)  # an object store's, configured like the catalog's
        size += filesystem.get_file_info(local).size or 0
    return stats.OutputStatisticsOutputDatasetFacet(rowCount=rows, size=size, fileCount=len(files))


# The gate's severities in the words of the OpenLineage spec.
_SEVERITY = {"blocking": "error", "warning": "warn"}


def assertions_facet(checks: list[dict[str, Any]]) -> Any:
    """Every check the gate ran: `[{"check", "column", "success", "severity", "params"?}, ...]`."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    return dq.DataQualityAssertionsDatasetFacet(
        assertions=[
            dq.Assertion(
                assertion=c["check"],
                success=bool(c["success"]),
                column=c.get("column"),
                severity=_SEVERITY.get(c.get("severity", ""), c.get("severity")),
                params=c.get("params") or {},
            )
            for c in checks
        ]
    )


def version_facet(snapshot_id: int) -> Any:
    from openlineage.client.facet_v2 import dataset_version_dataset

    return dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(snapshot_id))


def column_lineage(sql: str, inputs: dict[str, Dataset]) -> Any | None:
    """Column lineage of a pipeline's SQL, parsed by openlineage-sql; `inputs`: view -> dataset.

    The parameters (`:first`, `:last`, `:partition`; `:zone`) are replaced by a date literal
    (a zone's name) for the parser only. None if the SQL cannot be parsed (lineage must never fail a run).
    """
    import openlineage_sql
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    try:
        bound = re.sub(r"(?<![\w:]):(first|last|partition)\b", "DATE '2000-01-01'", sql)
        meta = openlineage_sql.parse([re.sub(r"(?<![\w:]):zone\b", "'UTC'", bound)], dialect="spark")
    except Exception:  # a parser gap must not fail the run: no column lineage then
        return None
    if meta is None:
        return None
    fields = {}
    for column in meta.column_lineage:
        sources = [
            cl.InputField(
                namespace=inputs[origin.origin.name].namespace, name=inputs[origin.origin.name].name, field=origin.name
            )
            for origin in column.lineage
            if origin.origin is not None and origin.origin.name in inputs
        ]
        if sources:
            fields[column.descendant.name] = cl.Fields(
                inputFields=sources, transformationType="", transformationDescription=""
            )
    return cl.ColumnLineageDatasetFacet(fields=fields) if fields else None


# ------------------------------------------------------------------ custom run facets
def _custom_facets() -> tuple[type, type]:
    """The two run facets of this project, defined on first use (keeps imports light)."""
    global _FACETS
    if _FACETS is None:
        import attr
        from openlineage.client.facet_v2 import RunFacet

        @attr.define
        class WapPartitionRunFacet(RunFacet):
            table: str
            partitionColumn: str
            partition: str
            windowStart: str
            windowEnd: str
            timeZone: str = "UTC"  # whose calendar days the keys are (`daily_in`)
            partitions: dict[str, Any] | None = None  # a range run's outcome per partition

            @staticmethod
            def _get_schema() -> str:
                return FACET_SCHEMA_URL.format(name="WapPartitionRunFacet")

        @attr.define
        class WapLedgerRunFacet(RunFacet):
            pipeline: str
            runId: str
            tryNumber: int
            attempt: str  # the ledger's run_token (a field named *token* is masked by Airflow)
            status: str | None = None
            codeVersion: str | None = None
            contractVersion: int | None = None

            @staticmethod
            def _get_schema() -> str:
                return FACET_SCHEMA_URL.format(name="WapLedgerRunFacet")

        _FACETS = (WapPartitionRunFacet, WapLedgerRunFacet)
    return _FACETS


_FACETS: tuple[type, type] | None = None


def partition_facet(
    table: str,
    column: str | None,
    partition: Partition | PartitionRange,
    outcomes: dict[str, Any] | None = None,
    grain: Grain | None = None,
) -> Any:
    """The run's partition (or range), its window in UTC and the zone its days are of (`grain`:
    the pipeline's; default the value's)."""
    first, last = (partition.first, partition.last) if isinstance(partition, PartitionRange) else (partition, partition)
    grain = grain or grain_of(first)
    return _custom_facets()[0](
        table=table,
        partitionColumn=column,
        partition=span_key(partition),
        windowStart=grain.window(first)[0].isoformat(),
        windowEnd=grain.window(last)[1].isoformat(),
        timeZone=grain.zone,
        partitions=outcomes,
    )


def ledger_facet(
    pipeline: str,
    run_id: str,
    try_number: int,
    run_token: str,
    status: str | None = None,
    code_version: str | None = None,
    contract_version: int | None = None,
) -> Any:
    return _custom_facets()[1](
        pipeline=pipeline,
        runId=run_id,
        tryNumber=try_number,
        attempt=run_token,
        status=status,
        codeVersion=code_version,
        contractVersion=contract_version,
    )


# ------------------------------------------------------------------ per step of a run
def sources(pipeline: Pipeline) -> dict[str, Dataset]:
    """The pipeline's inputs by the view its SQL reads them as."""
    from wap.sources import PublishedTable

    return {
        s.view: dataset(s.location(), table=s.table if isinstance(s, PublishedTable) else None)
        for s in pipeline.sources
    }


def table(pipeline: Pipeline, facets: dict[str, Any] | None = None) -> Dataset:
    from wap import tables

    return dataset(tables.load_table(pipeline.table).location(), facets, table=pipeline.table)


def run_facets(
    pipeline: Pipeline,
    partition: Partition | PartitionRange,
    run_id: str,
    try_number: int,
    outcomes: dict[str, Any] | None = None,
    **ledger: Any,
) -> dict[str, Any]:
    from wap.staging import run_token

    return {
        "wapPartition": partition_facet(
            pipeline.table,
            pipeline.publish.window_column(pipeline.partition_column),
            partition,
            outcomes,
            pipeline.grain,
        ),
        "wapLedger": ledger_facet(pipeline.name, run_id, try_number, run_token(run_id, try_number), **ledger),
    }


def as_input(ds: Dataset, **input_facets: Any) -> Any:
    from openlineage.client.event_v2 import InputDataset

    return InputDataset(namespace=ds.namespace, name=ds.name, facets=ds.facets, inputFacets=input_facets)


def as_output(ds: Dataset, **output_facets: Any) -> Any:
    from openlineage.client.event_v2 import OutputDataset

    return OutputDataset(namespace=ds.namespace, name=ds.name, facets=ds.facets, outputFacets=output_facets)


def staging(
    pipeline: Pipeline, partition: Partition | PartitionRange, run_id: str, try_number: int, status: str
) -> None:
    """Record a stage: the sources in; out, once staged, the table's next version (its
    staging path is never named)."""
    record(
        inputs=[as_input(d) for d in sources(pipeline).values()],
        run_facets=run_facets(pipeline, partition, run_id, try_number, status=status),
    )
    if status == "staged":
        record(outputs=[as_output(table(pipeline, {"schema": schema_facet(pipeline.contract.columns)}))])


def audited(pipeline: Pipeline, staged: StagedRun, checked: list[dict[str, Any]], status: str) -> None:
    """Record an audit: the table's candidate version in, with every check and its result."""
    record(
        inputs=[as_input(table(pipeline), dataQualityAssertions=assertions_facet(checked))],
        run_facets=run_facets(
            pipeline, span_from_key(staged.partition), staged.run_id, staged.try_number, status=status
        ),
    )


def published(
    pipeline: Pipeline, staged: StagedRun, snapshot_id: int, status: str, outcomes: dict[str, Any] | None = None
) -> None:
    """Record a publish: the sources in, the live table out with every facet of this version."""
    inputs = sources(pipeline)
    facets = {
        "schema": schema_facet(pipeline.contract.columns),
        "dataQualityAssertions": assertions_facet(staged.assertions),
        "version": version_facet(snapshot_id),
    }
    lineage_of_columns = column_lineage(pipeline.sql_text(), inputs)
    if lineage_of_columns is not None:
        facets["columnLineage"] = lineage_of_columns
    record(
        inputs=[as_input(d) for d in inputs.values()],
        outputs=[as_output(table(pipeline, facets), outputStatistics=output_statistics(staged.rows_out, staged.files))],
        run_facets=run_facets(
            pipeline,
            span_from_key(staged.partition),
            staged.run_id,
            staged.try_number,
            outcomes,
            status=status,
            code_version=staged.code_version,
            contract_version=staged.contract_version,
        ),
    )
