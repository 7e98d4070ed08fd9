"""Iceberg tables through pyiceberg: the live tables, and the one atomic partition swap.

Publishing is one catalog commit that deletes the partition's current files and adds the
staged files by reference: readers see the old partition or the new one, never a mix,
and no data is copied. The commit's snapshot summary carries the run that made it, so
the table itself says what is published (`wap.*` properties below).

`ensure_table` keeps each table's schema at its contract's version (the table property
`wap.contract-version`): a schema change must come with a version bump, which evolves the
table in one commit, and only in ways old data files can still be read (see its docstring).

This module is the only one that knows the table format.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from wap.errors import ContractVersionError, PartitionChangedError, PublishConflictError
from wap.partition import HOURLY, Partition, key_of
from wap.settings import Settings, load_settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table

    from wap.contract import Contract

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
# A range run's commit publishes several partitions: its summary holds each one's run token,
# rows and checksum as JSON, {key: [token, rows, checksum]} (`PARTITION` is then the range).
PARTITIONS = "wap.partitions"
# Publish summary key: the time zone whose days the table's daily partitions are (`daily_in`);
# a commit without it (an older one) is of UTC days. A consumer of another zone is refused.
PARTITION_ZONE = "wap.partition-zone"
# Table property (and publish summary key): the contract version the table's schema matches.
CONTRACT_VERSION = "wap.contract-version"
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


# `swap_partition(replaces=ANY_VERSION)`: replace whatever is live when the swap starts.
ANY_VERSION = object()


@dataclass(frozen=True)
class SchemaChange:
    """One difference between a table's schema and a contract: `old`/`new` are Iceberg types."""

    column: str
    old: Any = None  # None: the contract adds the column
    new: Any = None  # None: the contract removes the column

    def __str__(self) -> str:
        if self.old is None:
            return f"added column {self.column} ({type_name(self.new)})"
        if self.new is None:
            return f"removed column {self.column}"
        return f"column {self.column}: {type_name(self.old)} -> {type_name(self.new)}"


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


def get_catalog(settings: Settings | None = None) -> Catalog:
    """The catalog of `settings` (default: the environment's); one per configuration per process."""
    settings = settings or load_settings()
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


def type_name(iceberg: Any) -> str:
    """The contract's (Spark SQL) name for an Iceberg type: the inverse of `iceberg_type`."""
    from pyiceberg import types

    if isinstance(iceberg, types.DecimalType):
        return f"decimal({iceberg.precision},{iceberg.scale})"
    names = {cls: name for name, cls in _PRIMITIVES.items()}
    return names.get(type(iceberg).__name__, str(iceberg))


def schema_changes(schema: Schema, contract: Contract) -> list[SchemaChange]:
    """How the contract's columns differ from the table's schema (top-level columns, by name)."""
    current = {f.name: f.field_type for f in schema.fields}
    wanted = {name: iceberg_type(kind) for name, kind in contract.columns.items()}
    changes = [SchemaChange(name, new=kind) for name, kind in wanted.items() if name not in current]
    changes += [SchemaChange(name, old=kind) for name, kind in current.items() if name not in wanted]
    changes += [
        SchemaChange(name, old=current[name], new=kind)
        for name, kind in wanted.items()
        if name in current and current[name] != kind
    ]
    return changes


def _widens(old: Any, new: Any) -> bool:
    """Whether Iceberg can read `old` data as `new` (int->bigint, float->double, wider decimal)."""
    from pyiceberg import types

    if isinstance(old, types.DecimalType) and isinstance(new, types.DecimalType):
        return new.precision >= old.precision and new.scale == old.scale
    return (type(old), type(new)) in {
        (types.IntegerType, types.LongType),
        (types.FloatType, types.DoubleType),
    }


