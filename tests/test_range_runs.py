"""Range runs (`wap.ranges`): one run for consecutive partitions gives each partition exactly
what a run of it alone publishes, an outcome of its own, and one commit for all that pass.

Each comparison runs the same landed files twice: partition by partition (`steps`) in one
catalog, and as one range run (`ranges`) in another, then compares partition by partition.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import START, run_dag, session_runtime, utc_midnight

from wap import ranges, steps, tables
from wap.errors import DataError, GateFailedError, PartitionError
from wap.partition import DAILY, HOURLY, MAX_RANGE, PartitionRange, key_of, span_key
from wap.pipeline import ALL_OR_NOTHING, find_pipeline
from wap.runtime import Runtime
from wap.settings import load_settings

DAYS = [START + dt.timedelta(days=n) for n in range(4)]
SPAN = PartitionRange(DAYS[0], DAYS[-1])


# ------------------------------------------------------------------ the range's key (fast)
def test_a_range_is_two_keys_both_included():
    span = DAILY.parse_range("2024-01-30/2024-02-02")
    assert [key_of(p) for p in span.partitions()] == ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02"]
    assert len(span) == 4 and span.key == "2024-01-30/2024-02-02"
    assert DAILY.parse_span("2024-01-31") == dt.date(2024, 1, 31), "one key is one partition"
    hours = HOURLY.parse_range("2024-03-31T22/2024-04-01T01")
    assert len(hours) == 4 and hours.key == "2024-03-31T22/2024-04-01T01"
    assert [len(b) for b in DAILY.parse_range("2024-01-01/2024-03-01").batches(31)] == [31, 30]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2024-01-31/2024-01-01", "before its start"),
        ("2024-01-01/2024-01-01T05", "its end"),
        ("2024-01-01/", "its end"),
        ("2024-01-01/2024-02-30", "not a real calendar date"),
        ("2024-01-01/2024-01-02/2024-01-03", "range of daily partitions"),
        ("2024-01-01/../../etc", "range of daily partitions"),
        ("2020-01-01/2024-01-01", f"at most {MAX_RANGE}"),
    ],
)
def test_a_bad_range_is_refused_naming_what_is_wrong(text, says):
    with pytest.raises(PartitionError, match=says):
        DAILY.parse_span(text)


# ------------------------------------------------------------------ equivalence
def runtime_in(folder: Path, spark) -> Runtime:
    """A catalog and ledger of their own in `folder`; the session's landing folder and Spark."""
    settings = dataclasses.replace(
        load_settings(),
        catalog_uri=f"sqlite:///{folder / 'catalog.db'}",
        warehouse=(folder / "warehouse").as_uri(),
        ledger_url=f"sqlite:///{folder / 'ledger.db'}",
    )
    folder.mkdir(parents=True, exist_ok=True)
    return Runtime.from_settings(settings, spark=lambda: spark)


def one_by_one(runtime: Runtime, pipeline, days) -> None:
    for day in days:
        staged = steps.stage(runtime, pipeline, day, f"manual__{day}", 1)
        steps.publish(runtime, pipeline, steps.audit(runtime, pipeline, staged))


def as_range(runtime: Runtime, pipeline, span: PartitionRange, run_id: str = "manual__range"):
    staged = ranges.stage(runtime, pipeline, span, run_id, 1)
    return ranges.publish(runtime, pipeline, ranges.audit(runtime, pipeline, staged))


def live(runtime: Runtime, pipeline, days) -> dict[str, tuple[int, str]]:
    table = tables.load_table(pipeline.table, runtime.catalog)
    found = {}
    for day in days:
        version = tables.live_version(table, day)
        found[key_of(day)] = (version.rows, version.checksum) if version else None
    return found


def rows_of(runtime: Runtime, pipeline, day) -> list[dict]:
    from pyiceberg.expressions import EqualTo

    table = tables.load_table(pipeline.table, runtime.catalog)
    rows = table.scan(row_filter=EqualTo(pipeline.partition_column, day.isoformat())).to_arrow().to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, default=str, sort_keys=True))


