"""Staging: where a run's output waits, invisible to readers, until it is published.

A run writes Parquet under a prefix unique to its run and attempt, inside the table's
location but outside any snapshot: `<table>/data/<col>=<day>/<run token>/`. Publishing
adds those files to the table by reference (no copy). A failed audit moves them to
`<table>/quarantine/<col>=<day>/<run token>/`.

On an object store the table's location is `s3://bucket/...`, the scheme Iceberg metadata
and pyarrow use. Spark on a cluster writes through Hadoop's S3A connector, which answers to
`s3a://`: `spark_uri` gives Spark its name for a location, `table_uri` the other way, and
`list_files` always returns the `s3://` form that `add_files` records. Both name the same
objects. Every filesystem here comes from `file_system`, configured like the catalog's.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from wap.partition import Partition, key_of
from wap.settings import load_settings

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem
    from pyspark.sql import DataFrame

# Rows per staged file: bounds file size without a count pass before the write.
MAX_RECORDS_PER_FILE = 2_000_000

# Hadoop's S3A connector serves s3a://; Iceberg (pyiceberg, Trino, Spark-with-Iceberg) records s3://.
_SPARK_SCHEMES = {"s3": "s3a"}
_TABLE_SCHEMES = {"s3a": "s3", "s3n": "s3"}
# pyarrow filesystems with no real folders: a folder is a key prefix, moving one copies each object.
_OBJECT_STORES = {"s3", "gcs"}


@dataclass(frozen=True)
class StagedRun:
    """What one attempt staged: everything the audit and publish steps need (XCom-safe)."""

    pipeline: str
    table: str
    partition: str
    run_id: str
    try_number: int
    run_token: str
    staged_dir: str
    files: list[str]
    rows_in: int
    code_version: str
    contract_version: int | None = None
    # The live version the run builds on (snapshot id; None: no live version yet). Its
    # publish replaces that version or nothing: the first run to publish wins (I5).
    base_snapshot: int | None = None
    # Earlier partitions with late records in this partition's own landed folder: published
    # without them, they need a run again (`tasks.reprocess_late`).
    late_for: list[str] = field(default_factory=list)
    # What the stage step found before the gate (rejected records, dropped added columns):
    # findings in `audit.Finding` form, reported with the gate's own.
    findings: list[dict[str, Any]] = field(default_factory=list)
    # What the gate needs, measured while the files were written (`audit.Gate.observe`):
    # the suite's digest and the column types it was planned for, the contract's findings
    # and the measured values. The audit judges from these without reading the files.
    measured: dict[str, Any] | None = None
    # Set by the audit from the measured values: what publish records.
    rows_out: int | None = None
    checksum: str | None = None
    # Every check the gate ran, passed or not (`audit.assertions`), for lineage.
    assertions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StagedRun:
        return cls(**data)


# The column a range run's staged rows carry their partition key in, and the folder Spark
# writes each partition's files to (`<range folder>/wap_partition=<key>/`); never in the files.
RANGE_KEY = "wap_partition"


@dataclass(frozen=True)
class StagedRange:
    """What one attempt of a range run staged: a `StagedRun` per partition still going (each
    with a run token of its own, `partition_token`), and the partitions stopped on the way,
    key -> why (XCom-safe)."""

    pipeline: str
    partition: str  # the range's key, FIRST/LAST
    run_id: str
    try_number: int
    run_token: str  # the attempt's; each partition's is `partition_token(run_token, key)`
    runs: list[StagedRun]
    stopped: dict[str, str] = field(default_factory=dict)
    # Set by the range's audit: every gated partition's checks, each check once
    # (`audit.merged_assertions`), those of the partitions it quarantined too.
    checked: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StagedRange:
        return cls(**{**data, "runs": [StagedRun.from_dict(r) for r in data["runs"]]})


def partition_token(token: str, key: str) -> str:
    """The run token of one partition of a range run's attempt `token`."""
    return f"{token}-{key}"


def run_token(run_id: str, try_number: int) -> str:
    """A path-safe name unique to one run and attempt.

    Airflow run ids can hold any text (`manual__2024-01-01T00:00:00+00:00`, or a user's own),
    so the readable part is sanitised and a hash of the exact id keeps tokens distinct.
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)[:60].strip("._") or "run"
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"run-{readable}-{digest}-try{int(try_number)}"


def partition_dir(table_location: str, area: str, column: str | None, partition: Partition, token: str) -> str:
    """`<table>/<area>/<column>=<key>/<token>`; `area` is `data` (staging) or `quarantine`.

    A merged table has no partition column: its runs' folders are `merged=<key>`."""
    if area not in ("data", "quarantine"):
        raise ValueError(f"unknown area {area!r}")
    return f"{table_location.rstrip('/')}/{area}/{column or 'merged'}={key_of(partition)}/{token}"


def write_staged(df: DataFrame, staged_dir: str) -> list[str]:
    """Write `df` as Parquet under `staged_dir` (replacing a previous try's leftovers).

    File sizes come from Spark without a single-task bottleneck: after a shuffle (GROUP
    BY, DISTINCT, JOIN) adaptive execution coalesces the output to partitions of about
    `spark.sql.adaptive.advisoryPartitionSizeInBytes` (one file for a small day); without
    one, input splits are up to `spark.sql.files.maxPartitionBytes`; and no file holds
    more than MAX_RECORDS_PER_FILE rows. (`coalesce(1)` wrote one file but in one task:
    twice as slow at 5M rows on 2 cores.)
    """
    df.write.mode("overwrite").option("maxRecordsPerFile", MAX_RECORDS_PER_FILE).parquet(spark_uri(staged_dir))
    return list_files(staged_dir)


