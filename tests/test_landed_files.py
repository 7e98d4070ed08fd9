"""Landed files as a boundary: every record is read, or rejected with a reason, or the file
is refused by name; nothing outside the landing folder is read because of what is in it.

These run `sources.take_in` (the stage's reader) on files written here, with a real Spark
session. The pipeline-level cases (the outcome of a run, published data unchanged) are in
`test_bad_inputs.py`.
"""

from __future__ import annotations

import bz2
import datetime as dt
import decimal
import gzip
import json
import os
from pathlib import Path

import pytest

DAY = dt.date(2024, 1, 4)
SCHEMA = (
    "s STRING, b BOOLEAN, i INT, l BIGINT, m DECIMAL(12,2), x DOUBLE, t TIMESTAMP, d DATE, "
    "a ARRAY<STRING>, o STRUCT<id: INT>"
)
GOOD = {
    "s": "x",
    "b": True,
    "i": 1,
    "l": 2,
    "m": 1.5,
    "x": 1,
    "t": "2024-01-04T10:00:00Z",
    "d": "2024-01-04",
    "a": ["q"],
    "o": {"id": 1},
}


@pytest.fixture()
def landing(data_dir: Path, request) -> Path:
    """An empty landing folder for the dataset `k`, its day's folder made."""
    import shutil

    root = data_dir / "landing" / f"k{abs(hash(request.node.name)) % 10**8}"
    shutil.rmtree(root, ignore_errors=True)
    (root / f"dt={DAY}").mkdir(parents=True)
    return root


def source(root: Path, **options):
    from wap.sources import LandedFiles

    return LandedFiles(dataset=root.name, schema=SCHEMA, late_folders=0, **options)


def take(spark, root: Path, **options):
    from wap.sources import Places, take_in

    return take_in(spark, source(root, **options), DAY, Places(root.parent))


def reasons_by_line(spark, root: Path, **options) -> dict[str, str | None]:
    from wap.sources import Places

    rows = source(root, **options).read(spark, DAY, Places(root.parent)).collect()
    return {r["_record"]: r["_reject"] for r in rows}


def land(root: Path, lines: list[str], name: str = "a.jsonl") -> Path:
    path = root / f"dt={DAY}" / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


class Raw(str):
    """JSON text written as it is (json.dumps would normalise it)."""


def line_with(n: int, field: str, value: object) -> str:
    text = str(value) if isinstance(value, Raw) else json.dumps(value)
    return f'{{"s": "row-{n}", "{field}": {text}}}' if field != "s" else f'{{"s": {text}}}'


# (declared field, JSON value, reason or None when accepted)
KINDS = [
    ("s", {"id": 7}, "s: not of its declared type string"),
    ("s", ["C-1"], "s: not of its declared type string"),
    ("s", 12345, "s: not of its declared type string"),
    ("s", True, "s: not of its declared type string"),
    ("s", -1.5, "s: not of its declared type string"),
    ("s", "12345", None),
    ("s", "true", None),
    ("s", "{not json}", None),
    ("s", "fred", None),
    ("s", None, None),
    ("b", 1, "b: not of its declared type boolean"),
    ("b", "true", "b: not of its declared type boolean"),
    ("b", False, None),
    ("i", "12", "i: not of its declared type int"),
    ("i", 1.5, "i: not of its declared type int"),
    ("i", 3_000_000_000, "i: does not fit int (out of range?)"),
    ("i", -5, None),
    ("l", Raw("1e2"), "l: not of its declared type bigint"),
    ("l", 100.0, "malformed record: a field missing or not of its declared type"),  # Spark's reader refuses it
    ("l", 2**62, None),
    ("m", "12.34", "m: not of its declared type decimal(12,2)"),
    ("m", 12.345, "m: does not fit decimal(12,2) (rounded or out of range)"),
    ("m", [1], "m: not of its declared type decimal(12,2)"),
    ("m", 1e20, "m: does not fit decimal(12,2) (out of range?)"),
    ("m", 12, None),
    ("m", 12.3, None),
    ("x", "1.5", "x: not of its declared type double"),
    ("x", "NaN", "x: not of its declared type double"),
    ("x", -1.5e3, None),
    ("t", 1704067200, "t: not of its declared type timestamp"),
    ("t", True, "t: not of its declared type timestamp"),
    ("t", "04/01/2024", "t: not a timestamp"),
    ("t", "2024-01-04T10:00:00+05:00", None),
    ("d", "2024-01-04T10:00:00Z", "d: not a date (YYYY-MM-DD)"),
    ("d", 20240104, "d: not a date (YYYY-MM-DD)"),
    ("d", "2024-01-04", None),
    ("a", "x", "a: not of its declared type array<string>"),
    ("a", ["y"], None),
    ("o", [1], "o: not of its declared type struct<id:int>"),
    ("o", {"id": 2}, None),
]


