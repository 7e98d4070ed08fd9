"""Spark Connect (issue 7): the same DAGs, switched to a Spark Connect server by
`WAP_SPARK_REMOTE` alone, publish the same rows and record the same ledger and gate results
as the embedded session, from the same landed files.

One Spark Connect server (the one PySpark ships) for the module. The embedded side runs in
this process (conftest's classic session); the Connect side in a fresh process
(`dag_process.py`), since a process keeps the session it has. Each side, in its own data
folder with a copy of the same landed files, runs silver_orders and gold_daily_sales for a
good day and silver_orders for a bad day (quarantined: GX re-evaluates the failed checks on
the staged data for their counts and samples), then gates small frames with expectation
types only GX evaluates (not compiled by `audit._compile`) and types the gate compiles
(uniqueness passes, pairs, regex), passing and failing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import START, read_partition, run_dag
from dag_process import gate_probes
from test_bad_inputs import day_folder, edit, jsonl, read_events

DAY = START
# Its own folder and the next (late records) are changed; DAY's run reads DAY's and DAY+1's.
BAD_DAY = START + dt.timedelta(days=2)
RUNS = [("silver_orders", DAY), ("gold_daily_sales", DAY), ("silver_orders", BAD_DAY)]
EXPECTED_STATES = ["success", "success", "failed"]
TABLE_DAYS = [("silver.orders", DAY), ("gold.daily_sales", DAY), ("silver.orders", BAD_DAY)]
# The bad day's defects, one order each: what the gate must find, with its sample.
BAD_ORDERS = {
    "expect_column_values_to_not_be_null(order_id)": (0, {"order_id": None}, [None]),
    "expect_column_values_to_be_between(amount)": (3, {"amount": -12.5}, ["-12.50"]),
    "expect_column_values_to_be_in_set(status)": (5, {"status": "refunded"}, ["refunded"]),
}

# Gate probes: a small frame and expectation types GX evaluates or the gate compiles
# (`COMPILED`), each meant to pass or to fail.
PROBE_SCHEMA = "id STRING, a BIGINT, b BIGINT, d STRING, code STRING"
PROBE_ROWS = [
    ["k1", 5, 3, "2024-01-01", "AB-1"],
    ["k2", 4, 4, "2024-01-02", "AB-2"],
    ["k3", 1, 2, "2024-01-03", "AB-3"],  # a < b
    ["k3", 9, 0, "2024-13-03", "AB-3"],  # the id and code of the row above; no month 13
    [None, 2, 1, "2024-01-05", "x"],  # not the code pattern
]


def e(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs}


PASSING = [
    e("expect_compound_columns_to_be_unique", column_list=["id", "d"]),
    e("expect_column_pair_values_a_to_be_greater_than_b", column_A="a", column_B="b", or_equal=True, mostly=0.75),
    e("expect_column_values_to_match_regex", column="code", regex=r"^AB-\d$", mostly=0.75),
    e("expect_column_values_to_match_strftime_format", column="d", strftime_format="%Y-%m-%d", mostly=0.75),
    e("expect_column_mean_to_be_between", column="a", min_value=0, max_value=10),
    e("expect_column_values_to_be_unique", column="id", mostly=0.5),
]
# (expectation, its expected unexpected count; None: an aggregate expectation, no count)
FAILING = [
    (e("expect_compound_columns_to_be_unique", column_list=["id", "code"]), 2),
    (e("expect_column_pair_values_a_to_be_greater_than_b", column_A="a", column_B="b", or_equal=True), 1),
    (e("expect_column_values_to_match_regex", column="code", regex=r"^AB-\d$"), 1),
    (e("expect_column_values_to_match_strftime_format", column="d", strftime_format="%Y-%m-%d"), 1),
    (e("expect_column_mean_to_be_between", column="a", min_value=5, max_value=10), None),
    (e("expect_column_values_to_be_unique", column="id", mostly=0.9), 2),
]
COMPILED = {
    "expect_compound_columns_to_be_unique",
    "expect_column_pair_values_a_to_be_greater_than_b",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_be_unique",
}
PROBES = {
    "passing": {"schema": PROBE_SCHEMA, "rows": PROBE_ROWS, "expectations": PASSING},
    "failing": {"schema": PROBE_SCHEMA, "rows": PROBE_ROWS, "expectations": [x for x, _ in FAILING]},
    # An expectation that raises inside GX is a failure, on Connect too.
    "raising": {
        "schema": PROBE_SCHEMA,
        "rows": PROBE_ROWS,
        "expectations": [e("expect_column_values_to_be_in_type_list", column="missing", type_list=["StringType"])],
    },
}


@pytest.fixture(scope="module")
def server():
    from wap.spark import ConnectServer

    with ConnectServer() as server:
        yield server


def land_bad_day(landing: Path) -> None:
    """The bad day's defects, in its folder and the next (where its late events are)."""
    for folder in (day_folder(landing, BAD_DAY), day_folder(landing, BAD_DAY + dt.timedelta(days=1))):
        events = read_events(folder)
        for n, changes, _ in BAD_ORDERS.values():
            edit(events, lambda ev, n=n: ev["order_id"] == f"O-{BAD_DAY:%Y%m%d}-{n:05d}", **changes)
        for f in folder.iterdir():
            f.unlink()
        (folder / "orders.jsonl").write_text(jsonl(events))