def write_staged_by(df: DataFrame, staged_dir: str) -> dict[str, list[str]]:
    """Write a range run's rows as Parquet under `staged_dir` in one Spark job, each partition's
    (the `RANGE_KEY` column, which is not written into the files) in a folder of its own;
    return each partition's files by key (a partition without rows has none)."""
    (
        df.write.mode("overwrite")
        .partitionBy(RANGE_KEY)
        .option("maxRecordsPerFile", MAX_RECORDS_PER_FILE)
        .parquet(spark_uri(staged_dir))
    )
    found: dict[str, list[str]] = {}
    for path in list_files(staged_dir):
        if matched := re.search(f"/{RANGE_KEY}=([^/]+)/", path):
            found.setdefault(matched.group(1), []).append(path)
    return found


def checksum_aggregates(df: DataFrame) -> dict[str, Any]:
    """Aggregate columns of a content checksum, computed inside another pass (the audit's).

    The sums (not XOR) of the two 32-bit halves of a 64-bit hash of every column of every
    row: order-independent, duplicate rows change it instead of cancelling out, and the
    sums cannot overflow a bigint below 2^31 rows (cheaper than one decimal sum).
    """
    from pyspark.sql import functions as F

    row_hash = F.xxhash64(*[F.col(f"`{c}`") for c in sorted(df.columns)])
    return {
        "_rows": F.count(F.lit(1)),
        "_hash_hi": F.sum(F.shiftright(row_hash, 32)),
        "_hash_lo": F.sum(row_hash.bitwiseAND(F.lit(0xFFFFFFFF))),
    }


def format_checksum(values: dict[str, Any]) -> tuple[int, str]:
    """(row count, checksum) from the values of `checksum_aggregates`."""
    rows = int(values["_rows"])
    digest = hashlib.sha256(f"{rows}:{values['_hash_hi'] or 0}:{values['_hash_lo'] or 0}".encode())
    return rows, digest.hexdigest()[:16]


def _with_scheme(uri: str, schemes: dict[str, str]) -> str:
    scheme, sep, rest = uri.partition("://")
    return f"{schemes[scheme]}://{rest}" if sep and scheme in schemes else uri


def spark_uri(uri: str) -> str:
    """The name Spark (Hadoop's filesystems) has for a location: `s3://b/k` -> `s3a://b/k`; others as they are."""
    return _with_scheme(uri, _SPARK_SCHEMES)


def table_uri(uri: str) -> str:
    """The name Iceberg records for a location: `s3a://b/k` -> `s3://b/k`; others as they are."""
    return _with_scheme(uri, _TABLE_SCHEMES)


def file_system(uri: str) -> tuple[FileSystem, str]:
    """The pyarrow filesystem holding `uri`, and the path of `uri` in it.

    Local paths and `file://` URIs: pyarrow's own. Any other scheme: the filesystem that
    pyiceberg's PyArrowFileIO builds from the settings' FileIO properties, the same the
    tables use, so staging, quarantine and upkeep reach the store with the same endpoint
    and credentials as the catalog (`settings.ObjectStore.io_properties`).
    """
    from pyarrow import fs

    uri = table_uri(uri)
    if "://" not in uri or uri.startswith("file:"):
        filesystem, path = fs.FileSystem.from_uri(uri)
        return filesystem, path
    io = _file_io(tuple(sorted(load_settings().object_store.io_properties.items())))
    scheme, netloc, path = io.parse_location(uri)
    return io.fs_by_scheme(scheme, netloc), path


@cache
def _file_io(properties: tuple[tuple[str, str], ...]) -> Any:
    # One per configuration: it caches its filesystems (building an S3 client is not free).
    from pyiceberg.io.pyarrow import PyArrowFileIO

    return PyArrowFileIO(dict(properties))


def list_files(directory: str, suffix: str = ".parquet") -> list[str]:
    """The files under `directory` (at any depth) whose names end with `suffix`, as URIs, sorted.

    URIs in the table's form (`s3://`, even for an `s3a://` directory): what `add_files` records.
    """
    from pyarrow import fs

    directory = table_uri(directory)
    filesystem, path = file_system(directory)
    infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True, recursive=True))
    scheme = directory.split("://", 1)[0] + "://" if "://" in directory else ""
    return sorted(
        scheme + info.path for info in infos if info.type == fs.FileType.File and info.base_name.endswith(suffix)
    )


def move_dir(source: str, target: str) -> None:
    """Move a staged folder (to quarantine and back). Same filesystem; a rename where it can be.

    On an object store there is no rename: each object is copied, then the source deleted.
    The target is merged into, not replaced: after a crash between the copies and the
    deletes, the target is complete and the source partly deleted, and a second call
    finishes the move without losing what the first had already moved.
    """
    from pyarrow import fs

    filesystem, src = file_system(source)
    _, dst = file_system(target)
    if filesystem.get_file_info(src).type == fs.FileType.NotFound:
        return  # nothing was written
    if filesystem.type_name in _OBJECT_STORES:
        infos = filesystem.get_file_info(fs.FileSelector(src, recursive=True))
        for info in infos:
            if info.type == fs.FileType.File:
                filesystem.copy_file(info.path, dst + info.path[len(src) :])
        filesystem.delete_dir(src)  # only once every object has its copy
        return
    filesystem.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    if filesystem.get_file_info(dst).type != fs.FileType.NotFound:
        filesystem.delete_dir(dst)
    filesystem.move(src, dst)


def remove_dir(directory: str) -> None:
    """Delete a staged folder that no snapshot references (e.g. an unchanged re-run's)."""
    from pyarrow import fs

    filesystem, path = file_system(directory)
    if filesystem.get_file_info(path).type != fs.FileType.NotFound:
        filesystem.delete_dir(path)
