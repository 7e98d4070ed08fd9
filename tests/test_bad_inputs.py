"""The bad-input corpus: named bad inputs, each run through the real pipeline, each with
its expected outcome.

Every case lands something wrong for one day (or changes the SQL, or passes a hostile
partition value) after good days are published, runs the DAG with `dag.test()`, and
checks:
- the outcome: blocked by which check (quarantined, `AirflowFailException`, no retry),
  warned by which check (published, the warning in the ledger), or refused with an error
  that names what is wrong;
- the message names the check and column (or the file, or the value);
- no published partition changed, byte for byte, unless the case was only warned (then
  only its own day may change);
- nothing silently dropped: every landed line is a record read, and every record the run
  could not use is a counted reject, in the ledger and in the quarantine's rejects file.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import START, run_dag

DAY = START + dt.timedelta(days=3)  # three published days before it: enough history for the volume check
SILVER_SQL = Path(__file__).resolve().parents[1] / "include" / "sql" / "silver_orders.sql"
CSV_FIELDS = ["event_id", "order_id", "customer_id", "event_ts", "status", "amount", "currency", "channel"]


@dataclass
class Case:
    name: str
    outcome: str  # "blocked" | "warned" | "refused"
    checks: tuple[str, ...] = ()  # "check(column)" or "check", as the ledger's error names them
    message: str = ""  # text the error (or the warning) must contain
    land: Callable[[Path, list[dict]], int] | None = None  # writes DAY's folder; returns bad lines written
    sql: Callable[[str], str] | None = None  # rewrites the pipeline's SQL
    csv: bool = False  # the source is CSV instead of JSON
    conf: dict[str, Any] = field(default_factory=dict)
    pipeline: str = "silver_orders"
    empty_next_day: bool = False  # also remove the next day's folder (no late records either)
    also: str = ""  # more text the error must contain
    absent: str = ""  # text that must appear in no ledger row (e.g. a linked file's content)


# ---------------------------------------------------------------- writing a bad day
def jsonl(events: list[dict]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def write(folder: Path, name: str, content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    (folder / name).write_bytes(data)


def edit(events: list[dict], pick: Callable[[dict], bool], **changes: Any) -> int:
    """Change the picked events in place; return how many."""
    hit = [e for e in events if pick(e)]
    for event in hit:
        event.update(changes)
    return len(hit)


def first_orders(n: int) -> Callable[[dict], bool]:
    return lambda e: int(e["order_id"][-5:]) < n


def land_events(change: Callable[[list[dict]], Any], rejects: bool = False):
    """Write the day's events after `change`; the changed lines are rejects if `rejects`."""

    def land(folder: Path, events: list[dict]) -> int:
        changed = change(events)
        write(folder, "orders.jsonl", jsonl(events))
        return changed if rejects else 0

    return land


def land_text(make: Callable[[list[dict]], tuple[str | bytes, int]], name: str = "orders.jsonl"):
    def land(folder: Path, events: list[dict]) -> int:
        content, bad = make(events)
        write(folder, name, content)
        return bad

    return land