@pytest.fixture(scope="module")
def crossing(landed: Path) -> Path:
    """An order whose events straddle midnight, and a late event of day 1 in day 2's folder."""
    events = [
        {"event_id": "X-1", "order_id": "O-X", "customer_id": "C-X", "event_ts": f"{DAYS[0]}T23:50:00Z"},
        {"event_id": "X-2", "order_id": "O-X", "customer_id": "C-X", "event_ts": f"{DAYS[1]}T00:10:00Z"},
    ]
    events[0] |= {"status": "placed", "amount": 10.0, "currency": "EUR", "channel": "web"}
    events[1] |= {"status": "shipped", "amount": 10.0, "currency": "EUR", "channel": "web"}
    (landed / "orders" / f"dt={DAYS[1]}" / "crossing.jsonl").write_text("\n".join(map(json.dumps, events)) + "\n")
    return landed


def test_a_range_run_publishes_each_partition_as_its_own_run_does(crossing, spark, tmp_path):
    orders = find_pipeline("silver_orders")
    single, ranged = runtime_in(tmp_path / "single", spark), runtime_in(tmp_path / "range", spark)

    one_by_one(single, orders, DAYS)
    result = as_range(ranged, orders, SPAN)

    assert result["partitions"] == {key_of(d): "published" for d in DAYS}
    assert live(ranged, orders, DAYS) == live(single, orders, DAYS)
    for day in DAYS:
        assert rows_of(ranged, orders, day) == rows_of(single, orders, day), day
    crossed = [r for d in DAYS[:2] for r in rows_of(ranged, orders, d) if r["order_id"] == "O-X"]
    assert [(r["order_date"], r["status"]) for r in crossed] == [(DAYS[0], "placed"), (DAYS[1], "shipped")]

    # One commit for the range, its summary naming each partition's run token.
    table = tables.load_table(orders.table, ranged.catalog)
    snapshots = {tables.live_version(table, d).snapshot_id for d in DAYS}
    assert len(snapshots) == 1
    ledger = {r["partition"]: r for r in ranged.ledger.rows(orders.name)}
    assert set(ledger) == {key_of(d) for d in DAYS}
    assert {r["run_id"] for r in ledger.values()} == {"manual__range"}
    for day in DAYS:
        row = ledger[key_of(day)]
        assert row["status"] == "published" and row["snapshot_id"] in snapshots
        assert tables.find_publish(table, row["run_token"]) == row["snapshot_id"]
        assert (row["rows_out"], row["checksum"]) == live(single, orders, [day])[key_of(day)]
    single_rows = {r["partition"]: r for r in single.ledger.rows(orders.name)}
    assert {k: r["rows_in"] for k, r in ledger.items()} == {k: r["rows_in"] for k, r in single_rows.items()}

    # Run again: every partition unchanged, skipped, nothing committed.
    again = as_range(ranged, orders, SPAN, run_id="manual__again")
    assert set(again["partitions"].values()) == {"skipped"}
    assert tables.load_table(orders.table, ranged.catalog).current_snapshot().snapshot_id in snapshots


# silver.orders' SQL as it was first written: one day, `:partition` bound.
ONE_DAY_SQL = """
WITH events AS (
    SELECT DISTINCT event_id, order_id, customer_id, event_ts, status, amount, currency, channel
    FROM landed_orders
    WHERE event_ts >= CAST(:partition AS TIMESTAMP) AND event_ts < CAST(:partition AS TIMESTAMP) + INTERVAL 1 DAY
)
SELECT order_id, CAST(:partition AS DATE) AS order_date, max(customer_id) AS customer_id,
       max_by(status, struct(event_ts, event_id)) AS status, CAST(max(amount) AS DECIMAL(12, 2)) AS amount,
       max(currency) AS currency, coalesce(max(channel), 'unknown') AS channel, min(event_ts) AS placed_ts,
       max(event_ts) AS updated_ts, count(*) AS event_count
FROM events GROUP BY order_id
"""


def sql_variant(folder: Path, monkeypatch, text: str) -> None:
    """include/sql/ with silver_orders.sql replaced by `text`, as the settings' SQL folder."""
    import shutil

    shutil.copytree(load_settings().sql_dir, folder)
    (folder / "silver_orders.sql").write_text(text)
    monkeypatch.setenv("WAP_SQL_DIR", str(folder))


