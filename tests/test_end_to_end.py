"""Silver and gold through Airflow (dag.test) for three consecutive days, checked against an
independent computation; then re-runs in every order leave every partition unchanged (I2)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from conftest import START, read_partition, run_dag, session_runtime
from expected import daily_sales, orders_for_day

DAYS = [START + dt.timedelta(days=n) for n in range(3)]


@pytest.fixture(scope="module")
def published(dags, landed, spark):
    """Run silver then gold for each of the three days; return their run states."""
    states = {}
    for day in DAYS:
        for dag_id in ("silver_orders", "gold_daily_sales"):
            states[(dag_id, day)] = run_dag(dags[dag_id], day=day)
    return states


def fingerprint(table: str, day: dt.date):
    """The live rows of a partition (sorted) and the checksum its publish recorded."""
    from wap import tables

    rows = sorted(read_partition(table, "order_date", day).to_pylist(), key=lambda r: sorted(r.items()))
    version = tables.live_version(tables.load_table(table), day)
    return rows, version.checksum if version else None


def test_every_run_succeeded(published):
    for key, states in published.items():
        assert states["dag"] == "success", (key, states)
        assert states["publish"] == "success", (key, states)


@pytest.mark.parametrize("day", DAYS, ids=str)
def test_silver_holds_exactly_the_expected_orders(published, landed, day):
    expected = orders_for_day(landed, day)
    rows = read_partition("silver.orders", "order_date", day).to_pylist()
    assert len(rows) == len(expected)
    assert {r["order_id"] for r in rows} == set(expected)
    assert sum(r["amount"] for r in rows) == sum(o["amount"] for o in expected.values())
    for row in rows:
        want = expected[row["order_id"]]
        assert (row["status"], row["amount"], row["channel"], row["event_count"]) == (
            want["status"],
            want["amount"],
            want["channel"],
            want["events"],
        )
        assert row["order_date"] == day


@pytest.mark.parametrize("day", DAYS, ids=str)
def test_gold_holds_the_expected_daily_sales(published, landed, day):
    expected = daily_sales(orders_for_day(landed, day))
    rows = read_partition("gold.daily_sales", "order_date", day).to_pylist()
    got = {(r["channel"], r["currency"]): r for r in rows}
    assert set(got) == set(expected)
    for key, want in expected.items():
        for column in ("orders", "paid_orders", "cancelled_orders", "revenue", "customers"):
            assert got[key][column] == want[column], (key, column)


def test_generated_defects_were_really_there(published, landed):
    """The input had duplicates, late records and nulls, so the checks above mean something."""
    import json

    lines = [json.loads(x) for p in landed.glob("orders/dt=*/*.jsonl") for x in p.read_text().splitlines()]
    assert max(Counter(e["event_id"] for e in lines).values()) > 1, "no duplicate events"
    late = [
        e
        for p in landed.glob("orders/dt=*/*.jsonl")
        for e in map(json.loads, p.read_text().splitlines())
        if e["event_ts"][:10] != p.parent.name[3:]
    ]
    assert late, "no late-arriving events"
    assert any(e["channel"] is None for e in lines), "no null channels"


def test_ledger_has_a_published_row_per_run(published):
    from wap.ledger import Ledger

    rows = Ledger().rows()
    for dag_id, day in published:
        mine = [r for r in rows if r["pipeline"] == dag_id and r["partition"] == day.isoformat()]
        assert [r["status"] for r in mine][:1] == ["published"]
        assert mine[0]["snapshot_id"] is not None and mine[0]["rows_out"] > 0


def test_rerunning_a_day_and_its_neighbours_changes_nothing(published, dags):
    from wap.ledger import Ledger

    before = {(t, d): fingerprint(t, d) for t in ("silver.orders", "gold.daily_sales") for d in DAYS}
    # The same day again, then its neighbours after it, then gold over them again.
    for day in (DAYS[1], DAYS[0], DAYS[2], DAYS[1]):
        assert run_dag(dags["silver_orders"], day=day)["dag"] == "success"
    for day in DAYS:
        assert run_dag(dags["gold_daily_sales"], day=day)["dag"] == "success"
    after = {key: fingerprint(*key) for key in before}
    assert after == before
    # Unchanged content is not committed again: the re-runs are recorded as skipped.
    reruns = [r for r in Ledger().rows() if r["status"] == "skipped"]
    assert len(reruns) == 4 + len(DAYS)


def test_no_duplicate_keys_anywhere(published):
    from wap import tables

    silver = tables.load_table("silver.orders").scan().to_arrow().to_pylist()
    assert len(silver) == len({r["order_id"] for r in silver})
    gold = tables.load_table("gold.daily_sales").scan().to_arrow().to_pylist()
    assert len(gold) == len({(r["order_date"], r["channel"], r["currency"]) for r in gold})


def test_a_new_attempt_of_the_same_inputs_stages_the_same_checksum(published, spark):
    """Determinism of the transform itself: two attempts stage byte-for-byte equal content."""
    from silver_orders import ORDERS

    from wap import steps

    first = steps.audit(
        session_runtime(), ORDERS, steps.stage(session_runtime(), ORDERS, DAYS[0], "determinism-check", 1)
    )
    second = steps.audit(
        session_runtime(), ORDERS, steps.stage(session_runtime(), ORDERS, DAYS[0], "determinism-check", 2)
    )
    assert first.staged_dir != second.staged_dir
    assert (first.rows_out, first.checksum) == (second.rows_out, second.checksum)
    assert first.checksum == fingerprint("silver.orders", DAYS[0])[1]


def test_publish_emits_an_asset_event_keyed_by_the_partition(published):
    """What the gold DAG's partitioned-asset schedule consumes: silver.orders events per day."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        keys = {
            event.partition_key
            for event in session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "silver.orders")
        }
    assert {d.isoformat() for d in DAYS} <= keys


def test_lineage_names_live_tables_and_sources_never_staging(published):
    """I7 (the part this pipeline owns): events name the landed source and the live tables."""
    import json
    import os

    transport = json.loads(os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    events = [json.loads(line) for line in Path(transport["log_file_path"]).read_text().splitlines()]
    names = lambda e, side: {(d["namespace"], d["name"]) for d in e.get(side, [])}  # noqa: E731
    everything = {n for e in events for side in ("inputs", "outputs") for n in names(e, side)}
    assert everything, "no datasets in any event"
    assert not [n for n in everything if "/quarantine/" in n[1] or "/run-" in n[1]], everything

    from wap import tables

    silver = tables.load_table("silver.orders").location().removeprefix("file://")
    gold = tables.load_table("gold.daily_sales").location().removeprefix("file://")
    by_job = {}
    for event in events:
        if event["eventType"] == "COMPLETE":
            by_job.setdefault(event["job"]["name"], []).append(event)
    silver_publish = by_job["silver_orders.publish"][-1]
    assert names(silver_publish, "outputs") == {("file", silver)}
    assert {n for _, n in names(silver_publish, "inputs")} == {str(os.environ["WAP_DATA_DIR"]) + "/landing/orders"}
    gold_publish = by_job["gold_daily_sales.publish"][-1]
    assert names(gold_publish, "inputs") == {("file", silver)}
    assert names(gold_publish, "outputs") == {("file", gold)}
    # Each task reports only its own datasets (tasks share a process under dag.test).
    assert all(not e.get("inputs") and not e.get("outputs") for e in by_job["gold_daily_sales.resolve_partition"])