def test_a_value_of_another_json_kind_is_a_reject_naming_the_field(spark, landing):
    lines = [line_with(n, field, value) for n, (field, value, _) in enumerate(KINDS)]
    land(landing, lines)
    found = reasons_by_line(spark, landing)
    assert [found[line] for line in lines] == [reason for *_, reason in KINDS]
    usable, _, intake = take(spark, landing)
    expected = sum(1 for *_, reason in KINDS if reason)
    assert intake.records == len(KINDS) and intake.rejected_total == expected
    assert usable.count() == len(KINDS) - expected
    # Accepted values keep what was written: no rounding, no truncation of a time.
    kept = {r["s"]: r for r in usable.collect()}
    assert kept[f"row-{KINDS.index(('m', 12.3, None))}"]["m"] == decimal.Decimal("12.30")
    assert kept[f"row-{KINDS.index(('t', '2024-01-04T10:00:00+05:00', None))}"]["t"] == dt.datetime(2024, 1, 4, 5)


def test_coerce_takes_values_as_spark_converts_them(spark, landing):
    lines = [json.dumps({"s": 12345}), json.dumps({"s": {"id": 7}}), json.dumps({"m": "12.34"})]
    land(landing, lines)
    usable, _, intake = take(spark, landing, coerce=True)
    assert intake.rejected_total == 0
    assert sorted(str(r["s"]) for r in usable.collect()) == ["12345", "None", '{"id":7}']


def test_several_records_on_one_line_are_one_reject_holding_them_all(spark, landing):
    many = "".join(json.dumps({**GOOD, "s": f"r{n}"}) for n in range(20_000))
    lines = [
        json.dumps(GOOD),
        many,
        json.dumps(GOOD) + "," + json.dumps(GOOD),
        json.dumps(GOOD) + " trailing text",
        json.dumps([GOOD]),
        '"just a string"',
        "null",
    ]
    land(landing, lines)
    found = reasons_by_line(spark, landing)
    several = "more than one JSON value on the line (one record per line)"
    assert [found[line] for line in lines] == [None, several, several, several] + ["not a JSON object"] * 3
    _, rejects, intake = take(spark, landing)
    assert intake.records == len(lines) and intake.rejected_total == len(lines) - 1
    kept = [r["_record"] for r in rejects.collect()]
    assert many in kept  # the whole line, all 20,000 records, is kept with its reason
    assert all(len(s["record"]) <= 400 for s in intake.sample), "samples are bounded"


def test_flat_records_hiding_others_after_their_brace_are_found(spark, landing):
    # The reader searches a line for text after a brace only when its first `}` is not its
    # last character; flat records (no nested object) are where that shortcut decides.
    several = "more than one JSON value on the line (one record per line)"
    cases = [
        ('{"s": "a"}', None),
        ('{"s": "a"}   ', None),
        ('{"s": "}"}', None),  # a brace inside a string
        ('{"s": "a"}{"s": "b"}', several),
        ('{"s": "a"} {"s": "b"}', several),
        ('{"s": "a"},{"s": "b"}', several),
        ('{"s": "a"}x', several),
        ('{"s": "a"} 1', several),
        (' {"s": "a"} 1', several),
    ]
    land(landing, [line for line, _ in cases])
    found = reasons_by_line(spark, landing)
    assert [found[line] for line, _ in cases] == [reason for _, reason in cases]


def test_blank_lines_crlf_and_a_utf8_byte_order_mark(spark, landing):
    path = landing / f"dt={DAY}" / "a.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n\r\n   \n" + json.dumps(GOOD).encode() + b"\r\n"
    )
    usable, _, intake = take(spark, landing)
    assert (intake.records, intake.rejected_total, usable.count()) == (2, 0, 2)