def as_csv(events: list[dict], header: list[str] = CSV_FIELDS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(events)
    return out.getvalue()


def with_bad_csv_lines(events: list[dict]) -> tuple[str, int]:
    text = as_csv(events)
    return text + "E-x,O-x,C-1,2024-01-04T10:00:00Z,placed,1.00,EUR,web,surplus\nE-y,O-y\n", 2


def truncated(events: list[dict]) -> tuple[bytes, int]:
    data = jsonl(events).encode()
    cut = data[: len(data) * 3 // 10]
    return cut[: cut.rindex(b"\n") + 25], 1  # whole lines, then a line cut off mid-record


def in_latin1(events: list[dict], pick: Callable[[dict], bool]) -> tuple[bytes, int]:
    """The day's file in Latin-1, with an accented customer id in the picked events."""
    n = edit(events, pick, customer_id="C-Müller")
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events).encode("latin-1"), n


def latin1_line(events: list[dict]) -> tuple[bytes, int]:
    good = jsonl(events).encode()
    bad = json.dumps({**events[0], "event_id": "E-latin1", "customer_id": "C-Müller"}, ensure_ascii=False)
    return good + bad.encode("latin-1") + b"\n", 1


def malformed_lines(events: list[dict]) -> tuple[str, int]:
    return jsonl(events) + '{"event_id": "E-cut", "order_id": "O-20240104-00001", "event_ts": "2024-01-04T1\n', 1


def joined(events: list[dict], n: int, between: str) -> str:
    """The day's events, the first `n` of them on one line."""
    return between.join(json.dumps(e) for e in events[:n]) + "\n" + jsonl(events[n:])


def land_in(subfolder: Path, events: list[dict]) -> int:
    """Half the day's events in the day's folder, the rest in a subfolder of it."""
    write(subfolder.parent, "orders.jsonl", jsonl(events[::2]))
    subfolder.mkdir()
    write(subfolder, "orders.jsonl", jsonl(events[1::2]))
    return 0


def link_out(folder: Path, events: list[dict], name: str, target: Path) -> int:
    write(folder, "orders.jsonl", jsonl(events))
    (folder / name).symlink_to(target)
    return 0


def sql_without_group_by(sql: str) -> str:
    return """
    SELECT order_id, CAST(:partition AS DATE) AS order_date, customer_id, status,
           CAST(amount AS DECIMAL(12, 2)) AS amount, currency, coalesce(channel, 'unknown') AS channel,
           event_ts AS placed_ts, event_ts AS updated_ts, CAST(1 AS BIGINT) AS event_count
    FROM landed_orders
    WHERE event_ts >= CAST(:partition AS TIMESTAMP) AND event_ts < CAST(:partition AS TIMESTAMP) + INTERVAL 1 DAY
    """


def sql_replace(old: str, new: str) -> Callable[[str], str]:
    def change(sql: str) -> str:
        assert old in sql, old
        return sql.replace(old, new)

    return change


AMOUNT = "CAST(max(amount) AS DECIMAL(12, 2))                AS amount"
CASES = [
    Case(
        "null key",
        "blocked",
        ("expect_column_values_to_not_be_null(order_id)",),
        land=land_events(lambda ev: edit(ev, first_orders(2), order_id=None)),
    ),
    Case(
        "duplicate keys (a transform that forgot its GROUP BY)",
        "blocked",
        ("expect_column_values_to_be_unique(order_id)",),
        sql=sql_without_group_by,
    ),
    Case(
        "negative amount",
        "blocked",
        ("expect_column_values_to_be_between(amount)",),
        land=land_events(lambda ev: edit(ev, lambda e: e["order_id"].endswith("00003") and e["amount"], amount=-12.5)),
    ),
    Case(
        "absurd amount",
        "blocked",
        ("expect_column_values_to_be_between(amount)",),
        land=land_events(lambda ev: edit(ev, lambda e: e["order_id"].endswith("00004") and e["amount"], amount=5e8)),
    ),
    Case(
        "status outside its set",
        "blocked",
        ("expect_column_values_to_be_in_set(status)",),
        land=land_events(lambda ev: edit(ev, first_orders(1), status="refunded")),
    ),
    Case(
        "currency outside its set",
        "blocked",
        ("expect_column_values_to_be_in_set(currency)",),
        land=land_events(lambda ev: edit(ev, first_orders(3), currency="eur")),
    ),
    Case(
        "events of another partition",
        "blocked",
        ("source: rejected records",),
        "event_ts outside the folder's landing window",
        land=land_events(lambda ev: edit(ev, first_orders(4), event_ts="2023-12-20T10:00:00Z"), rejects=True),
    ),
    Case(
        "an empty day (its late records still arrive the day after)",
        "blocked",
        ("volume: rows vs recent partitions",),
        land=land_text(lambda ev: ("", 0)),
    ),
    Case(
        "an empty day, and nothing late either",
        "blocked",
        ("expect_table_row_count_to_be_between",),
        land=land_text(lambda ev: ("", 0)),
        empty_next_day=True,
    ),
    Case(
        "far fewer rows than usual",
        "blocked",
        ("volume: rows vs recent partitions",),
        "the median of the last 3 partitions",
        land=land_text(lambda ev: (jsonl([e for e in ev if int(e["order_id"][-5:]) < 20]), 0)),
    ),
    Case(
        "a field missing from the landed records",
        "blocked",
        ("expect_column_values_to_not_be_null(amount)",),
        land=land_events(lambda ev: [e.pop("amount") for e in ev]),
    ),
    Case(
        "a column missing from the output",
        "blocked",
        ("contract: column present(currency)",),
        "missing column 'currency' (expected string)",
        sql=sql_replace("    max(currency)                                      AS currency,\n", ""),
    ),
    Case(
        "an extra column in the output (contract blocks added columns)",
        "blocked",
        ("contract: no added columns(coupon)",),
        "added column 'coupon' (string)",
        sql=sql_replace(
            "    count(*)                                           AS event_count",
            "count(*) AS event_count, 'X' AS coupon",
        ),
    ),
    Case(
        "a changed type in the output",
        "blocked",
        ("contract: column type(amount)",),
        "column 'amount': expected decimal(12,2), found string",
        sql=sql_replace(AMOUNT, "CAST(max(amount) AS STRING) AS amount"),
    ),
    Case(
        "a renamed column",
        "blocked",
        ("contract: column present(amount)", "contract: no added columns(amount_eur)"),
        "renamed to 'amount_eur'?",
        sql=sql_replace(AMOUNT, "CAST(max(amount) AS DECIMAL(12, 2)) AS amount_eur"),
    ),
    Case(
        "a string where a number belongs",
        "blocked",
        ("source: rejected records",),
        "amount: not of its declared type decimal(12,2)",
        land=land_events(lambda ev: edit(ev, lambda e: e["amount"] is not None, amount="12.50 EUR"), rejects=True),
    ),
    Case(
        "unparseable timestamps",
        "blocked",
        ("source: rejected records",),
        "event_ts: not a timestamp",
        land=land_events(lambda ev: edit(ev, first_orders(5), event_ts="04/01/2024 10:00"), rejects=True),
    ),
    Case(
        "a malformed JSON line (within the tolerated share)",
        "warned",
        ("source: rejected records",),
        "unparseable record: 1",
        land=land_text(malformed_lines),
    ),
    Case(
        "malformed CSV lines",
        "blocked",
        ("source: rejected records",),
        "malformed record: a field missing or not of its declared type: 2",
        land=land_text(with_bad_csv_lines, "orders.csv"),
        csv=True,
    ),
    Case(
        "a truncated file",
        "blocked",
        ("source: rejected records",),  # the cut line; the stage stops before the volume is counted
        "unparseable record: 1",
        land=land_text(truncated),
    ),
    Case(
        "wrong encoding (Latin-1 text in a UTF-8 feed)",
        "blocked",
        ("source: rejected records",),
        "text is not UTF-8",
        land=land_text(lambda ev: in_latin1(ev, first_orders(10))),
    ),
    Case(
        # Spark's JSON reader would decode each UTF-16 line on its own guess, its text reader
        # not at all: the feed is UTF-8, so the file is refused by name.
        "a UTF-16 file",
        "refused",
        message="orders.jsonl is UTF-16 text, not the UTF-8 text its name says",
        land=land_text(lambda ev: (jsonl(ev).encode("utf-16"), 0)),
    ),
    Case(
        "one line in Latin-1 (within the tolerated share)",
        "warned",
        ("source: rejected records",),
        "text is not UTF-8: 1",
        land=land_text(latin1_line),
    ),
    Case(
        "a CSV file with only a header",
        "blocked",
        ("volume: rows vs recent partitions",),
        land=land_text(lambda ev: (as_csv([]), 0), "orders.csv"),
        csv=True,
    ),
    Case(
        "a CSV file with an extra column",
        "refused",
        message="orders: a landed file does not have the declared columns (Number of column in CSV header",
        land=land_text(lambda ev: (as_csv(ev, [*CSV_FIELDS, "coupon"]), 0), "orders.csv"),
        csv=True,
    ),
    Case(
        "a huge single string value",
        "blocked",
        ("expect_column_value_lengths_to_be_between(customer_id)",),
        land=land_events(lambda ev: edit(ev, first_orders(1), customer_id="C" * 1_000_000)),
    ),
    # -- a value of another JSON kind in a declared field (Spark's reader would take it as text)
    *[
        Case(
            f"{what} in a text field",
            "blocked",
            ("source: rejected records",),
            "customer_id: not of its declared type string",
            land=land_events(lambda ev, v=value: edit(ev, first_orders(4), customer_id=v), rejects=True),
        )
        for what, value in (("an object", {"id": 7}), ("a number", 12345))  # every kind: test_landed_files.py
    ],
    Case(
        "an object in a text field, once (within the tolerated share)",
        "warned",
        ("source: rejected records",),
        "customer_id: not of its declared type string: 1",
        land=land_events(lambda ev: edit(ev, first_orders(1), customer_id={"id": 7}), rejects=True),
    ),
    Case(
        "a number written as a string",
        "blocked",
        ("source: rejected records",),
        "amount: not of its declared type decimal(12,2)",
        land=land_events(lambda ev: edit(ev, lambda e: e["amount"] is not None, amount="12.50"), rejects=True),
    ),
    Case(
        "an amount past its decimal places (would be rounded)",
        "blocked",
        ("source: rejected records",),
        "amount: does not fit decimal(12,2)",
        land=land_events(lambda ev: edit(ev, lambda e: e["amount"] is not None, amount=12.345), rejects=True),
    ),
    Case(
        "epoch seconds for a timestamp",
        "blocked",
        ("source: rejected records",),
        "event_ts: not of its declared type timestamp",
        land=land_events(lambda ev: edit(ev, first_orders(5), event_ts=1704362400), rejects=True),
    ),
    # -- records that would be lost without a trace
    Case(
        "several records on one line (no newlines between them)",
        "blocked",
        ("source: rejected records",),
        "more than one JSON value on the line (one record per line): 1",
        land=land_text(lambda ev: (joined(ev, 5, ""), 1)),
    ),
    Case(
        "a record with text after it on its line",
        "blocked",
        ("source: rejected records",),
        "more than one JSON value on the line (one record per line): 1",
        land=land_text(lambda ev: (jsonl(ev[1:]) + json.dumps(ev[0]) + " EOF\n", 1)),
    ),
    Case(
        "a JSON array of records on one line",
        "blocked",
        ("source: rejected records",),
        "not a JSON object: 1",
        land=land_text(lambda ev: (jsonl(ev[3:]) + json.dumps(ev[:3]) + "\n", 1)),
    ),
    Case(
        "a file in a subfolder of the day",
        "refused",
        message="holds a folder 'replay': landed files must lie directly in the partition's folder",
        land=lambda folder, ev: land_in(folder / "replay", ev),
    ),
    Case(
        "a Hive-style subfolder (Spark would fail on its directory structure)",
        "refused",
        message="holds a folder 'source=replay'",
        land=lambda folder, ev: land_in(folder / "source=replay", ev),
    ),
    Case(
        "a gzip-compressed file named .json",
        "refused",
        message="orders.json is gzip, not the UTF-8 text its name says: name it orders.json.gz",
        land=land_text(lambda ev: (gzip.compress(jsonl(ev).encode()), 0), "orders.json"),
    ),
    Case(
        "a gzip-compressed file named .gz (read, every record counted)",
        "warned",
        land=land_text(lambda ev: (gzip.compress(jsonl(ev).encode()), 0), "orders.jsonl.gz"),
    ),
    Case(
        "a byte order mark and Windows line ends",
        "warned",
        land=land_text(lambda ev: (b"\xef\xbb\xbf" + jsonl(ev).replace("\n", "\r\n").encode(), 0)),
    ),
    # -- the landing folder is a boundary
    Case(
        "a link to /etc/passwd in the day's folder",
        "refused",
        message="passwd.jsonl is a link to a place outside the landing folder",
        land=lambda folder, ev: link_out(folder, ev, "passwd.jsonl", Path("/etc/passwd")),
        absent="root:",
    ),
    Case(
        "a named pipe in the day's folder (a reader would wait forever)",
        "refused",
        message="orders.fifo is not a regular file",
        land=lambda folder, ev: (write(folder, "orders.jsonl", jsonl(ev)), os.mkfifo(folder / "orders.fifo"), 0)[-1],
    ),
    # -- errors that retrying cannot fix fail at once, with Spark's whole message
    Case(
        "a misspelt column in the SQL",
        "refused",
        message="Did you mean",
        sql=sql_replace("max(currency)", "max(curency)"),
        also="UNRESOLVED_COLUMN",
    ),
    Case(
        "a syntax error in the SQL",
        "refused",
        message="PARSE_SYNTAX_ERROR",
        sql=sql_replace("count(*)                                           AS event_count", "count(*) AS AS x"),
    ),
    Case("a partition that is not a date", "refused", message="'yesterday'", conf={"partition": "yesterday"}),
    Case("a partition that tries path traversal", "refused", message="../", conf={"partition": "../../etc/passwd"}),
    Case(
        "a partition that tries SQL injection",
        "refused",
        message="2024-01-04' OR '1'='1",
        conf={"partition": "2024-01-04' OR '1'='1"},
    ),
    Case(
        "a partition past the calendar",
        "refused",
        message="outside the supported calendar",
        conf={"partition": "9999-12-31"},
    ),
    Case(
        "a partition in fullwidth digits", "refused", message="ASCII digits", conf={"partition": "２０２４-０１-０４"}
    ),
    Case(
        "a partition with SQL after it",
        "refused",
        message="must be a daily partition",
        conf={"partition": "2024-01-05;DROP TABLE x"},
    ),
    Case(
        "nulls in a column whose check is a warning",
        "warned",
        ("expect_column_values_to_not_be_null(customer_id)",),
        land=land_events(lambda ev: edit(ev, first_orders(2), customer_id=None)),
    ),
    Case(
        "an extra column in gold's output (its contract allows and records added columns)",
        "warned",
        ("contract: no added columns(note)",),
        "added column 'note' (string) not published",
        sql=sql_replace("    count(DISTINCT customer_id)", "    'n' AS note,\n    count(DISTINCT customer_id)"),
        pipeline="gold_daily_sales",
    ),
]


# ---------------------------------------------------------------- running a case
def live_files() -> dict[str, str]:
    """Every live data file of both tables, with the sha256 of its bytes."""
    from wap import tables

    files = {}
    for name in ("silver.orders", "gold.daily_sales"):
        for task in tables.load_table(name).scan().plan_files():
            path = task.file.file_path
            files[path] = hashlib.sha256(Path(path.removeprefix("file://")).read_bytes()).hexdigest()
    return files


def partition_of(path: str) -> str:
    return path.split("order_date=")[1][:10]


@pytest.fixture(scope="module")
def published(dags, landed, spark):
    """Silver for four days and gold for the last: the state every case must not damage."""
    for n in range(4):
        assert run_dag(dags["silver_orders"], day=START + dt.timedelta(days=n))["dag"] == "success"
    assert run_dag(dags["gold_daily_sales"], conf={"partition": DAY.isoformat()})["dag"] == "success"
    pristine = landed.parent / "pristine"
    shutil.copytree(landed, pristine)
    return pristine


def day_folder(root: Path, day: dt.date) -> Path:
    return root / "orders" / f"dt={day.isoformat()}"


def restore(landed: Path, pristine: Path) -> None:
    for day in (DAY, DAY + dt.timedelta(days=1)):
        shutil.rmtree(day_folder(landed, day), ignore_errors=True)
        shutil.copytree(day_folder(pristine, day), day_folder(landed, day))


def read_events(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def replace_with(folder: Path, name: str, content: str) -> None:
    for f in folder.iterdir():
        f.unlink()
    write(folder, name, content)


def sql_variant(case: Case, folder: Path) -> Path:
    """A copy of include/sql/ with the case's change to its pipeline's SQL (for WAP_SQL_DIR)."""
    shutil.copytree(SILVER_SQL.parent, folder)
    changed = folder / f"{case.pipeline}.sql"
    changed.write_text(case.sql(changed.read_text()))
    return folder


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, published: Path, landed: Path, dags, tmp_path, caplog, capfd, monkeypatch):
    from wap.ledger import Ledger

    assert len(CASES) >= 20
    folder, next_folder = day_folder(landed, DAY), day_folder(landed, DAY + dt.timedelta(days=1))
    try:
        expected_rejects = 0
        if case.csv:  # a CSV-landing pipeline: both folders it reads are CSV
            replace_with(next_folder, "orders.csv", as_csv(read_events(next_folder)))
        if case.empty_next_day:
            replace_with(next_folder, "orders.jsonl", "")
        if case.land:
            events = read_events(folder)
            for f in folder.iterdir():
                f.unlink()
            expected_rejects = case.land(folder, events)
        before = live_files()
        seen = len(Ledger().rows(case.pipeline))

        if case.sql:
            monkeypatch.setenv("WAP_SQL_DIR", str(sql_variant(case, tmp_path / "sql")))
        dag = dags["silver_orders_csv" if case.csv else case.pipeline]
        try:
            states = run_dag(dag, conf=case.conf or {"partition": DAY.isoformat()})
        except Exception as exc:  # Airflow's own Param check may refuse a value before any task runs
            assert case.outcome == "refused", exc
            states = {"dag": "not started", "error": str(exc)}
        after = live_files()
        rows = Ledger().rows(case.pipeline)[seen:]
        task_log = "".join(capfd.readouterr())  # dag.test prints each task's log
        check_outcome(case, states, rows, before, after, caplog.text + task_log)
        if case.absent:
            assert case.absent not in json.dumps(rows, default=str), "something behind a link was read"
        if case.land and case.outcome != "refused":
            check_nothing_dropped(rows[0], [folder, next_folder], expected_rejects)
    finally:
        restore(landed, published)


def check_outcome(case: Case, states: dict, rows: list[dict], before: dict, after: dict, log: str) -> None:
    if case.outcome in ("blocked", "refused"):
        assert states["dag"] in ("failed", "not started"), states
        assert after == before, "a published partition changed"
    if case.outcome == "blocked":
        failed = next(t for t in ("stage", "audit") if states.get(t) == "failed")
        assert states["_tries"][failed] == 1, "a data failure must not be retried"
        (row,) = rows
        assert row["status"] == "quarantined", row["error"]
        for check in case.checks:
            assert check in row["error"], (check, row["error"])
        assert case.message in json.dumps(json.loads(row["details"])["audit"]["findings"], ensure_ascii=False)
    elif case.outcome == "refused":
        said = " ".join([states.get("error", ""), log, *(r["error"] or "" for r in rows)])
        assert case.message in said, said[-3000:]
        assert case.also in said, said[-3000:]
        assert all(r["status"] == "failed" for r in rows)
        assert all(states.get(t) != "up_for_retry" for t in ("stage", "audit")), "a data failure must not be retried"
        assert all(states.get("_tries", {}).get(t, 0) <= 1 for t in ("stage", "audit")), "retried"
        if rows:  # the ledger keeps the whole message, not its first line
            assert case.message in rows[0]["error"] and case.also in rows[0]["error"]
    else:
        assert states["dag"] == "success", states
        (row,) = rows
        assert row["status"] in ("published", "skipped")
        findings = json.loads(row["details"])["audit"]["findings"]
        named = {f"{f['check']}({f['column']})" if f["column"] else f["check"] for f in findings}
        assert named == set(case.checks)
        assert all(f["severity"] == "warning" for f in findings)
        assert case.message in json.dumps(findings, ensure_ascii=False)
        changed = {partition_of(p) for p in before.keys() ^ after.keys()}
        assert changed <= {DAY.isoformat()}, "only the warned day may change"


def count_records(path: Path) -> int:
    """Non-blank lines, split at newline bytes as Spark does (after a CSV file's header)."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = [line for line in data.split(b"\n") if line.strip()]
    return len(lines) - (1 if path.suffix == ".csv" and lines else 0)


def check_nothing_dropped(row: dict, folders: list[Path], expected_rejects: int) -> None:
    """Every landed line was read as a record; every record the run could not use is a counted reject."""
    intake = json.loads(row["details"])["intake"]["landed_orders"]
    rejected = sum(intake["rejected"].values())
    assert rejected == expected_rejects, intake
    assert row["rows_in"] == intake["records"] == sum(count_records(f) for d in folders for f in d.iterdir())
    findings = json.loads(row["details"])["audit"]["findings"]
    reported = [f for f in findings if f["check"] == "source: rejected records"]
    assert sum(f["unexpected_count"] for f in reported) == rejected
    for finding in reported:  # the rejects themselves are kept, with their file and reason
        kept = Path(finding["observed"]["kept_in"].removeprefix("file:"))
        records = [json.loads(line) for f in kept.glob("*.json") for line in f.read_text().splitlines()]
        assert len(records) == finding["unexpected_count"]
        assert all(r["_reject"] and "/orders/dt=" in r["_file"] for r in records)