@contextlib.contextmanager
def data_folder(path: Path):
    """Read another data folder's tables and ledger (settings come from the environment)."""
    previous = os.environ["WAP_DATA_DIR"]
    os.environ["WAP_DATA_DIR"] = str(path)
    try:
        yield
    finally:
        os.environ["WAP_DATA_DIR"] = previous


@pytest.fixture(scope="module")
def sides(dags, landed, data_dir, spark, server) -> dict[str, dict[str, Any]]:
    """Both sides' runs, and what each left in its tables and ledger. The Connect side runs
    while this process runs the embedded side: most of a run's time is Python, one core each."""
    land_bad_day(landed)
    connect_dir = data_dir.parent / f"{data_dir.name}-connect"
    shutil.copytree(landed, connect_dir / "landing")
    command = {"runs": [[dag_id, day.isoformat()] for dag_id, day in RUNS], "probes": PROBES}
    out, err = connect_dir / "stdout.log", connect_dir / "stderr.log"
    # Output to files, not pipes: nothing reads a pipe until the embedded side is done.
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("dag_process.py")), json.dumps(command)],
            env={**os.environ, **connect_env(server.remote, connect_dir)},
            stdout=stdout,
            stderr=stderr,
        )
    try:
        embedded = {"states": [run_dag(dags[dag_id], day=day)["dag"] for dag_id, day in RUNS]}
        embedded["probes"] = gate_probes(spark, PROBES)
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    line = next((x for x in out.read_text().splitlines() if x.startswith("RESULT ")), None)
    assert process.returncode == 0 and line, (
        f"exit {process.returncode}; see {out} and {err}\n{err.read_text()[-5000:]}"
    )
    connect = json.loads(line[len("RESULT ") :])
    connect["states"] = [state for _, _, state in connect["states"]]

    embedded.update(stored(data_dir))
    with data_folder(connect_dir):
        connect.update(stored(connect_dir))
    return {"embedded": embedded, "connect": connect}


def connect_env(remote: str, folder: Path) -> dict[str, str]:
    """The Connect side's environment: the server, its own data folder and lineage file, and
    a copy of this process's Airflow metadata DB (both run DAGs at once; SQLite has one writer)."""
    import sqlite3

    home = folder / "airflow"
    home.mkdir()
    source = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(source)) as db, contextlib.closing(sqlite3.connect(home / "db")) as copy:
        db.backup(copy)  # a consistent copy, whatever the journal mode
    return {
        "WAP_SPARK_REMOTE": remote,
        "WAP_DATA_DIR": str(folder),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'db'}",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(folder / "lineage.jsonl"), "append": True}
        ),
    }


def stored(folder: Path) -> dict[str, Any]:
    """The live rows and published checksum of each table's day, and the ledger's rows
    without what differs by nature (ids, times, paths, snapshot ids)."""
    from wap import tables
    from wap.ledger import Ledger

    partitions = {}
    for table, day in TABLE_DAYS:
        rows = Counter(tuple(sorted(r.items())) for r in read_partition(table, "order_date", day).to_pylist())
        live = tables.live_version(tables.load_table(table), day)
        partitions[(table, day)] = {"rows": rows, "count": sum(rows.values()), "checksum": live and live.checksum}
    ledger = []
    for row in Ledger().rows():
        details = json.loads(json.dumps(json.loads(row["details"] or "{}")).replace(str(folder), "<data>"))
        details = {k: v for k, v in details.items() if not k.startswith("seconds")}
        for finding in details.get("audit", {}).get("findings", []):
            finding["sample"] = sorted(finding["sample"], key=lambda v: json.dumps(v, sort_keys=True))
        fields = ("pipeline", "partition", "status", "rows_in", "rows_out", "checksum", "error", "contract_version")
        ledger.append({**{k: row[k] for k in fields}, "details": details})
    return {"partitions": partitions, "ledger": sorted(ledger, key=lambda r: (r["pipeline"], r["partition"]))}


