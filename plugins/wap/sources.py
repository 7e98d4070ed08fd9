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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial, reduce
from operator import and_, or_
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wap.errors import BadSourceError, DataError, SetupError, SourceMissingError
from wap.partition import Grain, Partition, PartitionRange, grain_of, key_of
from wap.settings import load_settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


# Columns `LandedFiles.read` adds to the declared ones.
REJECT, OWN, FILE, RECORD, LATE, LANDED = "_reject", "_own", "_file", "_record", "_late_for", "_landed"
_CORRUPT = "_corrupt_record"
# The reader's own columns, dropped once the reason is known: the JSON checks, the event's partition.
_SUSPECT, _KIND, _HAPPENED = "_suspect", "_kind", "_happened"
SAMPLE_REJECTS = 5
# A line holding several JSON values, or an array, hides an unknown number of records: it
# blocks the run whatever the source's tolerated share (the share counts lines).
SEVERAL, NOT_OBJECT = "more than one JSON value on the line (one record per line)", "not a JSON object"
HIDES_RECORDS = (SEVERAL, NOT_OBJECT)

# What the first bytes of a file say it is. Spark's text readers decompress only by the
# file's suffix, so a compressed file with another name would be read as garbage text.
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\xff\x06\x00\x00sNaPpY", "snappy"),
    (b"PK\x03\x04", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"PAR1", "Parquet"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
)
_SUFFIX_CODEC = {".gz": "gzip", ".bz2": "bzip2"}  # what Spark decompresses, by suffix
_PEEK = 4096


def _is_marker(name: str) -> bool:
    """Names starting with `_` or `.` (`_SUCCESS`, `.part`, checksums) are not data: never read."""
    return name.startswith(("_", "."))


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def landed_files(root: Path, folders: list[Path], check: Callable[[Path], None] | None = None) -> list[Path]:
    """The data files of a partition's landing folders, checked before anything reads them.

    `root` is the dataset's landing folder (`<landing>/<dataset>`), the boundary: a link that
    leads outside it is refused, and nothing of its target is read. A partition folder holds
    files only: a subfolder is refused (its files would otherwise be skipped in silence, or
    break Spark's partition discovery); so are files that are not regular files (a FIFO
    would block the reader), compressed files whose name does not say so, compressions Spark
    cannot read, and files that are not UTF-8 text (`check`: another test of each file's
    content, e.g. a Parquet file's schema). Markers (`_`/`.` names) are skipped.
    """
    boundary = root.resolve()
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        if not _within(folder.resolve(), boundary):
            raise BadSourceError(f"{folder} is a link out of the landing folder {root}: it is not read")
        for entry in sorted(folder.iterdir()):
            if _is_marker(entry.name):
                continue
            try:
                real = entry.resolve(strict=True)
            except (OSError, RuntimeError):  # RuntimeError: a loop of links (Python 3.11)
                raise BadSourceError(
                    f"{entry} is a link that leads nowhere (missing, or a loop): it is not read"
                ) from None
            if entry.is_symlink() and not _within(real, boundary):
                raise BadSourceError(
                    f"{entry} is a link to a place outside the landing folder {root}: links out of the landing "
                    "folder are not read. Land the file itself in the partition's folder."
                )
            if real.is_dir():
                raise BadSourceError(
                    f"{folder} holds a folder {entry.name!r}: landed files must lie directly in the partition's "
                    f"folder (subfolders are not read). Move its files up into {folder.name}/, or out of the landing "
                    "folder if they are not this partition's data."
                )
            if not real.is_file():
                raise BadSourceError(f"{entry} is not a regular file (a pipe, socket or device): it is not read")
            if ":" in entry.name:  # Hadoop's paths cannot name it: Spark would fail on it at every try
                raise BadSourceError(f"{entry}: a landed file's name cannot hold ':'; rename it")
            (check or _check_content)(entry)
            found.append(entry)
    return found


def _literal(path: Path) -> str:
    """A path for Spark's readers, which expand glob patterns: a file named `*.json` would read
    every file of its folder (each record twice), one named `a{1}.json` none."""
    return re.sub(r"([\\{}\[\]*?])", r"\\\1", str(path))


def _check_content(path: Path) -> None:
    """Refuse a file whose bytes Spark would read as something it is not."""
    with path.open("rb") as handle:
        head = handle.read(_PEEK)
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    named = _SUFFIX_CODEC.get(path.suffix.lower())
    if named is not None:
        if head and kind != named:
            raise BadSourceError(f"{path} is named {path.suffix} but is not {named}-compressed: rename or re-land it")
        return
    if kind is not None:
        if kind in _SUFFIX_CODEC.values():
            fix = f"name it {path.name}{next(s for s, c in _SUFFIX_CODEC.items() if c == kind)}"
        else:
            fix = "land it uncompressed, or as .gz or .bz2, as JSON lines or CSV text in UTF-8"
        raise BadSourceError(f"{path} is {kind}, not the UTF-8 text its name says: {fix}")
    if b"\x00" in head:
        raise BadSourceError(f"{path} holds NUL bytes: binary, or UTF-16/32 text, not UTF-8 text; re-land it as UTF-8")


