"""Iceberg tables through pyiceberg: the live tables, and the one atomic partition swap.

Publishing is one catalog commit that deletes the partition's current files and adds the
staged files by reference: readers see the old partition or the new one, never a mix,
and no data is copied. The commit's snapshot summary carries the run that made it, so
the table itself says what is published (`wap.*` properties below).

This module is the only one that knows the table format.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from wap.settings import load_settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

# Snapshot summary keys written by every publish.
RUN_ID, RUN_TOKEN, PARTITION, ROWS, CHECKSUM, PIPELINE, CODE_VERSION = (
    "wap.run-id",
    "wap.run-token",
    "wap.partition",
    "wap.rows",
    "wap.checksum",
    "wap.pipeline",
    "wap.code-version",
)
COMMIT_RETRIES = 5

# Contract type names (Spark SQL's) and the Iceberg types they are stored as.
_PRIMITIVES = {
    "string": "StringType",
    "date": "DateType",
    "timestamp": "TimestamptzType",
    "timestamp_ntz": "TimestampType",
    "int": "IntegerType",
    "bigint": "LongType",
    "double": "DoubleType",
    "float": "FloatType",
    "boolean": "BooleanType",
}


class PublishConflictError(RuntimeError):
    """Another run published this partition while this one was publishing."""


@dataclass(frozen=True)
class PublishedVersion:
    """The live version of one partition, as the table's history records it."""

    snapshot_id: int
    run_id: str
    run_token: str
    rows: int
    checksum: str
    code_version: str
    committed_at: dt.datetime


def get_catalog() -> Catalog:
    """The configured catalog; one per configuration per process (each publish asks often)."""
    settings = load_settings()
    if settings.catalog_uri.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return _catalog(settings.catalog_name, tuple(sorted(settings.catalog_properties.items())))


@cache
def _catalog(name: str, properties: tuple[tuple[str, str], ...]) -> Catalog:
    from pyiceberg.catalog import load_catalog

    return load_catalog(name, **dict(properties))


def iceberg_type(spark_type: str) -> Any:
    """The Iceberg type for a contract's Spark SQL type name (`decimal(12,2)`, `string`, ...)."""
    from pyiceberg import types

    name = spark_type.strip().lower()
    if name.startswith("decimal(") and name.endswith(")"):
        precision, scale = (int(x) for x in name[8:-1].split(","))
        return types.DecimalType(precision, scale)
    if name not in _PRIMITIVES:
        raise ValueError(f"unsupported column type {spark_type!r}; use one of {sorted(_PRIMITIVES)} or decimal(p,s)")
    return getattr(types, _PRIMITIVES[name])()


def ensure_table(identifier: str, columns: dict[str, str], partition_column: str) -> Table:
    """Load the table, creating it (and its namespace) from the contract's columns if absent."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import NestedField

    catalog = get_catalog()
    namespace = identifier.rsplit(".", 1)[0]
    catalog.create_namespace_if_not_exists(namespace)
    fields = [
        NestedField(field_id=i, name=name, field_type=iceberg_type(kind), required=False)
        for i, (name, kind) in enumerate(columns.items(), start=1)
    ]
    source_id = next(f.field_id for f in fields if f.name == partition_column)
    spec = PartitionSpec(
        PartitionField(source_id=source_id, field_id=1000, transform=IdentityTransform(), name=partition_column)
    )
    return catalog.create_table_if_not_exists(identifier, schema=Schema(*fields), partition_spec=spec)


def load_table(identifier: str) -> Table:
    return get_catalog().load_table(identifier)


def _history(table: Table):
    """Snapshots of the current branch, newest first."""
    from pyiceberg.table.snapshots import ancestors_of

    return ancestors_of(table.current_snapshot(), table.metadata)


def find_publish(table: Table, token: str) -> int | None:
    """The snapshot id with which the run attempt `token` was published, if it was."""
    for snapshot in _history(table):
        if snapshot.summary is not None and snapshot.summary.get(RUN_TOKEN) == token:
            return snapshot.snapshot_id
    return None


def live_version(table: Table, partition: dt.date) -> PublishedVersion | None:
    """Which publish the live partition comes from: the newest publish of that partition."""
    day = partition.isoformat()
    for snapshot in _history(table):
        summary = snapshot.summary
        if summary is not None and summary.get(PARTITION) == day:
            return PublishedVersion(
                snapshot_id=snapshot.snapshot_id,
                run_id=summary.get(RUN_ID, ""),
                run_token=summary.get(RUN_TOKEN, ""),
                rows=int(summary.get(ROWS, "0")),
                checksum=summary.get(CHECKSUM, ""),
                code_version=summary.get(CODE_VERSION, ""),
                committed_at=dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC),
            )
    return None


def swap_partition(
    identifier: str,
    partition_column: str,
    partition: dt.date,
    files: list[str],
    properties: dict[str, str],
) -> int:
    """Atomically replace one partition's files with `files`; return the new snapshot id.

    One catalog commit (delete by partition + add_files), so it is metadata-only. If
    another commit lands first, the table is reloaded and the swap retried, unless that
    commit changed this same partition: then the caller's view is stale and it fails.
    """
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.expressions import EqualTo

    table = load_table(identifier)
    base = live_version(table, partition)
    for attempt in range(COMMIT_RETRIES):
        try:
            with table.transaction() as tx, warnings.catch_warnings():
                # A first publish of a partition has nothing to delete; pyiceberg warns.
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                tx.delete(EqualTo(partition_column, partition.isoformat()), snapshot_properties=properties)
                tx.add_files(files, snapshot_properties=properties, check_duplicate_files=False)
            break
        except CommitFailedException:
            table = load_table(identifier)
            now = live_version(table, partition)
            if (now and now.snapshot_id) != (base and base.snapshot_id):
                raise PublishConflictError(
                    f"{identifier} partition {partition} was published by run {now.run_id if now else '?'} "
                    "while this run was publishing; this run did not publish."
                ) from None
            time.sleep(0.05 * 2**attempt)
    else:
        raise PublishConflictError(f"{identifier}: commit kept conflicting after {COMMIT_RETRIES} tries")
    snapshot = load_table(identifier).current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def partition_files(table: Table, partition_column: str, partition: dt.date) -> list[str]:
    """The live data files of one partition (for engines that read Parquet, not Iceberg)."""
    from pyiceberg.expressions import EqualTo

    scan = table.scan(row_filter=EqualTo(partition_column, partition.isoformat()))
    return sorted(task.file.file_path for task in scan.plan_files())


def partitions_overview(table: Table) -> list[dict[str, Any]]:
    """One row per live partition: rows, files and the run whose publish is live."""
    rows = []
    for record in table.inspect.partitions().to_pylist():
        day = next(iter(record["partition"].values()))
        version = live_version(table, day) if isinstance(day, dt.date) else None
        rows.append(
            {
                "partition": str(day),
                "rows": record["record_count"],
                "files": record["file_count"],
                "snapshot_id": version.snapshot_id if version else record.get("last_updated_snapshot_id"),
                "run_id": version.run_id if version else "",
                "checksum": version.checksum if version else "",
            }
        )
    return sorted(rows, key=lambda r: r["partition"])