def test_sql_of_one_partition_runs_once_per_partition_in_a_range_with_the_same_result(
    crossing, spark, tmp_path, monkeypatch
):
    orders = find_pipeline("silver_orders")
    assert orders.sql_spans, "the shipped SQL takes :first and :last"
    single = runtime_in(tmp_path / "single", spark)
    one_by_one(single, orders, DAYS)

    sql_variant(tmp_path / "sql", monkeypatch, ONE_DAY_SQL)
    assert not orders.sql_spans
    ranged = runtime_in(tmp_path / "range", spark)
    result = as_range(ranged, orders, SPAN)

    assert result["partitions"] == {key_of(d): "published" for d in DAYS}
    assert live(ranged, orders, DAYS) == live(single, orders, DAYS)


@pytest.mark.parametrize("run", ["range", "single"])
def test_sql_over_a_span_that_returns_rows_of_other_partitions_is_refused(crossing, spark, tmp_path, monkeypatch, run):
    """Without its time filter, silver's SQL returns the late folder's own day too (after the
    range, or after the single day): a SQL error, not data published in the wrong partition."""
    orders = find_pipeline("silver_orders")
    text = (load_settings().sql_dir / orders.sql).read_text()
    unfiltered = text.replace("WHERE event_ts >= CAST(:first AS TIMESTAMP)", "WHERE :first IS NOT NULL OR").replace(
        "AND event_ts < CAST(:last AS TIMESTAMP) + INTERVAL 1 DAY", "event_ts < CAST(:last AS TIMESTAMP)"
    )
    assert unfiltered != text
    sql_variant(tmp_path / "sql", monkeypatch, unfiltered)
    runtime = runtime_in(tmp_path / "outside", spark)
    with pytest.raises(DataError, match="outside the run's partitions") as raised:
        if run == "range":
            ranges.stage(runtime, orders, SPAN, "manual__range", 1)
        else:
            steps.audit(runtime, orders, steps.stage(runtime, orders, DAYS[1], "manual__one", 1))
    # The range names the day after it (the late folder's own); a single run counts its rows.
    says = str(DAYS[-1] + dt.timedelta(days=1)) if run == "range" else f"{DAYS[1]} to {DAYS[1]} ("
    assert says in str(raised.value)
    assert "no retry can help" in str(raised.value) and "wap run silver_orders" in str(raised.value)
    rows = runtime.ledger.rows(orders.name)
    assert rows and {r["status"] for r in rows} == {"failed"}
    table = tables.load_table(orders.table, runtime.catalog)
    assert table.current_snapshot() is None, "nothing is published"


def bad_order(landed: Path, day: dt.date) -> Path:
    bad = {"event_id": "E-B", "order_id": "O-B", "customer_id": "C", "status": "placed", "amount": -1}
    bad |= {"event_ts": f"{day}T10:00:00Z", "currency": "EUR", "channel": "web"}
    path = landed / "orders" / f"dt={day}" / "bad.jsonl"
    path.write_text(json.dumps(bad) + "\n")
    return path


def test_one_bad_day_is_quarantined_alone_and_the_rest_publish_in_one_commit(crossing, spark, tmp_path):
    orders = find_pipeline("silver_orders")
    runtime = runtime_in(tmp_path / "bad", spark)
    path = bad_order(crossing, DAYS[2])
    try:
        result = as_range(runtime, orders, SPAN)
    finally:
        path.unlink()

    assert result["partitions"] == {key_of(d): "published" for d in DAYS if d != DAYS[2]}
    assert list(result["stopped"]) == [key_of(DAYS[2])] and "wap quarantine show" in result["message"]
    table = tables.load_table(orders.table, runtime.catalog)
    assert tables.live_version(table, DAYS[2]) is None
    assert len({tables.live_version(table, d).snapshot_id for d in DAYS if d != DAYS[2]}) == 1
    (row,) = runtime.ledger.rows(orders.name, key_of(DAYS[2]))
    assert row["status"] == "quarantined" and "expect_column_values_to_be_between(amount)" in row["error"]
    findings = json.loads(row["details"])["audit"]["findings"]
    assert [f["column"] for f in findings if f["severity"] == "blocking"] == ["amount"]
    assert Path(row["staged_path"].removeprefix("file://")).is_dir(), "its files are in quarantine"

    # A person releases it (the CLI's `quarantine release`), as any quarantined run.
    from wap import quarantine

    quarantine.release(runtime, orders.name, key_of(DAYS[2]), reason="the negative amount is a refund")
    released = tables.live_version(tables.load_table(orders.table, runtime.catalog), DAYS[2])
    assert released.run_token == row["run_token"] and released.checksum == row["checksum"]

    # The quarantined day then runs alone, as any partition does.
    one_by_one(runtime, orders, [DAYS[2]])
    assert tables.live_version(tables.load_table(orders.table, runtime.catalog), DAYS[2]) is not None