def refused(spark, root: Path, **options) -> str:
    from wap.sources import BadSourceError

    with pytest.raises(BadSourceError) as caught:
        take(spark, root, **options)
    return str(caught.value)


def test_a_subfolder_is_refused_by_name(spark, landing):
    land(landing, [json.dumps(GOOD)])
    for sub in ("replay", "source=replay"):  # the second is Hive-style: Spark would fail on it
        folder = landing / f"dt={DAY}" / sub
        folder.mkdir()
        (folder / "b.jsonl").write_text(json.dumps(GOOD) + "\n")
        message = refused(spark, landing)
        assert f"holds a folder '{sub}'" in message and "subfolders are not read" in message
        (folder / "b.jsonl").unlink()
        folder.rmdir()
    hidden = landing / f"dt={DAY}" / "_temporary"  # markers and hidden names are not data
    hidden.mkdir()
    assert take(spark, landing)[2].records == 1


def test_compressed_files_are_read_by_content_or_refused_by_name(spark, landing):
    records = [json.dumps({**GOOD, "s": f"r{n}"}) for n in range(5)]
    day = landing / f"dt={DAY}"
    (day / "a.jsonl.gz").write_bytes(gzip.compress("\n".join(records).encode() + b"\n"))
    (day / "b.jsonl.bz2").write_bytes(bz2.compress("\n".join(records).encode() + b"\n"))
    _, _, intake = take(spark, landing)
    assert (intake.records, intake.rejected_total) == (10, 0)  # named for their codec: decompressed

    (day / "c.json").write_bytes(gzip.compress(b"\n".join(r.encode() for r in records)))
    message = refused(spark, landing)
    assert "c.json is gzip, not the UTF-8 text its name says: name it c.json.gz" in message
    (day / "c.json").unlink()

    (day / "d.json.gz").write_text(records[0] + "\n")
    assert "d.json.gz is named .gz but is not gzip-compressed" in refused(spark, landing)
    (day / "d.json.gz").unlink()

    (day / "e.jsonl").write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)  # zstd, which Spark cannot read here
    assert "e.jsonl is zstd" in refused(spark, landing)
    (day / "e.jsonl").unlink()


def test_utf16_and_binary_files_are_refused_by_name(spark, landing):
    day = landing / f"dt={DAY}"
    (day / "a.jsonl").write_bytes((json.dumps(GOOD) + "\n").encode("utf-16"))
    assert "a.jsonl is UTF-16 text" in refused(spark, landing)
    (day / "a.jsonl").write_bytes((json.dumps(GOOD) + "\n").encode("utf-16-le"))  # no byte order mark
    assert "a.jsonl holds NUL bytes" in refused(spark, landing)


