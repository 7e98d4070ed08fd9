"""What a pipeline's SQL reads: each source becomes a temporary view bound to the partition.

Paths are built from the validated partition date only, never from free text.

Nothing read is dropped without a trace: a landed record the run cannot use (a line
that does not parse, a value that does not fit its declared type, text that is not
UTF-8, an event time outside the folder's landing window) is a *reject*. `take_in`
counts rejects by reason; the run keeps them in quarantine and records them in the
ledger, and fails when they exceed the source's `max_rejected_share`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    """Raw files landed per day under `<landing>/<dataset>/dt=<day>/`.

    Records can land late: the run for day D also reads the folders of the next
    `late_days` days and the SQL keeps the records that belong to D.
    """

    dataset: str
    schema: str  # Spark DDL, e.g. "order_id STRING, amount DECIMAL(12,2)"; fields not declared are not read
    format: str = "json"  # or "csv" (with a header row that must name the declared columns)
    late_days: int = 1
    event_time: str | None = None  # a record in folder dt=F must have this time's day in [F - late_days, F]
    max_rejected_share: float = 0.0  # rejects tolerated in the partition's own folder (0.01 = 1%)

    @property
    def view(self) -> str:
        return f"landed_{self.dataset}"

    def location(self) -> str:
        """Where this dataset lands (what lineage names; never a single day's folder)."""
        return (load_settings().landing_dir / self.dataset).as_uri()

    def folders(self, partition: dt.date) -> list[str]:
        root = load_settings().landing_dir / self.dataset
        days = (partition + dt.timedelta(days=n) for n in range(self.late_days + 1))
        return [str(root / f"dt={day.isoformat()}") for day in days]

    def arrival_pattern(self, partition: dt.date) -> str:
        """A glob that matches once the partition's own folder holds a data file (names
        starting with `_` or `.`, such as markers and checksums, are not data; Spark skips them)."""
        return str(load_settings().landing_dir / self.dataset / f"dt={partition.isoformat()}" / "[!_.]*")

    def read(self, spark: SparkSession, partition: dt.date) -> DataFrame:
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
        landed_on = F.to_date(F.regexp_extract(F.col("_metadata.file_path"), r"/dt=(\d{4}-\d{2}-\d{2})/", 1))
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
            day = F.to_date(F.col(self.event_time))
            reason = reason.when(day.isNull(), F.lit(f"no {self.event_time}")).when(
                (day > landed_on) | (day < F.date_sub(landed_on, self.late_days)),
                F.lit(f"{self.event_time} outside the folder's landing window"),
            )
            # A usable record in this day's folder that happened on an earlier day: late data
            # for that day's partition, which was published without it (see `Intake.late`).
            late_for = F.when(reason.isNull() & (landed_on == F.lit(partition)) & (day < landed_on), day.cast("string"))
        return frame.select(
            *declared,
            reason.alias(REJECT),
            (landed_on == F.lit(partition)).alias(OWN),
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

    def read(self, spark: SparkSession, partition: dt.date) -> DataFrame:
        from wap import tables

        files = tables.partition_files(tables.load_table(self.table), self.partition_column, partition)
        if not files:
            raise SourceMissingError(
                f"{self.table} has no published partition {self.partition_column}={partition}; run its pipeline first"
            )
        return spark.read.parquet(*files)


Source = LandedFiles | PublishedTable


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


def take_in(spark: SparkSession, source: Source, partition: dt.date) -> tuple[DataFrame, DataFrame | None, Intake]:
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