def ensure_table(identifier: str, contract: Contract, catalog: Catalog | None = None) -> Table:
    """The table, created from the contract if absent, its schema matching the contract.

    The table property `wap.contract-version` says which contract version its schema is.
    A contract with a higher version evolves the table (adds columns, removes columns,
    widens types) in one commit; any other mismatch raises `ContractVersionError` and
    leaves the table as it was: a schema change must come with a version bump, and code
    with an older contract than the table's (an old deployment or branch) must not run.
    """
    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

    catalog = catalog or get_catalog()
    for attempt in range(COMMIT_RETRIES):
        try:
            table = catalog.load_table(identifier)
        except NoSuchTableError:
            # Another process may create it first, from another contract: check it like any table.
            table = _create(catalog, identifier, contract)
        try:
            return _match_contract(identifier, table, contract)
        except CommitFailedException:
            # Another process changed the table meanwhile: check again against its new state.
            time.sleep(0.05 * 2**attempt)
    raise ContractVersionError(f"{identifier}: schema update kept conflicting after {COMMIT_RETRIES} tries")


def _create(catalog: Catalog, identifier: str, contract: Contract) -> Table:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import NestedField

    column = contract.partition_column
    if column is not None and column not in contract.columns:
        raise ContractVersionError(f"partition column {column!r} is not among the contract's columns")
    fields = [
        NestedField(field_id=i, name=name, field_type=iceberg_type(kind), required=False)
        for i, (name, kind) in enumerate(contract.columns.items(), start=1)
    ]
    # Identity on a date (daily) or on an hour-truncated timestamp (hourly): a staged file
    # holds one value, which `add_files` reads from its statistics. No column: a merged
    # table, one whole version per commit.
    spec = PartitionSpec()
    if column is not None:
        source_id = next(f.field_id for f in fields if f.name == column)
        spec = PartitionSpec(
            PartitionField(source_id=source_id, field_id=1000, transform=IdentityTransform(), name=column)
        )
    catalog.create_namespace_if_not_exists(identifier.rsplit(".", 1)[0])
    return catalog.create_table_if_not_exists(
        identifier, schema=Schema(*fields), partition_spec=spec, properties={CONTRACT_VERSION: str(contract.version)}
    )


def _match_contract(identifier: str, table: Table, contract: Contract) -> Table:
    """Check an existing table against the contract; evolve it if the contract is newer."""
    version = int(table.properties.get(CONTRACT_VERSION, "1"))
    schema = table.schema()
    changes = schema_changes(schema, contract)
    partitioned_by = {schema.find_column_name(f.source_id) for f in table.spec().fields}
    suite = f"expectations/{identifier}.json"
    if contract.version < version:
        listed = f" It differs from the table: {'; '.join(map(str, changes))}." if changes else ""
        raise ContractVersionError(
            f"{identifier}: this code's contract is version {contract.version}, older than the table's "
            f"version {version} (an old deployment or branch?).{listed} Deploy the current code, or, "
            f"to change the table on purpose, set meta.contract.version in {suite} above {version}."
        )
    if changes and contract.version == version:
        raise ContractVersionError(
            f"{identifier}: the contract in {suite} differs from the table's schema but keeps version {version}: "
            f"{'; '.join(map(str, changes))}. A schema change must be recorded: bump meta.contract.version "
            f"in {suite} to {version + 1} to evolve the table."
        )
    refused = _refusals(changes, partitioned_by, contract.partition_column)
    if refused:
        raise ContractVersionError(
            f"{identifier}: contract version {contract.version} in {suite} does not fit the table (version "
            f"{version}), which was left unchanged: {'; '.join(refused)}"
        )
    if contract.version == version:
        return table
    with table.transaction() as tx:
        if changes:
            with tx.update_schema() as update:
                for change in changes:
                    if change.old is None:
                        update.add_column(change.column, change.new, required=False)
                    elif change.new is None:
                        update.delete_column(change.column)
                    else:
                        update.update_column(change.column, field_type=change.new)
        tx.set_properties({CONTRACT_VERSION: str(contract.version)})
    return table  # the commit refreshed it