def test_links_out_of_the_landing_folder_are_refused_and_nothing_of_them_is_read(spark, landing, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text('{"s": "TOP-SECRET-LINE"}\n')
    day = landing / f"dt={DAY}"
    land(landing, [json.dumps(GOOD)])
    (day / "passwd.jsonl").symlink_to("/etc/passwd")
    message = refused(spark, landing)
    assert "passwd.jsonl is a link to a place outside the landing folder" in message
    assert "root:" not in message
    (day / "passwd.jsonl").unlink()

    (day / "s.jsonl").symlink_to(secret)
    message = refused(spark, landing)
    assert "s.jsonl is a link" in message and "TOP-SECRET" not in message and str(secret) not in message
    (day / "s.jsonl").unlink()

    (day / "elsewhere").symlink_to(tmp_path, target_is_directory=True)  # a folder link out
    assert "elsewhere is a link" in refused(spark, landing)
    (day / "elsewhere").unlink()

    # A link that stays inside the dataset's landing folder is read like the file itself.
    other = landing / "shared"
    other.mkdir()
    (other / "b.jsonl").write_text(json.dumps(GOOD) + "\n")
    (day / "b.jsonl").symlink_to(other / "b.jsonl")
    assert take(spark, landing)[2].records == 2


def test_the_partition_folder_itself_linked_out_is_refused(spark, landing, tmp_path):
    import shutil

    day = landing / f"dt={DAY}"
    shutil.rmtree(day)
    (tmp_path / "x.jsonl").write_text(json.dumps(GOOD) + "\n")
    day.symlink_to(tmp_path, target_is_directory=True)
    assert "is a link out of the landing folder" in refused(spark, landing)


def test_a_named_pipe_is_refused_without_blocking(spark, landing):
    land(landing, [json.dumps(GOOD)])
    os.mkfifo(landing / f"dt={DAY}" / "pipe.jsonl")
    assert "pipe.jsonl is not a regular file" in refused(spark, landing)


def test_a_truncated_gzip_file_is_refused_by_name_and_empty_files_are_no_records(spark, landing):
    day = landing / f"dt={DAY}"
    (day / "empty.jsonl").write_bytes(b"")
    (day / "empty.jsonl.gz").write_bytes(b"")
    whole = gzip.compress("".join(json.dumps({**GOOD, "s": f"r{n}"}) + "\n" for n in range(5000)).encode())
    (day / "a.jsonl.gz").write_bytes(whole)
    assert take(spark, landing)[2].records == 5000
    (day / "a.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # cut off in transfer
    message = refused(spark, landing)
    assert "a.jsonl.gz is truncated or corrupt" in message and "re-land the file whole" in message


def test_file_names_are_read_literally_never_as_patterns(spark, landing):
    """Spark's readers expand globs: a file named `*.jsonl` must not read its neighbours again."""
    names = ["a.jsonl", "*.jsonl", "b{1}.jsonl", "c[x].jsonl", "d?.jsonl", "my orders.jsonl", "ördérs.jsonl"]
    for n, name in enumerate(names):
        land(landing, [json.dumps({**GOOD, "s": f"r{n}"})], name)
    usable, _, intake = take(spark, landing)
    assert intake.records == len(names)
    assert sorted(r["s"] for r in usable.collect()) == sorted(f"r{n}" for n in range(len(names)))
    land(landing, [json.dumps(GOOD)], "orders:1.jsonl")
    assert "a landed file's name cannot hold ':'" in refused(spark, landing)


def test_a_link_to_nothing_or_a_loop_of_links_is_refused_by_name(spark, landing):
    day = landing / f"dt={DAY}"
    land(landing, [json.dumps(GOOD)])
    (day / "loop.jsonl").symlink_to(day / "loop.jsonl")
    assert "loop.jsonl is a link that leads nowhere" in refused(spark, landing)
    (day / "loop.jsonl").unlink()
    (day / "gone.jsonl").symlink_to(day / "deleted.jsonl")
    assert "gone.jsonl is a link that leads nowhere" in refused(spark, landing)


def test_a_file_refused_while_reading_names_the_folder_a_range_leaves_out():
    from wap.errors import BadSourceError
    from wap.sources import _folder_key, _refused_file

    root = "file:///land/orders"
    corrupt = BadSourceError(f"{root}/dt=2024-01-03/a.jsonl.gz is truncated or corrupt (EOFException): …")
    header = BadSourceError(
        f"orders: a landed file does not have the declared columns (… CSV file: {root}/dt=2024-01-05T07/b.csv)"
    )
    assert [_folder_key(_refused_file(e)) for e in (corrupt, header)] == ["2024-01-03", "2024-01-05T07"]
    assert _refused_file(OSError("a network file system timed out")) is None  # not the file's fault: retried


PARQUET_SCHEMA = "s STRING, m DECIMAL(12,2), t TIMESTAMP, l BIGINT"


def write_parquet(path: Path, **overrides) -> None:
    """Two rows with the declared columns (`overrides`: a column's arrow array instead, or None to leave it out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "s": pa.array(["x", None]),
        "m": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.25")], pa.decimal128(12, 2)),
        "t": pa.array([dt.datetime(2024, 1, 4, 10, tzinfo=dt.UTC), None], pa.timestamp("us", tz="UTC")),
        "l": pa.array([1, 2], pa.int64()),
        "extra": pa.array(["not", "declared"]),
    } | overrides
    pq.write_table(pa.table({k: v for k, v in columns.items() if v is not None}), path)


def take_parquet(spark, root: Path):
    from wap.sources import LandedFiles, Places, take_in

    files = LandedFiles(dataset=root.name, schema=PARQUET_SCHEMA, late_folders=0, format="parquet")
    return take_in(spark, files, DAY, Places(root.parent))


def test_parquet_files_are_read_with_their_types_and_every_record_counted(spark, landing):
    import pyarrow as pa

    write_parquet(landing / f"dt={DAY}" / "part-0.parquet")
    # pandas writes a categorical column dictionary-encoded: its values are strings, read as STRING
    categorical = pa.array(["x", None]).dictionary_encode()
    write_parquet(landing / f"dt={DAY}" / "export.snappy.parquet", s=categorical)
    # Unsigned 32-bit integers, which Spark reads as BIGINT; a timestamp in milliseconds
    unsigned, millis = (
        pa.array([1, 2], pa.uint32()),
        pa.array([dt.datetime(2024, 1, 4, 10), None], pa.timestamp("ms", "UTC")),
    )
    write_parquet(landing / f"dt={DAY}" / "other-writer.parquet", l=unsigned, t=millis, s=pa.array(["x", None]))
    (landing / f"dt={DAY}" / "_SUCCESS").write_text("")
    usable, rejects, intake = take_parquet(spark, landing)
    assert rejects is None and intake.records == intake.own_records == 6
    rows = sorted(usable.collect(), key=lambda r: (r.s is None, r.l))
    assert usable.columns == ["s", "m", "t", "l"]
    assert [(r.s, r.m, r.l) for r in rows[:3]] == [("x", decimal.Decimal("1.50"), 1)] * 3
    assert rows[0].t == dt.datetime(2024, 1, 4, 10)  # Spark's session time zone is UTC


@pytest.mark.parametrize(
    "overrides, said",
    [
        ({"m": None}, "column 'm' is missing"),
        ({"m": "double"}, "column 'm' is double, declared decimal(12,2)"),
        ({"l": "int32"}, "column 'l' is int, declared bigint"),
        ({"t": "naive"}, "column 't' is timestamp_ntz, declared timestamp"),
        # pandas' and pyarrow's default (Parquet 2.6); Spark fails on it in the middle of a job
        ({"t": "nanos"}, "column 't' holds nanosecond timestamps, which Spark cannot read"),
        ({"l": "uint64"}, "column 'l' is decimal(20,0), declared bigint"),
    ],
    ids=["missing", "double for decimal", "int for bigint", "local time for timestamp", "nanoseconds", "uint64"],
)
def test_a_parquet_file_without_the_declared_columns_is_refused_by_name(spark, landing, overrides, said):
    import pyarrow as pa

    from wap.errors import BadSourceError

    arrays = {
        "double": pa.array([1.5, 2.25]),
        "int32": pa.array([1, 2], pa.int32()),
        "naive": pa.array([dt.datetime(2024, 1, 4, 10), None], pa.timestamp("us")),
        "nanos": pa.array([dt.datetime(2024, 1, 4, 10), None], pa.timestamp("ns", "UTC")),
        "uint64": pa.array([1, 2], pa.uint64()),
        None: None,
    }
    write_parquet(landing / f"dt={DAY}" / "good.parquet")
    write_parquet(landing / f"dt={DAY}" / "bad.parquet", **{k: arrays[v] for k, v in overrides.items()})
    with pytest.raises(BadSourceError) as refused:
        take_parquet(spark, landing)
    assert "bad.parquet does not have the declared columns" in str(refused.value)
    assert said in str(refused.value)


def test_a_file_that_is_not_parquet_or_is_truncated_is_refused_by_name(spark, landing):
    from wap.errors import BadSourceError

    folder = landing / f"dt={DAY}"
    (folder / "a.parquet").write_text(json.dumps(GOOD) + "\n")
    with pytest.raises(BadSourceError, match=r"a.parquet is text or another format, not Parquet"):
        take_parquet(spark, landing)
    (folder / "a.parquet").unlink()
    write_parquet(folder / "whole.parquet")
    (folder / "cut.parquet").write_bytes((folder / "whole.parquet").read_bytes()[:-100])
    with pytest.raises(BadSourceError, match=r"cut.parquet is not a readable Parquet file"):
        take_parquet(spark, landing)