def test_the_connect_side_really_ran_on_spark_connect(sides):
    connect = sides["connect"]
    assert connect["session"] == "pyspark.sql.connect.session.SparkSession"
    assert not connect["local_jvm"], "something started a local Spark in the Connect client"
    assert sides["embedded"]["states"] == EXPECTED_STATES
    assert connect["states"] == EXPECTED_STATES


@pytest.mark.parametrize("table_day", TABLE_DAYS, ids=lambda x: f"{x[0]}-{x[1]}")
def test_each_table_holds_the_same_rows_and_checksum(sides, table_day):
    embedded, connect = (sides[side]["partitions"][table_day] for side in ("embedded", "connect"))
    assert connect == embedded
    if table_day[1] == BAD_DAY:  # quarantined: nothing published
        assert embedded == {"rows": Counter(), "count": 0, "checksum": None}
    else:
        assert embedded["count"] > 0 and embedded["checksum"]


def test_the_ledgers_record_the_same_runs_counts_checksums_and_gate_results(sides):
    embedded, connect = sides["embedded"]["ledger"], sides["connect"]["ledger"]
    assert [(r["pipeline"], r["partition"], r["status"]) for r in embedded] == [
        ("gold_daily_sales", DAY.isoformat(), "published"),
        ("silver_orders", DAY.isoformat(), "published"),
        ("silver_orders", BAD_DAY.isoformat(), "quarantined"),
    ]
    for mine, theirs in zip(connect, embedded, strict=True):
        assert mine == theirs, (mine["pipeline"], mine["partition"])


def test_the_bad_day_is_quarantined_with_the_same_findings(sides):
    """The failed checks, observed values, unexpected counts and sample rows: GX's recheck of
    the failures ran on a Spark Connect frame of the staged files."""
    for side in ("embedded", "connect"):
        (row,) = [r for r in sides[side]["ledger"] if r["partition"] == BAD_DAY.isoformat()]
        assert row["status"] == "quarantined"
        blocking = {
            f"{f['check']}({f['column']})": f
            for f in row["details"]["audit"]["findings"]
            if f["severity"] == "blocking"
        }
        assert set(blocking) == set(BAD_ORDERS), side
        for name, (_, _, sample) in BAD_ORDERS.items():
            assert (blocking[name]["unexpected_count"], blocking[name]["sample"]) == (1, sample), (side, name)
            assert not blocking[name]["message"], (side, blocking[name]["message"])
            assert name in row["error"]


def test_expectations_pass_and_fail_alike(sides):
    from wap.audit import _compile

    types = dict(x.split(" ") for x in PROBE_SCHEMA.lower().split(", "))
    for expectation in [*PASSING, *(x for x, _ in FAILING)]:
        compiled = _compile(expectation, "e0", types) is not None
        assert compiled == (expectation["type"] in COMPILED), expectation
    embedded, connect = sides["embedded"]["probes"], sides["connect"]["probes"]
    for name in PROBES:
        for probe in (embedded[name], connect[name]):
            assert not probe["left_cached"], f"{name}: the gate left the frame cached"
            for finding in probe["findings"]:
                finding["sample"] = sorted(finding["sample"], key=lambda v: json.dumps(v, sort_keys=True))
        assert connect[name] == embedded[name], name

    assert connect["passing"]["findings"] == []
    failing = connect["failing"]["findings"]
    got = {(f["check"], f["column"]): f for f in failing}
    assert len(got) == len(FAILING) == len(failing)
    for expectation, count in FAILING:
        finding = got[(expectation["type"], expectation["kwargs"].get("column"))]
        assert finding["severity"] == "blocking" and not finding["message"], finding
        assert finding["unexpected_count"] == count, finding
    assert got[("expect_column_mean_to_be_between", "a")]["observed"] == 4.2
    (raised,) = connect["raising"]["findings"]
    assert raised["severity"] == "blocking" and raised["message"].startswith("expectation raised"), raised


def test_both_jvms_jit_compile_generated_code_of_any_size(spark, server):
    # Without it, the reader's generated code runs interpreted past 8,000 bytecodes (wap.spark.JIT_OPTIONS).
    jvm = spark._jvm
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    )
    assert bean.getVMOption("DontCompileHugeMethods").getValue() == "false"
    pids, commands = [server.process.pid], []  # spark-submit, and the JVM it starts (or execs)
    while pids:
        pid = pids.pop()
        commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
        pids += [int(c) for f in Path(f"/proc/{pid}/task").glob("*/children") for c in f.read_text().split()]
    assert any(b"-XX:-DontCompileHugeMethods" in cmd for cmd in commands), commands