def _refusals(changes: list[SchemaChange], partitioned_by: set[str | None], partition_column: str | None) -> list[str]:
    """What a contract bump may not do to a table, in words (nothing: it may evolve it)."""
    refused = []
    if partitioned_by != ({partition_column} if partition_column else set()):
        table_column = ", ".join(sorted(map(str, partitioned_by))) or "nothing"
        refused.append(
            f"the table is partitioned by {table_column}, not {partition_column or 'nothing'}; "
            "the partition column cannot change: make a new table"
        )
    for change in changes:
        if change.new is None and change.column in partitioned_by:
            refused.append(f"column {change.column} is the partition column and cannot be removed")
        elif change.old is not None and change.new is not None and not _widens(change.old, change.new):
            refused.append(
                f"column {change.column} cannot change type from {type_name(change.old)} to {type_name(change.new)} "
                "(only int->bigint, float->double and a decimal's precision can widen); add a new column instead"
            )
    return refused


def load_table(identifier: str, catalog: Catalog | None = None) -> Table:
    """The table `identifier` of `catalog` (default: the environment's, `get_catalog`)."""
    return (catalog or get_catalog()).load_table(identifier)


def list_tables(catalog: Catalog | None = None) -> list[str]:
    """Every table of the catalog, as "namespace.table", sorted."""
    catalog = catalog or get_catalog()
    return sorted(".".join(ident) for ns in catalog.list_namespaces() for ident in catalog.list_tables(ns))


def history(table: Table, as_of: int | None = None):
    """Snapshots of the current branch (or from snapshot `as_of` back), newest first."""
    from pyiceberg.table.snapshots import ancestors_of

    start = table.current_snapshot() if as_of is None else table.snapshot_by_id(as_of)
    if as_of is not None and start is None:
        raise ValueError(f"{table.name()}: no snapshot {as_of} (expired, or another table's)")
    return ancestors_of(start, table.metadata)


def _published(summary: Any) -> list[tuple[str, str, int, str]]:
    """What a publish's snapshot summary says it published: (partition key, run token, rows,
    checksum) for its one partition, or for each partition of a range run's commit."""
    if summary is None or summary.get(PARTITION) is None:
        return []
    if (entries := summary.get(PARTITIONS)) is not None:
        return [(key, token, int(rows), checksum) for key, (token, rows, checksum) in json.loads(entries).items()]
    # Summary.get ignores a default
    return [
        (summary.get(PARTITION), summary.get(RUN_TOKEN) or "", int(summary.get(ROWS) or 0), summary.get(CHECKSUM) or "")
    ]


def partition_zone(table: Table) -> str | None:
    """The zone of the days the table's newest publish is of (None: never published)."""
    for snapshot in history(table) if table.current_snapshot() is not None else ():
        summary = snapshot.summary
        if summary is not None and summary.get(PARTITION) is not None:
            return summary.get(PARTITION_ZONE) or "UTC"  # Summary.get ignores a default
    return None


def range_summary(published: dict[str, tuple[str, int, str]]) -> dict[str, str]:
    """The summary entry of a commit that publishes several partitions: {key: (token, rows, checksum)}."""
    return {PARTITIONS: json.dumps({key: list(entry) for key, entry in sorted(published.items())})}


def find_publish(table: Table, token: str) -> int | None:
    """The snapshot id with which the run attempt `token` was published, if it was (a
    partition of a range run has a token of its own)."""
    for snapshot in history(table):
        summary = snapshot.summary
        if summary is None or summary.operation.value == "delete":
            continue
        if summary.get(RUN_TOKEN) == token or any(t == token for _, t, _, _ in _published(summary)):
            return snapshot.snapshot_id
    return None


def versions(table: Table, partition: Partition | None, as_of: int | None = None) -> Iterator[PublishedVersion]:
    """Every publish of one partition still in the table's history, newest first (lazily).

    `partition=None`: every publish of the table, whichever partition it was for (a merged
    table's versions: each publish replaces the whole table)."""
    key = None if partition is None else key_of(partition)
    for snapshot in history(table, as_of):
        summary = snapshot.summary
        # A swap commits two snapshots with the same summary: the delete, then the add.
        # Only the add holds the version (the delete's partition is empty).
        if summary is None or summary.operation.value == "delete":
            continue
        for published, token, rows, checksum in _published(summary):
            if key is not None and published != key:
                continue
            yield PublishedVersion(
                snapshot_id=snapshot.snapshot_id,
                run_id=summary.get(RUN_ID) or "",
                run_token=token,
                rows=rows,
                checksum=checksum,
                code_version=summary.get(CODE_VERSION) or "",
                committed_at=dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC),
            )
            break  # one version per publish (a merged table's range commit names each of its hours)