def _json_type_checks(fields: list[Any], value: Any) -> tuple[list[Any], Any, list[tuple[Any, str]]]:
    """Each declared field's value from a JSON line, which lines to check for JSON kinds, and
    the reasons a value cannot be converted.

    Spark's JSON parser turns any JSON value into text for a STRING field, truncates a
    timestamp to a DATE, reads a number as a TIMESTAMP (epoch seconds), rounds a DECIMAL,
    takes a string of digits for a DECIMAL or DOUBLE, and reads only the first of several
    objects on one line. So fields are parsed with types that keep what was written (times
    as text, decimals at full scale) and converted here, and a cheap test picks the lines
    that may hold a value of another JSON kind; only those are parsed again as VARIANT
    (exact JSON kinds) to decide.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, DecimalType, TimestampNTZType, TimestampType

    reasons: list[tuple[Any, str]] = []
    columns = []
    # Which lines are parsed again for their kinds: those whose shape or values may hide one
    # (a line not starting with an object, text after a closing brace, an escaped name).
    # The regex only where it can hold: a line that starts with `{` and whose first `}` is its
    # last character has nothing before its object or after a brace (the regex on every line
    # was a third of the reader's time). Byte lengths and `contains`, not `instr`: it counts
    # characters at each byte it tries.
    before_brace = F.substring_index(value, "}", 1)  # the text before the first `}`: all of it if none
    plain = F.startswith(value, F.lit("{")) & (F.octet_length(before_brace) == F.octet_length(value) - 1)
    shaped = F.when(~plain, F.regexp_like(value, F.lit(r"^\s*[^\s{]|\}\s*[^\s,\}\]]|\}\s*,\s*\{")))
    suspect = F.coalesce(shaped, F.lit(False)) | F.contains(value, F.lit("\\u"))
    for f in fields:
        raw, kind = F.col(f"_parsed.{f.name}"), None
        if isinstance(f.dataType, (TimestampType, TimestampNTZType)):
            converted = F.expr(f"try_cast(`_parsed`.`{f.name}` AS {f.dataType.simpleString()})")
            reasons.append((raw.isNotNull() & converted.isNull(), f"{f.name}: not a {f.dataType.simpleString()}"))
            suspect = suspect | F.regexp_like(raw, F.lit(r"^-?[0-9.]+$|^(true|false)$|^[\[{]"))
        elif isinstance(f.dataType, DateType):
            converted = F.expr(f"try_cast(`_parsed`.`{f.name}` AS DATE)")
            shaped = F.regexp_like(raw, F.lit(r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$"))
            reasons.append((raw.isNotNull() & (converted.isNull() | ~shaped), f"{f.name}: not a date (YYYY-MM-DD)"))
        elif isinstance(f.dataType, DecimalType):
            converted = F.expr(f"try_cast(`_parsed`.`{f.name}` AS {f.dataType.simpleString()})")
            rounded_or_too_big = raw.isNotNull() & (converted.isNull() | (converted != raw))
            reasons.append(
                (rounded_or_too_big, f"{f.name}: does not fit {f.dataType.simpleString()} (rounded or out of range)")
            )
            kind = r'"\s*:\s*"'  # a string given for a number
        else:
            converted = raw
            if f.dataType.typeName() == "string":
                # What another kind looks like as text: an object, an array, a number, true or false.
                looks = F.substring(raw, 1, 1).isin(*"{[-0123456789") | raw.isin("true", "false")
                suspect = suspect | F.coalesce(looks, F.lit(False))
            elif f.dataType.typeName() in ("double", "float"):
                kind = r'"\s*:\s*"'
        if kind is not None:
            suspect = suspect | F.regexp_like(value, F.lit('"' + re.escape(f.name) + kind))
        columns.append(converted.alias(f.name))
    return columns, suspect, reasons


# The JSON kinds (VARIANT type names) each declared type takes; null fits every type.
_KINDS = {
    "string": r"STRING",
    "boolean": r"BOOLEAN",
    "integral": r"(TINYINT|SMALLINT|INT|BIGINT|DECIMAL\(\d+,0\))",
    "fractional": r"(TINYINT|SMALLINT|INT|BIGINT|DECIMAL\(\d+,\d+\)|FLOAT|DOUBLE)",
    "time": r"STRING",
    "array": r"ARRAY<.*>",
    "object": r"OBJECT<.*>",
}


def _kind_class(data_type: Any) -> str:
    name = data_type.typeName()
    if name in ("byte", "short", "integer", "long"):
        return "integral"
    if name in ("float", "double", "decimal"):
        return "fractional"
    if name in ("date", "timestamp", "timestamp_ntz"):
        return "time"
    if name == "array":
        return "array"
    if name in ("struct", "map"):
        return "object"
    return name if name in _KINDS else "string"


def _kind_reason(fields: list[Any], line: Any) -> Any:
    """On a suspect line: the line as exact JSON (VARIANT), one object, each field of its kind.
    The first reason that holds, or null."""
    from pyspark.sql import functions as F

    wrapped = F.try_parse_json(F.concat(F.lit("["), line, F.lit("]")))  # one value: one item of an array
    single = F.try_parse_json(line)  # parses the first of several values, like Spark's reader
    several = single.isNotNull() & (wrapped.isNull() | F.try_variant_get(wrapped, "$[1]", "variant").isNotNull())
    found = [
        (several, SEVERAL),
        (~F.startswith(F.ltrim(line), F.lit("{")) & single.isNotNull(), NOT_OBJECT),
    ]
    for f in fields:
        value = F.try_variant_get(single, f"$['{f.name}']", "variant")
        kind = F.schema_of_variant(value)
        given = single.isNotNull() & kind.isNotNull() & (kind != "VOID")
        of_kind = F.regexp_like(kind, F.lit(f"^{_KINDS[_kind_class(f.dataType)]}$"))
        found.append((given & ~of_kind, f"{f.name}: not of its declared type {f.dataType.simpleString()}"))
        if _kind_class(f.dataType) in ("integral", "fractional", "array", "object"):  # times: the conversions
            fits = F.try_variant_get(single, f"$['{f.name}']", f.dataType.simpleString()).isNotNull()
            found.append((given & ~fits, f"{f.name}: does not fit {f.dataType.simpleString()} (out of range?)"))
    return _first_reason(found)


def _first_reason(reasons: list[tuple[Any, Any]]) -> Any:
    """The reason (text, or a column of text) of the first condition that holds, or null."""
    from pyspark.sql import functions as F

    reason = F.lit(None).cast("string")
    for when, why in reversed(reasons):
        reason = F.when(when, why if not isinstance(why, str) else F.lit(why)).otherwise(reason)
    return reason


def _check_parquet(path: Path, columns: dict[str, str]) -> None:
    """Refuse a landed file that is not Parquet, or whose schema lacks one of the declared
    `columns` (name -> Spark type) or holds it with another type (Spark would fail on it, or
    convert it in silence)."""
    import pyarrow.parquet as pq

    with path.open("rb") as handle:
        head = handle.read(4)
    if head != b"PAR1":
        kind = next((name for magic, name in _MAGIC if head.startswith(magic[:4])), "text or another format")
        raise BadSourceError(f"{path} is {kind}, not Parquet: this source reads Parquet files only")
    try:
        found = pq.read_schema(path)
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError: a truncated or corrupt file
        raise BadSourceError(
            f"{path} is not a readable Parquet file ({exc}): no record of it was used; re-land it whole"
        ) from None
    problems = []
    for name, declared in columns.items():
        if name not in found.names:
            problems.append(f"column {name!r} is missing")
        elif _nanoseconds(found.field(name).type):
            # pandas and pyarrow write these by default (Parquet 2.6); Spark fails on them mid-job.
            problems.append(
                f"column {name!r} holds nanosecond timestamps, which Spark cannot read: write them in "
                'microseconds (pandas: to_parquet(..., coerce_timestamps="us"); pyarrow: '
                'write_table(..., coerce_timestamps="us"))'
            )
        elif (kind := _arrow_as_spark(found.field(name).type)) != declared:
            problems.append(f"column {name!r} is {kind}, declared {declared}")
    if problems:
        raise BadSourceError(
            f"{path} does not have the declared columns: {'; '.join(problems)}. Land it with the declared "
            "schema, or declare the file's types (and cast them in the SQL)"
        )


def _nanoseconds(arrow_type: Any) -> bool:
    """Whether a column's type is, or holds, a timestamp in nanoseconds."""
    import pyarrow as pa

    t = pa.types
    if t.is_timestamp(arrow_type):
        return bool(arrow_type.unit == "ns")
    if t.is_list(arrow_type) or t.is_large_list(arrow_type) or t.is_dictionary(arrow_type):
        return _nanoseconds(arrow_type.value_type)
    if t.is_map(arrow_type):
        return _nanoseconds(arrow_type.key_type) or _nanoseconds(arrow_type.item_type)
    if t.is_struct(arrow_type):
        return any(_nanoseconds(f.type) for f in arrow_type)
    return False