def _subfolder(folder: Path) -> Callable[[], None]:
    (folder / "nested").mkdir()
    return (folder / "nested").rmdir


def _truncated_gzip(folder: Path) -> Callable[[], None]:
    whole = gzip.compress(b"".join(f.read_bytes() for f in folder.iterdir() if f.is_file()))
    (folder / "more.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # cut off in transfer
    return (folder / "more.jsonl.gz").unlink


@pytest.mark.parametrize(
    "defect, says",
    [(_subfolder, "holds a folder 'nested'"), (_truncated_gzip, "more.jsonl.gz is truncated or corrupt")],
    ids=["a subfolder (refused before reading)", "a truncated gzip file (refused while Spark reads it)"],
)
def test_a_refused_landed_folder_stops_the_days_whose_own_runs_read_it_and_no_other(
    crossing, spark, tmp_path, defect, says
):
    """A defect in day 3's folder refuses it by name: day 3's run and day 2's (whose late
    folder it is) stop, exactly as their own runs do; days 1 and 4 publish what theirs do."""
    from wap.errors import BadSourceError

    orders = find_pipeline("silver_orders")
    undo = defect(crossing / "orders" / f"dt={DAYS[2]}")
    try:
        single = runtime_in(tmp_path / "single", spark)
        for day in DAYS:
            if day in DAYS[1:3]:
                with pytest.raises(BadSourceError, match=says):
                    steps.stage(single, orders, day, f"manual__{day}", 1)
            else:
                one_by_one(single, orders, [day])
        ranged = runtime_in(tmp_path / "range", spark)
        result = as_range(ranged, orders, SPAN)
        with pytest.raises(BadSourceError, match=says):
            as_range(
                runtime_in(tmp_path / "strict", spark), dataclasses.replace(orders, range_policy=ALL_OR_NOTHING), SPAN
            )
    finally:
        undo()

    assert result["partitions"] == {key_of(DAYS[0]): "published", key_of(DAYS[3]): "published"}
    assert set(result["stopped"]) == {key_of(DAYS[1]), key_of(DAYS[2])}
    assert all(says in why for why in result["stopped"].values())
    assert "wap quarantine show" not in result["message"], "nothing is in quarantine"
    assert live(ranged, orders, DAYS) == live(single, orders, DAYS)
    statuses = {r["partition"]: r["status"] for r in ranged.ledger.rows(orders.name)}
    assert statuses == {key_of(d): "failed" if d in DAYS[1:3] else "published" for d in DAYS}


def test_all_or_nothing_publishes_nothing_when_one_day_fails(crossing, spark, tmp_path):
    orders = dataclasses.replace(find_pipeline("silver_orders"), range_policy=ALL_OR_NOTHING)
    runtime = runtime_in(tmp_path / "strict", spark)
    path = bad_order(crossing, DAYS[1])
    try:
        staged = ranges.stage(runtime, orders, SPAN, "manual__strict", 1)
        with pytest.raises(GateFailedError, match="all-or-nothing"):
            ranges.audit(runtime, orders, staged)
    finally:
        path.unlink()
    statuses = {r["partition"]: r["status"] for r in runtime.ledger.rows(orders.name)}
    assert statuses == {key_of(d): "quarantined" if d == DAYS[1] else "failed" for d in DAYS}
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = tables.load_table(orders.table, runtime.catalog)
    except NoSuchTableError:
        return
    assert table.current_snapshot() is None, "nothing of the range is published"


def test_a_day_published_by_another_run_meanwhile_is_superseded_in_the_range(crossing, spark, tmp_path):
    orders = find_pipeline("silver_orders")
    runtime = runtime_in(tmp_path / "race", spark)
    staged = ranges.audit(runtime, orders, ranges.stage(runtime, orders, SPAN, "manual__range", 1))
    extra = {"event_id": "E-R", "order_id": "O-R", "customer_id": "C", "status": "placed", "amount": 5}
    extra |= {"event_ts": f"{DAYS[1]}T10:00:00Z", "currency": "EUR", "channel": "web"}
    path = crossing / "orders" / f"dt={DAYS[1]}" / "race.jsonl"
    path.write_text(json.dumps(extra) + "\n")
    try:
        one_by_one(runtime, orders, [DAYS[1]])  # a single-day run publishes day 2 (other rows) first: it wins
    finally:
        path.unlink()
    winner = tables.live_version(tables.load_table(orders.table, runtime.catalog), DAYS[1])

    result = ranges.publish(runtime, orders, staged)

    assert result["partitions"][key_of(DAYS[1])] == "superseded"
    assert {k for k, s in result["partitions"].items() if s == "published"} == {key_of(d) for d in DAYS} - {
        key_of(DAYS[1])
    }
    table = tables.load_table(orders.table, runtime.catalog)
    assert tables.live_version(table, DAYS[1]) == winner, "the first to publish keeps the day"
    rows = {r["run_id"]: r["status"] for r in runtime.ledger.rows(orders.name, key_of(DAYS[1]))}
    assert rows == {f"manual__{DAYS[1]}": "published", "manual__range": "superseded"}


# ------------------------------------------------------------------ through Airflow (dag.test)
def asset_event_keys(run_id: str) -> list[str]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "silver.orders", AssetEvent.source_run_id == run_id)
        )
        return sorted(e.partition_key for e in events)