def live_version(table: Table, partition: Partition | None, as_of: int | None = None) -> PublishedVersion | None:
    """Which publish the live partition comes from (or came from, at snapshot `as_of`);
    `partition=None`: the table's latest publish (what a merged table is)."""
    return next(versions(table, partition, as_of), None)


def swap_partition(
    identifier: str,
    partition_column: str | None,
    partition: Partition,
    files: list[str],
    properties: dict[str, str],
    *,
    replaces: int | object | None = ANY_VERSION,
    catalog: Catalog | None = None,
) -> int:
    """Atomically replace one partition's files with `files`; return the new snapshot id.

    One catalog commit (delete by partition + add_files), so it is metadata-only.
    `replaces` is the snapshot id of the live version the caller means to replace (None:
    the partition had none). If the live partition is another version, before the commit
    or after a colliding one, `PartitionChangedError`: the caller's view is stale and it
    must not overwrite what another run published. A collision with a commit to another
    partition is retried here.

    `partition_column=None` (a merged table): `files` are the whole new table, and the
    version replaced is the table's latest publish, whichever partition it was for.
    """
    return swap_partitions(identifier, partition_column, {partition: (files, replaces)}, properties, catalog=catalog)


def swap_partitions(
    identifier: str,
    partition_column: str | None,
    changes: dict[Partition, tuple[list[str], int | object | None]],
    properties: dict[str, str],
    *,
    catalog: Catalog | None = None,
) -> int:
    """`swap_partition` for several partitions in one commit: `changes` maps each partition to
    (its files, the snapshot id it replaces). Readers see every partition's new files or none.
    The first partition found changed is `PartitionChangedError.partition`; nothing is committed."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    table = load_table(identifier, catalog)
    scope = {p: (p if partition_column else None) for p in changes}
    expected = {}
    for partition, (_, replaces) in changes.items():
        if replaces is ANY_VERSION:
            base = live_version(table, scope[partition])
            replaces = base.snapshot_id if base else None
        expected[partition] = replaces
    for attempt in range(COMMIT_RETRIES):
        for partition, replaces in expected.items():
            live = live_version(table, scope[partition])
            # A base whose snapshot has expired (table upkeep) while nothing newer was published
            # for the partition (none in the history) is still what is live.
            expired = isinstance(replaces, int) and live is None and table.snapshot_by_id(replaces) is None
            if (live and live.snapshot_id) != replaces and not expired:
                raise PartitionChangedError(
                    f"{identifier} partition {partition} was published by run {live.run_id if live else '?'} "
                    f"(snapshot {live.snapshot_id if live else '-'}) after this run read it; this run did not publish.",
                    live,
                    partition,
                )
        try:
            with table.transaction() as tx, warnings.catch_warnings():
                # A first publish of a partition has nothing to delete; pyiceberg warns.
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                tx.delete(_selecting(partition_column, *changes), snapshot_properties=properties)
                files = [f for names, _ in changes.values() for f in names]
                tx.add_files(files, snapshot_properties=properties, check_duplicate_files=False)
            break
        # Another commit landed first. pyiceberg re-applies ours on top when it can, and says
        # ValidationException when that commit added files to this partition.
        except (CommitFailedException, ValidationException):
            table = load_table(identifier, catalog)
            time.sleep(0.05 * 2**attempt)
    else:
        raise PublishConflictError(f"{identifier}: commit kept conflicting after {COMMIT_RETRIES} tries")
    snapshot = load_table(identifier, catalog).current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def _selecting(partition_column: str | None, partition: Partition | None, *more: Partition) -> Any:
    """The row filter of one partition, or of several (every row of an unpartitioned table)."""
    from pyiceberg.expressions import AlwaysTrue, EqualTo, In

    # A date or a UTC datetime: pyiceberg reads its ISO text as the column's literal.
    if partition_column is None or partition is None:
        return AlwaysTrue()
    if more:
        return In(partition_column, [p.isoformat() for p in (partition, *more)])  # type: ignore[call-arg,arg-type]
    return EqualTo(partition_column, partition.isoformat())  # type: ignore[call-arg,arg-type]  # pyiceberg binds a name


def partition_files(
    table: Table, partition_column: str | None, partition: Partition | None, as_of: int | None = None
) -> list[str]:
    """The live data files of one partition (or its files at snapshot `as_of`); every file when unpartitioned."""
    scan = table.scan(row_filter=_selecting(partition_column, partition), snapshot_id=as_of)
    return sorted(task.file.file_path for task in scan.plan_files())


def files_by_partition(table: Table, partition_column: str, first: Partition, last: Partition) -> dict[str, list[str]]:
    """The live data files of each partition from `first` to `last`, by partition key (a
    partition without files is not a key)."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    if first == last:
        files = partition_files(table, partition_column, first)
        return {key_of(first): files} if files else {}
    bounds = And(
        GreaterThanOrEqual(partition_column, first.isoformat()),  # type: ignore[call-arg,arg-type]
        LessThanOrEqual(partition_column, last.isoformat()),  # type: ignore[call-arg,arg-type]
    )
    # A data file's partition holds Iceberg's stored form: days (a date) or microseconds (a
    # timestamp) since the epoch.
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    found: dict[str, list[str]] = {}
    for task in table.scan(row_filter=bounds).plan_files():
        stored = task.file.partition[0]
        if isinstance(stored, int):
            stored = (
                (epoch + dt.timedelta(days=stored)).date()
                if isinstance(first, dt.date) and not isinstance(first, dt.datetime)
                else epoch + dt.timedelta(microseconds=stored)
            )
        value = _partition_value(stored)
        if value is not None:
            found.setdefault(key_of(value), []).append(task.file.file_path)
    return {key: sorted(names) for key, names in sorted(found.items())}