def _arrow_as_spark(arrow_type: Any) -> str:
    """The Spark SQL type name Spark reads a Parquet column of this Arrow type as."""
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(arrow_type):  # dictionary-encoded (pandas' categoricals): its values' type
        return _arrow_as_spark(arrow_type.value_type)
    simple = [
        (t.is_string, "string"),
        (t.is_large_string, "string"),
        (t.is_boolean, "boolean"),
        (t.is_int8, "tinyint"),
        (t.is_int16, "smallint"),
        (t.is_int32, "int"),
        (t.is_int64, "bigint"),
        # Unsigned, as Spark reads them: into the next wider signed type.
        (t.is_uint8, "smallint"),
        (t.is_uint16, "int"),
        (t.is_uint32, "bigint"),
        (t.is_uint64, "decimal(20,0)"),
        (t.is_float32, "float"),
        (t.is_float64, "double"),
        (t.is_date32, "date"),
        (t.is_binary, "binary"),
    ]
    for test, name in simple:
        if test(arrow_type):
            return name
    if t.is_decimal(arrow_type):
        return f"decimal({arrow_type.precision},{arrow_type.scale})"
    if t.is_timestamp(arrow_type):
        return "timestamp" if arrow_type.tz is not None else "timestamp_ntz"
    if t.is_list(arrow_type) or t.is_large_list(arrow_type):
        return f"array<{_arrow_as_spark(arrow_type.value_type)}>"
    if t.is_struct(arrow_type):
        inner = ",".join(f"{f.name}:{_arrow_as_spark(f.type)}" for f in arrow_type)
        return f"struct<{inner}>"
    if t.is_map(arrow_type):
        return f"map<{_arrow_as_spark(arrow_type.key_type)},{_arrow_as_spark(arrow_type.item_type)}>"
    return str(arrow_type)