def test_a_range_run_in_airflow_gives_an_outcome_and_an_asset_event_per_day(dags, crossing, spark):
    span = PartitionRange(DAYS[0], DAYS[2])
    path = bad_order(crossing, DAYS[1])
    try:
        states = run_dag(dags["silver_orders"], conf={"partition": span.key}, logical_date=utc_midnight(DAYS[0]))
    finally:
        path.unlink()

    # The bad day fails the run (the verdict's red box) after the others published.
    assert (states["publish"], states["verdict"], states["dag"]) == ("success", "failed", "failed"), states
    runtime = session_runtime()
    rows = {r["partition"]: r for r in runtime.ledger.rows("silver_orders") if r["run_id"] == states["run_id"]}
    assert {k: r["status"] for k, r in rows.items()} == {
        key_of(DAYS[0]): "published",
        key_of(DAYS[1]): "quarantined",
        key_of(DAYS[2]): "published",
    }
    assert asset_event_keys(states["run_id"]) == [key_of(DAYS[0]), key_of(DAYS[2])], "one event per published day"

    # Lineage: one set of events for the run, naming the range, the publish's outcome per day.
    import os

    from ol_spec import spec_registry, validate

    transport = json.loads(os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    events = [json.loads(line) for line in Path(transport["log_file_path"]).read_text().splitlines()]
    mine = [e for e in events if e["run"]["facets"].get("wapPartition", {}).get("partition") == span.key]
    assert {e["job"]["name"].rsplit(".", 1)[-1] for e in mine} >= {"stage", "audit", "publish"}
    registry = spec_registry()
    for event in mine:
        validate(event, registry)
    (published,) = [e for e in mine if e["job"]["name"].endswith(".publish") and e["eventType"] == "COMPLETE"]
    outcome = published["run"]["facets"]["wapPartition"]["partitions"]
    assert {k: v["status"] for k, v in outcome.items()} == {key_of(DAYS[0]): "published", key_of(DAYS[2]): "published"}
    assert all(v["rows"] == rows[k]["rows_out"] for k, v in outcome.items())
    # Each check once for the range, naming the day it failed on.
    (audit_done,) = [e for e in mine if e["job"]["name"].endswith(".audit") and e["eventType"] == "COMPLETE"]
    checks = audit_done["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert [(c["assertion"], c.get("column"), c["params"]) for c in checks if not c["success"]] == [
        ("expect_column_values_to_be_between", "amount", {"partitions": 3, "failed": [key_of(DAYS[1])]})
    ]
    assert {json.dumps(c["params"]) for c in checks if c["success"]} == {'{"partitions": 3}'}

    # The planner sees the quarantined day and prints the run that fixes it; running it does.
    from wap import planner

    orders = find_pipeline("silver_orders")
    states_now = planner.plan(runtime, orders, DAYS[0], DAYS[3])
    assert [s.state for s in states_now] == ["ok", "quarantined", "ok", "missing"]
    assert planner.range_commands("silver_orders", states_now, orders.batch_size) == [
        f"""airflow dags trigger silver_orders --conf '{{"partition": "{DAYS[1]}"}}'""",
        f"""airflow dags trigger silver_orders --conf '{{"partition": "{DAYS[3]}"}}'""",
    ], "two stretches, one day each: each a run of its day"
    for stretch in planner.stretches(states_now):
        key = stretch.key if len(stretch) > 1 else key_of(stretch.first)
        again = run_dag(dags["silver_orders"], conf={"partition": key}, logical_date=utc_midnight(stretch.first))
        assert again["dag"] == "success", (key, again)
    assert {s.state for s in planner.plan(runtime, orders, DAYS[0], DAYS[3])} == {"ok"}


def test_a_range_run_downstream_reads_a_range_of_published_partitions(dags, crossing, spark):
    """gold_daily_sales over a range of silver days: the same rows as its runs of each day
    (the range run finds every day already holding exactly its rows: all `skipped`)."""
    from wap import planner
    from wap import ranges as range_steps

    runtime = session_runtime()
    gold = find_pipeline("gold_daily_sales")
    days = DAYS[:3]
    silver = find_pipeline("silver_orders")
    if {s.state for s in planner.plan(runtime, silver, days[0], days[-1])} != {"ok"}:
        # Run without the test above (which publishes these silver days): publish them here.
        as_range(runtime, silver, PartitionRange(days[0], days[-1]), "manual__silver_for_gold")
    for day in days:
        assert (
            run_dag(dags["gold_daily_sales"], conf={"partition": str(day)}, logical_date=utc_midnight(day))["dag"]
            == "success"
        )
    span = PartitionRange(days[0], days[-1])
    staged = range_steps.stage(runtime, gold, span, "manual__gold_range", 1)
    result = range_steps.publish(runtime, gold, range_steps.audit(runtime, gold, staged))
    assert result["partitions"] == {key_of(d): "skipped" for d in days}, result
    rows = [r for r in runtime.ledger.rows(gold.name) if r["run_id"] == "manual__gold_range"]
    assert sorted(r["partition"] for r in rows) == [key_of(d) for d in days]
    assert all(r["rows_in"] > 0 for r in rows), "each day counted the silver rows it read"

    # A silver day that is not published stops the range before any work, naming it.
    from wap.errors import SourceMissingError

    later = PartitionRange(DAYS[3], DAYS[3] + dt.timedelta(days=2))
    with pytest.raises(SourceMissingError, match=str(DAYS[3] + dt.timedelta(days=1))):
        range_steps.stage(runtime, gold, later, "manual__gold_missing", 1)


def test_a_range_s_checks_are_named_once_with_the_partitions_they_failed_on():
    from wap.audit import merged_assertions

    def check(name: str, success: bool, column: str | None = None) -> dict:
        return {"check": name, "column": column, "success": success, "severity": "blocking"}

    unique, between = "expect_column_values_to_be_unique", "expect_column_values_to_be_between"
    merged = merged_assertions(
        {
            "2024-01-01": [check("rejects", True), check(unique, True, "id"), check(between, True, "n")],
            "2024-01-02": [check("rejects", True), check(unique, False, "id"), check(between, False, "n")],
            "2024-01-03": [check("rejects", False)],  # rejects blocked it: its other checks did not run
        }
    )
    assert [(c["check"], c["column"], c["success"], c["params"]) for c in merged] == [
        ("rejects", None, False, {"partitions": 3, "failed": ["2024-01-03"]}),
        (unique, "id", False, {"partitions": 2, "failed": ["2024-01-02"]}),
        (between, "n", False, {"partitions": 2, "failed": ["2024-01-02"]}),
    ]
    # The same check twice in one suite: two entries, each merged with its own.
    twice = merged_assertions({"a": [check(between, True, "n"), check(between, False, "n")]})
    assert [(c["success"], c["params"]) for c in twice] == [
        (True, {"partitions": 1}),
        (False, {"partitions": 1, "failed": ["a"]}),
    ]


def test_published_keys_become_one_event_key_per_stretch():
    from wap.partition import stretches

    keys = ["2024-01-05", "2024-01-01", "2024-01-02", "2024-01-03", "2024-01-07", "2024-01-06"]
    assert [span_key(s) for s in stretches(keys)] == ["2024-01-01/2024-01-03", "2024-01-05/2024-01-07"]
    assert [span_key(s) for s in stretches(["2024-01-01T05"])] == ["2024-01-01T05"]
