"""What a pipeline's SQL reads: each source becomes a temporary view bound to the partition.

Paths and queries are built from the validated partition only, never from free text.

Nothing read is dropped without a trace: a landed record the run cannot use (a line
that does not parse, a value that does not fit its declared type, text that is not
UTF-8, an event time outside the folder's landing window) is a *reject*. `take_in`
counts rejects by reason; the run keeps them in quarantine and records them in the
ledger, and fails when they exceed the source's `max_rejected_share`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wap.partition import Partition, grain_of, key_of
from wap.settings import load_settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class SourceMissingError(RuntimeError):
    """An upstream input the partition needs is not there."""


class BadSourceError(ValueError):
    """A landed file the pipeline cannot read at all (e.g. a CSV header that is not the declared one)."""


# Columns `LandedFiles.read` adds to the declared ones.
REJECT, OWN, FILE, RECORD, LATE = "_reject", "_own", "_file", "_record", "_late_for"
_CORRUPT = "_corrupt_record"
SAMPLE_REJECTS = 5


@dataclass(frozen=True)
class LandedFiles:
    """Raw files landed per partition under `<landing>/<dataset>/dt=<key>/`, where the key is
    the pipeline's partition key: `dt=2024-01-31` (daily) or `dt=2024-01-31T05` (hourly).

    Records can land late: the run for partition P also reads the next `late_folders`
    folders and the SQL keeps the records that belong to P.
    """

    dataset: str
    schema: str  # Spark DDL, e.g. "order_id STRING, amount DECIMAL(12,2)"; fields not declared are not read
    format: str = "json"  # or "csv" (with a header row that must name the declared columns)
    late_folders: int = 1
    event_time: str | None = None  # a record in folder F must have this time in [F - late_folders, end of F)
    max_rejected_share: float = 0.0  # rejects tolerated in the partition's own folder (0.01 = 1%)

    @property
    def view(self) -> str:
        return f"landed_{self.dataset}"

    def location(self) -> str:
        """Where this dataset lands (what lineage names; never a single day's folder)."""
        return (load_settings().landing_dir / self.dataset).as_uri()

    def folders(self, partition: Partition) -> list[str]:
        root = load_settings().landing_dir / self.dataset
        grain = grain_of(partition)
        return [str(root / f"dt={grain.key(grain.next(partition, n))}") for n in range(self.late_folders + 1)]

    def arrival_pattern(self, partition: Partition) -> str:
        """A glob that matches once the partition's own folder holds a data file (names
        starting with `_` or `.`, such as markers and checksums, are not data; Spark skips them)."""
        return str(load_settings().landing_dir / self.dataset / f"dt={key_of(partition)}" / "[!_.]*")

    def read(self, spark: SparkSession, partition: Partition) -> DataFrame:
        """Every record of the partition's folders: the declared columns, plus `_reject` (why
        the record cannot be used, or null), `_own` (it landed in the partition's own
        folder), `_file` and `_record` (the raw text of a record that did not parse)."""
        from functools import reduce
        from operator import and_, or_
        from pathlib import Path

        from pyspark.sql import functions as F

        present = [folder for folder in self.folders(partition) if Path(folder).is_dir()]
        if not present:
            return spark.createDataFrame(
                [], f"{self.schema}, {REJECT} STRING, {OWN} BOOLEAN, {FILE} STRING, {RECORD} STRING, {LATE} STRING"
            )
        reader = (
            spark.read.schema(f"{self.schema}, {_CORRUPT} STRING")
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", _CORRUPT)
        )
        if self.format == "csv":
            # Check the header against the declared names instead of trusting column order.
            reader = reader.option("header", "true").option("enforceSchema", "false")
        frame = reader.format(self.format).load(present)
        declared = [c for c in frame.columns if c != _CORRUPT]
        grain = grain_of(partition)
        # Keys compare as text: ISO keys of one grain sort as their times do.
        own_key = F.lit(grain.key(partition))
        landed_on = F.regexp_extract(F.col("_metadata.file_path"), r"/dt=(\d{4}-\d{2}-\d{2}(?:T\d{2})?)/", 1)
        texts = [F.col(_CORRUPT)] + [
            F.col(f.name) for f in frame.schema.fields if f.name != _CORRUPT and f.dataType.typeName() == "string"
        ]
        # First matching reason wins. Text that is not UTF-8 is kept as invalid bytes (JSON)
        # or decoded to U+FFFD (CSV); Spark sets the corrupt-record column for a line that does not parse and
        # for a value that does not fit its type (keeping the fields that do).
        reason = (
            F.when(
                reduce(
                    or_, [F.coalesce(~F.is_valid_utf8(c) | (F.instr(c, "\ufffd") > 0), F.lit(False)) for c in texts]
                ),
                "text is not UTF-8",
            )
            .when(
                F.col(_CORRUPT).isNotNull() & reduce(and_, [F.col(c).isNull() for c in declared]), "unparseable record"
            )
            .when(F.col(_CORRUPT).isNotNull(), "malformed record: a field missing or not of its declared type")
        )
        late_for = F.lit(None).cast("string")
        if self.event_time:
            happened_in = F.date_format(F.col(self.event_time), grain.spark_key_format)  # its partition's key
            earliest = F.date_format(
                F.to_timestamp(landed_on, grain.spark_key_format)
                - F.expr(f"INTERVAL {self.late_folders} {grain.unit}"),
                grain.spark_key_format,
            )
            reason = reason.when(happened_in.isNull(), F.lit(f"no {self.event_time}")).when(
                (happened_in > landed_on) | (happened_in < earliest),
                F.lit(f"{self.event_time} outside the folder's landing window"),
            )
            # A usable record in this partition's folder that happened in an earlier partition:
            # late data for that partition, which was published without it (see `Intake.late`).
            late_for = F.when(reason.isNull() & (landed_on == own_key) & (happened_in < landed_on), happened_in)
        return frame.select(
            *declared,
            reason.alias(REJECT),
            (landed_on == own_key).alias(OWN),
            F.col("_metadata.file_path").alias(FILE),
            F.col(_CORRUPT).alias(RECORD),
            late_for.alias(LATE),
        )


@dataclass(frozen=True)
class PublishedTable:
    """The live partition of another pipeline's table (read through its Iceberg metadata)."""

    table: str
    partition_column: str

    @property
    def view(self) -> str:
        return self.table.replace(".", "_")

    def location(self) -> str:
        from wap import tables

        return tables.load_table(self.table).location()

    def read(self, spark: SparkSession, partition: Partition) -> DataFrame:
        from wap import tables

        files = tables.partition_files(tables.load_table(self.table), self.partition_column, partition)
        if not files:
            raise SourceMissingError(
                f"{self.table} has no published partition {self.partition_column}={partition}; run its pipeline first"
            )
        return spark.read.parquet(*files)


@dataclass(frozen=True)
class DatabaseTable:
    """An incremental extract: the rows of a database table whose `updated_at` falls in the
    partition's window, read once through Spark's JDBC reader.

    The connection (host, port, database, login, password) is the Airflow connection
    `conn_id`, e.g. `AIRFLOW_CONN_SHOP_DB=postgresql://user:pass@host:5432/shop`; the JDBC
    driver jar must be on Spark's classpath (`WAP_JDBC_JARS`, installed by `make`).
    A row committed with an `updated_at` inside a window after that window was extracted
    is missed until it changes again: schedule runs late enough after the window closes
    for the source's longest transaction.
    """

    conn_id: str
    table: str  # "schema.table"
    updated_at: str  # the column that says when a row last changed
    fetch_size: int = 10_000

    def __post_init__(self) -> None:
        # Names go into the query text: only plain identifiers.
        for what, name in (("table", self.table), ("updated_at", self.updated_at)):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", name):
                raise ValueError(f"DatabaseTable {what} must be a plain identifier (schema.table), got {name!r}")

    @property
    def view(self) -> str:
        return f"db_{self.table.rsplit('.', 1)[-1]}"

    def _connection(self) -> Any:
        from airflow.sdk import Connection

        return Connection.get(self.conn_id)

    def location(self) -> str:
        """OpenLineage's name for the table: `postgres://host:port` + `database.schema.table`."""
        conn = self._connection()
        return f"postgres://{conn.host}:{conn.port or 5432}/{conn.schema}.{self.table}"

    def query(self, partition: Partition) -> str:
        start, end = grain_of(partition).window(partition)
        # The bounds are formatted from a validated partition, never taken from input text.
        bound = "TIMESTAMP WITH TIME ZONE '{}'".format
        return (
            f"SELECT * FROM {self.table} WHERE {self.updated_at} >= {bound(start.isoformat())} "
            f"AND {self.updated_at} < {bound(end.isoformat())}"
        )

    def read(self, spark: SparkSession, partition: Partition) -> DataFrame:
        conn = self._connection()
        frame = (
            spark.read.format("jdbc")
            .option("url", f"jdbc:postgresql://{conn.host}:{conn.port or 5432}/{conn.schema}")
            .option("driver", "org.postgresql.Driver")
            .option("user", conn.login or "")
            .option("password", conn.password or "")
            .option("query", self.query(partition))
            .option("fetchsize", self.fetch_size)
            .load()
        )
        # Read the database once: the count and the transform see the same rows, even if
        # the source changes meanwhile.
        try:
            return frame.localCheckpoint(eager=True)
        except Exception as exc:
            if "No suitable driver" in str(exc) or "ClassNotFoundException" in str(exc):
                raise SourceMissingError(
                    f"{self.view}: Spark has no PostgreSQL JDBC driver; `make` installs it into .venv/jars "
                    "(or set WAP_JDBC_JARS to the driver's jar)"
                ) from exc
            raise


Source = LandedFiles | PublishedTable | DatabaseTable


@dataclass(frozen=True)
class Intake:
    """What one source gave a run: records read, and the partition's rejects by reason."""

    source: str
    records: int  # every record read (the partition's folder and its late folders)
    own_records: int  # records in the partition's own folder, which this run answers for
    rejected: dict[str, int]  # reason -> count, in the partition's own folder
    sample: list[dict[str, str]]  # a few rejects: file, reason, record
    max_rejected_share: float = 0.0
    late: dict[str, int] = field(default_factory=dict)  # earlier day -> its records in this day's folder

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def share(self) -> float:
        return self.rejected_total / self.own_records if self.own_records else 0.0

    @property
    def too_many(self) -> bool:
        return self.rejected_total > 0 and self.share > self.max_rejected_share


def take_in(spark: SparkSession, source: Source, partition: Partition) -> tuple[DataFrame, DataFrame | None, Intake]:
    """Read a source for the partition: (usable records, rejects or None, the accounting).

    One pass counts records and rejects; a second, only when there are rejects, takes a
    sample. Rejects from later folders (read only for their late records) are left to
    their own partition's run, which answers for them.
    """
    from pyspark.sql import functions as F

    frame = source.read(spark, partition)
    if REJECT not in frame.columns:
        records = frame.count()
        return frame, None, Intake(source.view, records, records, {}, [])
    try:
        counts = frame.groupBy(REJECT, OWN, LATE).count().collect()
    except Exception as exc:
        raise _unreadable(exc, source) from exc
    rejects = frame.where(F.col(OWN) & F.col(REJECT).isNotNull())
    rejected = {}
    late: dict[str, int] = {}
    for reason, own, late_for, count in counts:
        if own and reason is not None:
            rejected[reason] = rejected.get(reason, 0) + count
        if late_for is not None:
            late[late_for] = count
    sample = []
    if rejected:
        shown = F.coalesce(F.col(RECORD), F.to_json(F.struct(*[c for c in frame.columns if not c.startswith("_")])))
        sample = [
            {"file": r[FILE], "reason": r[REJECT], "record": r["record"][:300]}
            for r in rejects.select(FILE, REJECT, shown.alias("record")).limit(SAMPLE_REJECTS).collect()
        ]
    intake = Intake(
        source=source.view,
        records=sum(n for *_, n in counts),
        own_records=sum(n for _, own, _, n in counts if own),
        rejected=rejected,
        sample=sample,
        max_rejected_share=source.max_rejected_share,
        late=late,
    )
    usable = frame.where(F.col(REJECT).isNull()).drop(REJECT, OWN, FILE, RECORD, LATE)
    return usable, (rejects if rejected else None), intake


def _unreadable(exc: Exception, source: LandedFiles) -> Exception:
    """A clear error for a landed file Spark refuses outright (the rest of its message is a JVM stack)."""
    import re

    text = str(exc)
    found = re.search(r"((?:CSV header|Number of column in CSV header).*?CSV file: \S+)", text, re.DOTALL)
    if found:
        detail = " ".join(found.group(1).split())
        return BadSourceError(f"{source.dataset}: a landed file does not have the declared columns ({detail})")
    return exc