@dataclass(frozen=True)
class Places:
    """Where sources are read from, passed in by the step that reads them (`Runtime.places`):
    the landing folder of landed files, and the catalog of published tables (None: the
    environment's)."""

    landing_dir: Path
    catalog: Any = None


@dataclass(frozen=True)
class LandedFiles:
    """Raw files landed per partition under `<landing>/<dataset>/dt=<key>/`, where the key is
    the pipeline's partition key: `dt=2024-01-31` (daily) or `dt=2024-01-31T05` (hourly).

    Records can land late: the run for partition P also reads the next `late_folders`
    folders and the SQL keeps the records that belong to P.

    JSON lines: one object per line; each declared field must hold a value of its JSON kind
    (a string for STRING, DATE and TIMESTAMP, a number for numbers, true/false for
    BOOLEAN, an array or object for ARRAY/STRUCT/MAP) that fits the type exactly (no
    rounding, no overflow); else the record is a reject, "not of its declared type".
    `coerce=True` takes a value of another kind as Spark's JSON reader converts it instead
    (any value as its text in a STRING field, a number written as a string in a number
    field): for feeds known to need it. Values must still fit (no rounding, real times).

    CSV: a header naming the declared columns. Parquet: every file holds each declared
    column with the declared type, or is refused by name before anything is read.
    """

    dataset: str
    schema: str  # Spark DDL, e.g. "order_id STRING, amount DECIMAL(12,2)"; fields not declared are not read
    format: str = "json"  # "csv" (with a header row that must name the declared columns), or "parquet"
    late_folders: int = 1
    event_time: str | None = None  # a record in folder F must have this time in [F - late_folders, end of F)
    max_rejected_share: float = 0.0  # rejects tolerated in the partition's own folder (0.01 = 1%)
    coerce: bool = False  # JSON: convert values of other kinds as Spark does, instead of rejecting them

    @property
    def view(self) -> str:
        return f"landed_{self.dataset}"

    def location(self) -> str:
        """Where this dataset lands (what lineage names; never a single day's folder)."""
        return (load_settings().landing_dir / self.dataset).as_uri()

    def folders(
        self, partition: Partition, landing_dir: Path | None = None, last: Partition | None = None
    ) -> list[str]:
        """The folders a run of `partition` (to `last`, for a range) reads: its own, then the late ones."""
        root = (landing_dir or load_settings().landing_dir) / self.dataset
        grain = grain_of(partition)  # keys only: a local day's key is its date, as a UTC day's
        count = len(PartitionRange(partition, last or partition)) + self.late_folders
        return [str(root / f"dt={grain.key(grain.next(partition, n))}") for n in range(count)]

    def arrival_pattern(self, partition: Partition) -> str:
        """A glob that matches once the partition's own folder holds a data file (names
        starting with `_` or `.`, such as markers and checksums, are not data; Spark skips them)."""
        return str(load_settings().landing_dir / self.dataset / f"dt={key_of(partition)}" / "[!_.]*")

    def read(
        self,
        spark: SparkSession,
        partition: Partition,
        places: Places,
        last: Partition | None = None,
        refused: dict[str, str] | None = None,
        grain: Grain | None = None,
    ) -> DataFrame:
        """Every record of the partition's folders (of a range's, to `last`): the declared
        columns, plus `_reject` (why the record cannot be used, or null), `_own` (it landed in
        the folder of a partition the run is for), `_landed` (that folder's key), `_late_for`
        (an earlier partition it belongs to), `_file` and `_record` (its text as landed).

        A folder `landed_files` refuses stops the read (`BadSourceError`); given `refused`, it
        is left out instead, and its key and why are added to `refused`. `grain`: the pipeline's
        (a local day's decides which folder an `event_time` belongs to; default: the value's)."""
        from pyspark.sql import functions as F

        root = places.landing_dir / self.dataset
        folders = [Path(f) for f in self.folders(partition, places.landing_dir, last)]
        check = None
        if self.format == "parquet":
            columns = {f.name: f.dataType.simpleString() for f in self.empty(spark).schema.fields}
            check = partial(_check_parquet, columns=columns)
        if refused is None:
            files = landed_files(root, folders, check)
        else:
            files = []
            for folder in folders:
                if folder.name.removeprefix("dt=") in refused:  # refused already (an earlier try of this read)
                    continue
                try:
                    files += landed_files(root, [folder], check)
                except BadSourceError as exc:
                    refused[folder.name.removeprefix("dt=")] = str(exc)
        if not files:
            return spark.createDataFrame(
                [],
                f"{self.schema}, {REJECT} STRING, {OWN} BOOLEAN, {LANDED} STRING, {FILE} STRING, "
                f"{RECORD} STRING, {LATE} STRING",
            )
        paths = [_literal(path) for path in files]
        if self.format == "csv":
            frame, declared, reasons, record = self._read_csv(spark, paths)
        elif self.format == "parquet":
            frame, declared, reasons, record = self._read_parquet(spark, paths)
        else:
            frame, declared, reasons, record = self._read_json(spark, paths)
        grain = grain or grain_of(partition)
        # Keys compare as text: ISO keys of one grain sort as their times do.
        first_key, last_key = F.lit(grain.key(partition)), F.lit(grain.key(last or partition))
        frame = frame.withColumn(LANDED, F.regexp_extract(F.col(FILE), r"/dt=(\d{4}-\d{2}-\d{2}(?:T\d{2})?)/", 1))
        landed_on = F.col(LANDED)
        reason = _first_reason(reasons)
        late_for = F.lit(None).cast("string")
        happened: list[Any] = []
        if self.event_time:
            # Its partition's key, computed once per record (`_happened`, a projection of its own),
            # and each folder's earliest key computed here: the folders are known.
            happened_in = F.col(_HAPPENED)
            happened = [grain.spark_key(F.col(self.event_time)).alias(_HAPPENED)]
            window = {
                (name := Path(f).name.removeprefix("dt=")): grain.key(grain.next(grain.parse(name), -self.late_folders))
                for f in folders
            }
            earliest = F.element_at(F.create_map(*[F.lit(x) for pair in window.items() for x in pair]), landed_on)
            reason = F.coalesce(
                reason,
                F.when(happened_in.isNull(), F.lit(f"no {self.event_time}")).when(
                    (happened_in > landed_on) | (happened_in < earliest),
                    F.lit(f"{self.event_time} outside the folder's landing window"),
                ),
            )
            # A usable record in a folder that happened in an earlier partition: late data for
            # that partition, which may have been published without it (see `Intake.late`).
            late_for = F.when(F.col(REJECT).isNull() & (happened_in < landed_on), happened_in)
        # Each stage a projection of its own: a check used by several others is computed once
        # per record (Spark inlines a column into each expression of one projection that uses it).
        return (
            frame.select("*", *happened)
            .select(
                *declared, LANDED, FILE, record.alias(RECORD), reason.alias(REJECT), *([_HAPPENED] if happened else [])
            )
            .select(
                *declared,
                REJECT,
                ((landed_on >= first_key) & (landed_on <= last_key)).alias(OWN),
                LANDED,
                FILE,
                RECORD,
                late_for.alias(LATE),
            )
        )

    def empty(self, spark: SparkSession) -> DataFrame:
        """The columns the pipeline's SQL sees (the declared ones), no rows."""
        return spark.createDataFrame([], self.schema)

    def _read_json(self, spark: SparkSession, paths: list[str]) -> tuple[DataFrame, list[str], list, Any]:
        """JSON lines read as text, then parsed: the line is kept, and kinds can be checked."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import DateType, DecimalType, StringType, StructField, StructType, TimestampType

        fields = list(self.empty(spark).schema.fields)  # the declared schema, parsed
        declared = [f.name for f in fields]
        # A byte-order mark opening a file is dropped by Hadoop's line reader (plain and
        # compressed files alike), so no line needs a test for it.
        lines = (
            spark.read.text(paths)
            .select("value", F.col("_metadata.file_path").alias(FILE))
            .where(F.trim("value") != "")  # blank lines are not records
        )
        # Parsed with types that keep what was written: times as text, decimals at full scale.
        kept = []
        for f in fields:
            if isinstance(f.dataType, (DateType, TimestampType)) or f.dataType.typeName() == "timestamp_ntz":
                kept.append(StructField(f.name, StringType()))
            elif isinstance(f.dataType, DecimalType) and f.dataType.precision - f.dataType.scale <= 20:
                kept.append(StructField(f.name, DecimalType(38, 18)))
            else:
                kept.append(f)
        parse_as = StructType([*kept, StructField(_CORRUPT, StringType())])
        options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}
        line = F.col("value")
        parsed = lines.select(line, F.col(FILE), F.from_json(line, parse_as, options).alias("_parsed"))
        corrupt = F.col(f"_parsed.{_CORRUPT}")
        values, suspect, conversions = _json_type_checks(fields, line)
        all_null = reduce(and_, [F.col(f"_parsed.{name}").isNull() for name in declared])
        reasons: list[tuple[Any, Any]] = [
            (~F.is_valid_utf8(line) | F.contains(line, F.lit("\ufffd")), "text is not UTF-8"),
        ]
        checked = parsed.select("value", FILE, "_parsed", *values, (suspect | corrupt.isNotNull()).alias(_SUSPECT))
        if not self.coerce:
            # Parsed again as exact JSON only on a suspect line (a branch: the rest never parse twice).
            kind = F.col(_KIND)
            checked = checked.withColumn(_KIND, F.when(F.col(_SUSPECT), _kind_reason(fields, line)))
            reasons.append((kind.isNotNull(), kind))
        reasons += [
            (corrupt.isNotNull() & all_null, "unparseable record"),
            (corrupt.isNotNull(), "malformed record: a field missing or not of its declared type"),
            *conversions,
        ]
        return checked, declared, reasons, line

    def _read_parquet(self, spark: SparkSession, paths: list[str]) -> tuple[DataFrame, list[str], list, Any]:
        """Parquet files, each checked against the declared schema first (`_check_parquet`):
        typed values, so no record is a reject; the record as landed is shown as JSON."""
        from pyspark.sql import functions as F

        frame = spark.read.schema(self.schema).parquet(*paths).withColumn(FILE, F.col("_metadata.file_path"))
        declared = [c for c in frame.columns if c != FILE]
        return frame, declared, [], F.to_json(F.struct(*declared))

    def _read_csv(self, spark: SparkSession, paths: list[str]) -> tuple[DataFrame, list[str], list, Any]:
        from pyspark.sql import functions as F

        # Check the header against the declared names instead of trusting column order.
        frame = (
            spark.read.schema(f"{self.schema}, {_CORRUPT} STRING")
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", _CORRUPT)
            .option("header", "true")
            .option("enforceSchema", "false")
            .csv(paths)
        )
        frame = frame.withColumn(FILE, F.col("_metadata.file_path"))
        declared = [c for c in frame.columns if c not in (_CORRUPT, FILE)]
        texts = [F.col(_CORRUPT)] + [
            F.col(f.name) for f in frame.schema.fields if f.name in declared and f.dataType.typeName() == "string"
        ]
        # Text that is not UTF-8 is decoded to U+FFFD; Spark sets the corrupt-record column for
        # a line that does not parse and for a value that does not fit its type.
        reasons = [
            (
                reduce(
                    or_, [F.coalesce(~F.is_valid_utf8(c) | F.contains(c, F.lit("\ufffd")), F.lit(False)) for c in texts]
                ),
                "text is not UTF-8",
            ),
            (F.col(_CORRUPT).isNotNull() & reduce(and_, [F.col(c).isNull() for c in declared]), "unparseable record"),
            (F.col(_CORRUPT).isNotNull(), "malformed record: a field missing or not of its declared type"),
        ]
        shown = F.coalesce(F.col(_CORRUPT), F.concat_ws(",", *[F.col(c).cast("string") for c in declared]))
        return frame, declared, reasons, shown


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

    def read(
        self,
        spark: SparkSession,
        partition: Partition,
        places: Places,
        last: Partition | None = None,
        grain: Grain | None = None,
    ) -> DataFrame:
        from wap import tables

        table = tables.load_table(self.table, places.catalog)
        span = PartitionRange(partition, last or partition, grain or grain_of(partition))
        zone = tables.partition_zone(table)
        if zone is not None and zone != span.grain.zone:
            raise DataError(
                f"{self.table}'s partitions are days in {zone}, this pipeline's are {span.grain.described}: "
                f"the same key would mean another window of time, so no retry can help. Declare the grain "
                f"daily_in({zone!r}) in this pipeline (or publish {self.table} in this pipeline's zone)."
            )
        files = tables.files_by_partition(table, self.partition_column, span.first, span.last)
        missing = [key_of(p) for p in span.partitions() if key_of(p) not in files]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise SourceMissingError(
                f"{self.table} has no published partition {self.partition_column}={shown}; run its pipeline first"
            )
        return spark.read.parquet(*[f for names in files.values() for f in names])

    def key_column(self, grain: Grain) -> Any:
        """The key of the partition each row is read for (rows per partition in a range run)."""
        from pyspark.sql import functions as F

        return F.date_format(F.col(self.partition_column), grain.spark_key_format)


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

    def query(self, partition: Partition, last: Partition | None = None, grain: Grain | None = None) -> str:
        grain = grain or grain_of(partition)
        start, _ = grain.window(partition)
        _, end = grain.window(last or partition)
        # The bounds are formatted from a validated partition, never taken from input text.
        bound = "TIMESTAMP WITH TIME ZONE '{}'".format
        return (
            f"SELECT * FROM {self.table} WHERE {self.updated_at} >= {bound(start.isoformat())} "
            f"AND {self.updated_at} < {bound(end.isoformat())}"
        )

    def key_column(self, grain: Grain) -> Any:
        from pyspark.sql import functions as F

        return grain.spark_key(F.col(self.updated_at))

    def read(
        self,
        spark: SparkSession,
        partition: Partition,
        places: Places,
        last: Partition | None = None,
        grain: Grain | None = None,
    ) -> DataFrame:
        # Read the database once: the count and the transform see the same rows, even if
        # the source changes meanwhile.
        query = self.query(partition, last, grain)
        return self._jdbc(spark, query, lambda frame: frame.localCheckpoint(eager=True))

    def empty(self, spark: SparkSession) -> DataFrame:
        """The table's columns, no rows: the database is asked for its shape, not its data."""
        return self._jdbc(spark, f"SELECT * FROM {self.table} WHERE 1 = 0", lambda frame: frame)

    def _jdbc(self, spark: SparkSession, query: str, then: Any) -> DataFrame:
        """`query`'s result through Spark's JDBC reader, passed to `then` (where it is read)."""
        conn = self._connection()
        try:
            frame = (
                spark.read.format("jdbc")
                .option("url", f"jdbc:postgresql://{conn.host}:{conn.port or 5432}/{conn.schema}")
                .option("driver", "org.postgresql.Driver")
                .option("user", conn.login or "")
                .option("password", conn.password or "")
                .option("query", query)
                .option("fetchsize", self.fetch_size)
                .load()
            )
            result: DataFrame = then(frame)
            return result
        except Exception as exc:
            if "No suitable driver" in str(exc) or "ClassNotFoundException" in str(exc):
                raise SetupError(
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
    refused: str | None = None  # a folder the partition's run reads was refused (`landed_files`): why

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def share(self) -> float:
        return self.rejected_total / self.own_records if self.own_records else 0.0

    @property
    def too_many(self) -> bool:
        return self.rejected_total > 0 and (
            self.share > self.max_rejected_share or any(reason in self.rejected for reason in HIDES_RECORDS)
        )


def take_in(
    spark: SparkSession, source: Source, partition: Partition, places: Places, grain: Grain | None = None
) -> tuple[DataFrame, DataFrame | None, Intake]:
    """Read a source for the partition (of `grain`, the pipeline's: default the value's):
    (usable records, rejects or None, the accounting)."""
    usable, rejects, intakes = take_in_range(
        spark, source, PartitionRange(partition, partition, grain or grain_of(partition)), places
    )
    return usable, rejects, intakes[key_of(partition)]


def take_in_range(
    spark: SparkSession, source: Source, span: PartitionRange, places: Places, kept: list[Any] | None = None
) -> tuple[DataFrame, DataFrame | None, dict[str, Intake]]:
    """Read a source once for every partition of `span`: (usable records, rejects or None,
    each partition's accounting by key, as a run of that partition alone counts it).

    One pass counts records and rejects by landed folder; a second, only when there are
    rejects, takes a sample of each partition's. Rejects from folders after the range (read
    only for their late records) are left to their own partition's run, which answers for
    them. A range's records are read once and kept (persisted) for the transform (reading the
    files again would check every record again); the kept frames are added to `kept`, for the
    caller to unpersist once it has written.
    """
    from pyspark.sql import functions as F

    keys = [key_of(p) for p in span.partitions()]
    late_folders = getattr(source, "late_folders", 0)

    def reads(value: Partition) -> set[str]:  # what a run of this partition alone reads: its folder, the late ones
        return {key_of(span.grain.next(value, n)) for n in range(late_folders + 1)}

    # A landed folder refused (by its files' names and kinds before the read, or a file Spark
    # cannot read during it) stops the partitions whose own runs read it, not the range: the
    # range is read again without it. A single partition's run stops.
    refusals: dict[str, str] = {}  # landed folders left out of a range's read, by key, and why
    while True:
        refused: dict[str, str] = {}
        if len(keys) == 1:  # a source's read of a range takes its last partition (a single partition's: none)
            frame = source.read(spark, span.first, places, grain=span.grain)
        elif isinstance(source, LandedFiles):
            frame = source.read(spark, span.first, places, span.last, refused=refusals, grain=span.grain)
            for value, key in zip(span.partitions(), keys, strict=True):
                if found := sorted(reads(value) & set(refusals)):
                    refused[key] = refusals[found[0]]
        else:
            frame = source.read(spark, span.first, places, span.last, grain=span.grain)
        if REJECT not in frame.columns:
            if len(keys) == 1:
                records = {keys[0]: frame.count()}
            else:
                frame = frame.localCheckpoint(eager=True)  # read once: the count and every partition's query
                counted = frame.groupBy(source.key_column(span.grain).alias("k")).count().collect()  # type: ignore[union-attr]
                records = {k: 0 for k in keys} | {k: n for k, n in counted if k in keys}
            return frame, None, {k: Intake(source.view, n, n, {}, []) for k, n in records.items()}
        checked = frame  # every column; the rejects are taken from it (read again only if there are any)
        if len(keys) > 1:
            from pyspark.storagelevel import StorageLevel

            # Kept without the records' text and file: what the counts and the transform read.
            frame = frame.drop(FILE, RECORD).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = frame.groupBy(LANDED, REJECT, LATE).count().collect()
            break
        except Exception as exc:
            if not isinstance(source, LandedFiles):
                raise
            error = _unreadable(exc, source)
            folder = _folder_key(_refused_file(error))
            if len(keys) == 1 or folder is None or folder in refusals:
                raise error from exc
            frame.unpersist()
            refusals[folder] = str(error)
    if kept is not None and len(keys) > 1:
        kept.append(frame)
    rejects = checked.where(F.col(OWN) & F.col(REJECT).isNotNull())
    intakes = {}
    for value, key in zip(span.partitions(), keys, strict=True):
        if key in refused:
            intakes[key] = Intake(source.view, 0, 0, {}, [], refused=refused[key])
            continue
        rejected: dict[str, int] = {}
        late: dict[str, int] = {}
        for landed, reason, late_for, count in counts:
            if landed == key and reason is not None:
                rejected[reason] = rejected.get(reason, 0) + count
            if landed == key and late_for is not None:
                late[late_for] = late.get(late_for, 0) + count
        sample = []
        if rejected:  # a few rejects, each cut (`ledger.bounded`): the whole records are in the rejects files
            from wap.ledger import bounded

            picked = rejects.where(F.col(LANDED) == key).select(
                FILE, REJECT, F.coalesce(F.col(RECORD), F.lit("")).alias(RECORD)
            )
            sample = [
                {"file": r[FILE], "reason": r[REJECT], "record": bounded(r[RECORD])}
                for r in picked.limit(SAMPLE_REJECTS).collect()
            ]
        intakes[key] = Intake(
            source=source.view,
            records=sum(n for landed, *_, n in counts if landed in reads(value)),
            own_records=sum(n for landed, *_, n in counts if landed == key),
            rejected=rejected,
            sample=sample,
            max_rejected_share=getattr(source, "max_rejected_share", 0.0),  # only landed files have rejects
            late=late,
        )
    usable = frame.where(F.col(REJECT).isNull()).drop(REJECT, OWN, LANDED, FILE, RECORD, LATE)
    any_rejected = any(i.rejected for i in intakes.values())
    return usable, (rejects if any_rejected else None), intakes


def _unreadable(exc: Exception, source: LandedFiles) -> Exception:
    """A clear error for a landed file Spark refuses outright (the rest of its message is a JVM stack).

    Only what the file's bytes cause is a `BadSourceError` (no retry); other read errors (a
    network file system's time-out) stay as they are, for a retry.
    """
    text = str(exc)
    found = re.search(r"((?:CSV header|Number of column in CSV header).*?CSV file: \S+)", text, re.DOTALL)
    if found:
        detail = " ".join(found.group(1).split())
        return BadSourceError(f"{source.dataset}: a landed file does not have the declared columns ({detail})")
    failed = re.search(r"FAILED_READ_FILE\S*\] Encountered error while reading file (\S+?)\.?\s", text)
    cause = re.search(r"(EOFException|ZipException|Not in GZIP format|CRC|[Cc]orrupt)[^\n]*", text)
    if failed and cause:
        return BadSourceError(
            f"{failed.group(1)} is truncated or corrupt ({cause.group(0).strip()}): no record of it was used; "
            "re-land the file whole, then run the partition again"
        )
    return exc


def _refused_file(error: Exception) -> str | None:
    """The landed file an `_unreadable` error refuses, as its message names it; None for another error."""
    if not isinstance(error, BadSourceError):
        return None
    found = re.search(r"CSV file: (\S+?)\)?$", str(error)) or re.match(r"(\S+) is truncated or corrupt", str(error))
    return found.group(1) if found else None


def _folder_key(path: str | None) -> str | None:
    """The partition key of the landed folder holding `path` (`.../dt=<key>/<file>`), or None."""
    found = re.search(r"/dt=([^/]+)/[^/]+$", path or "")
    return found.group(1) if found else None