def partitions_overview(table: Table) -> list[dict[str, Any]]:
    """One row per live partition: rows, files and the run whose publish is live."""
    rows = []
    for record in table.inspect.partitions().to_pylist():
        value = next(iter((record.get("partition") or {}).values()), None)  # none: an unpartitioned table
        day = _partition_value(value)
        # An unpartitioned (merged) table has one "partition": the whole table, its latest publish.
        version = live_version(table, day)
        rows.append(
            {
                "partition": key_of(day) if day is not None else "(whole table)",
                "rows": record["record_count"],
                "files": record["file_count"],
                "snapshot_id": version.snapshot_id if version else record.get("last_updated_snapshot_id"),
                "run_id": version.run_id if version else "",
                "checksum": version.checksum if version else "",
            }
        )
    return sorted(rows, key=lambda r: r["partition"])


def recent_row_counts(table: Table, partition_column: str, before: Partition, limit: int = 7) -> list[int]:
    """Row counts of the live partitions just before `before`, newest first (for the volume check)."""
    counts = live_row_counts(table, partition_column)
    return [rows for _, rows in sorted(((k, n) for k, n in counts.items() if k < key_of(before)), reverse=True)[:limit]]


def live_row_counts(table: Table, partition_column: str) -> dict[str, int]:
    """The row count of every live partition, by key."""
    if table.current_snapshot() is None:
        return {}
    counts = {}
    for record in table.inspect.partitions().to_pylist():
        day = _partition_value(record["partition"].get(partition_column))
        if day is not None:
            counts[key_of(day)] = record["record_count"]
    return counts


def _partition_value(value: Any) -> Partition | None:
    """A partition value as Iceberg metadata gives it (a date, or a possibly naive UTC datetime), normalised."""
    if isinstance(value, dt.datetime):
        return HOURLY.floor(value)
    return value if isinstance(value, dt.date) else None
