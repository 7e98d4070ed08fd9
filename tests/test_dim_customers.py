"""The second pipeline, dim_customers: hourly partitions, an incremental JDBC extract from a
real PostgreSQL server, and a merge into a dimension keyed by customer_id. The invariants of
the first pipeline, proven for this shape:

- the dimension equals the source table after each hour (merge by key, newest wins);
- I2: re-running an hour publishes nothing and changes nothing; hours merged in any order
  (a backfill out of order) give the same dimension;
- I3: an hour with bad rows is quarantined; the live dimension is untouched;
- I1: what a run stages is invisible until its one commit;
- I5: two runs staged on the same version: the first to publish wins, the other fails;
- I4: each attempt has its ledger row, which matches the table's commit, also after a crash;
- I7: lineage names the PostgreSQL table and the live dimension, and validates;
- the backfill tooling speaks hours: `wap.cli plan` and Airflow's own backfill dry run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import Crash, crash_after_commit, run_dag, session_runtime
from ol_spec import spec_registry, validate
from pg import PostgresServer

from sample_data import customers

H0 = dt.datetime(2024, 3, 1, 8, tzinfo=dt.UTC)
HOURS = [H0 + dt.timedelta(hours=n) for n in range(3)]
TABLE = "dim.customers"


def key(hour: dt.datetime) -> str:
    return hour.strftime("%Y-%m-%dT%H")


@pytest.fixture(scope="module")
def shop(data_dir):
    """A real PostgreSQL server holding the shop's customers table, reached through the
    Airflow connection `shop_db` (an environment variable, as a deployment may set it)."""
    server = PostgresServer().start()
    customers.create_table(server.url())
    previous = os.environ.get("AIRFLOW_CONN_SHOP_DB")
    os.environ["AIRFLOW_CONN_SHOP_DB"] = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    yield server
    server.stop()
    if previous is None:
        os.environ.pop("AIRFLOW_CONN_SHOP_DB", None)
    else:
        os.environ["AIRFLOW_CONN_SHOP_DB"] = previous


def dimension() -> dict[str, dict]:
    from wap import tables

    rows = tables.load_table(TABLE).scan().to_arrow().to_pylist()
    assert len(rows) == len({r["customer_id"] for r in rows}), "one row per customer"
    return {r["customer_id"]: r for r in rows}


def expected(source: dict[str, dict]) -> dict[str, dict]:
    """What the dimension must hold for a source table: include/sql/dim_customers.sql, by hand."""
    return {
        cid: {
            "customer_id": cid,
            "name": row["name"].strip(),
            "email": row["email"].strip().lower() if row["email"] else None,
            "country": row["country"].strip().upper(),
            "tier": row["tier"].strip().lower(),
            "updated_at": row["updated_at"],
        }
        for cid, row in source.items()
    }


def live():
    from wap import tables

    return tables.live_version(tables.load_table(TABLE), None)


@pytest.fixture(scope="module")
def hourly(dags, shop, spark):
    """Each hour written to the source, then its run: as the schedule would do it."""
    written, runs, after = {}, {}, {}
    for hour in HOURS:
        written[hour] = customers.write_hour(shop.url(), hour, new=12, changed=4)
        runs[hour] = run_dag(dags["dim_customers"], logical_date=hour + dt.timedelta(minutes=10))
        after[hour] = (dimension(), customers.snapshot(shop.url()))
    return written, runs, after


def test_each_hour_merges_its_changes_and_the_dimension_follows_the_source(hourly):
    from wap.ledger import Ledger

    written, runs, after = hourly
    for hour in HOURS:
        assert runs[hour]["dag"] == "success", runs[hour]
        held, source = after[hour]
        assert held == expected(source), f"after {key(hour)}"
        rows = Ledger().rows("dim_customers", key(hour))
        assert [r["status"] for r in rows] == ["published"]
        # The extract read exactly the hour's changes; the dimension holds every customer.
        assert rows[0]["rows_in"] == len(written[hour])
        assert rows[0]["rows_out"] == len(source)
    assert len(after[HOURS[-1]][0]) == 12 * len(HOURS)
    assert sum(r["customer_id"] < f"c-{HOURS[-1]:%Y%m%d%H}" for r in written[HOURS[-1]]) == 4, "changes to earlier rows"


def test_the_ledger_and_the_table_agree_on_every_publish(hourly):
    from wap import tables
    from wap.ledger import Ledger

    table = tables.load_table(TABLE)
    for hour in HOURS:
        (row,) = Ledger().rows("dim_customers", key(hour))
        version = tables.live_version(table, hour)
        assert version is not None and version.run_token == row["run_token"]
        assert (version.snapshot_id, version.checksum, version.rows) == (
            row["snapshot_id"],
            row["checksum"],
            row["rows_out"],
        )
    assert live().run_token == Ledger().rows("dim_customers", key(HOURS[-1]))[0]["run_token"]


def test_the_cli_shows_the_merged_table_as_one_whole_version(hourly):
    from wap import cli

    shown = cli.show_partitions(TABLE).splitlines()
    (line,) = [line for line in shown if line.startswith("(whole table)")]
    assert line.split()[2:4] == [str(len(dimension())), "1"], shown  # rows, files
    assert live().run_id in line


def test_rerunning_an_earlier_hour_changes_nothing(hourly, dags):
    """I2: the source moved on (later hours changed some of its rows), the re-run merges what
    is left of the hour's rows, which are all older than what the dimension holds."""
    from wap.ledger import Ledger

    before, version = dimension(), live()
    states = run_dag(dags["dim_customers"], conf={"partition": key(HOURS[0])})
    assert states["dag"] == "success", states
    assert Ledger().rows("dim_customers", key(HOURS[0]))[-1]["status"] == "skipped"
    assert dimension() == before
    assert live().snapshot_id == version.snapshot_id


def test_hours_merged_in_any_order_give_the_same_dimension(hourly, dags, data_dir, tmp_path):
    """A backfill runs hours in any order (here: newest first, into a fresh table): the
    merge converges on the same rows as the hourly runs did."""
    in_order = dimension()
    os.environ["WAP_DATA_DIR"] = str(tmp_path / "reverse")
    try:
        for hour in reversed(HOURS):
            assert run_dag(dags["dim_customers"], conf={"partition": key(hour)})["dag"] == "success"
        assert dimension() == in_order
    finally:
        os.environ["WAP_DATA_DIR"] = str(data_dir)


def test_a_range_of_hours_merged_in_one_run_gives_the_same_dimension(hourly, dags, data_dir, tmp_path):
    """A range run of the hours (into a fresh table): one extract of the range, every hour's
    changes merged in one pass, one version; the same rows as the hourly runs, a ledger row
    per hour, each naming that version."""
    from wap import tables
    from wap.ledger import Ledger

    in_order = dimension()
    os.environ["WAP_DATA_DIR"] = str(tmp_path / "range")
    try:
        span = f"{key(HOURS[0])}/{key(HOURS[-1])}"
        states = run_dag(dags["dim_customers"], conf={"partition": span})
        assert states["dag"] == "success", states
        assert dimension() == in_order
        rows = {r["partition"]: r for r in Ledger().rows("dim_customers")}
        assert set(rows) == {key(h) for h in HOURS} and {r["status"] for r in rows.values()} == {"published"}
        (snapshot,) = {r["snapshot_id"] for r in rows.values()}
        table = tables.load_table(TABLE)
        assert table.current_snapshot().snapshot_id == snapshot and live().rows == len(in_order)
        assert [v.snapshot_id for v in tables.versions(table, None)] == [snapshot], "one version for the range"
    finally:
        os.environ["WAP_DATA_DIR"] = str(data_dir)


def test_an_hour_with_bad_rows_is_quarantined_and_the_dimension_is_untouched(hourly, dags, shop):
    """I3: a tier outside its set, written in the next hour, blocks the merge of that hour."""
    from wap.ledger import Ledger

    bad_hour = HOURS[-1] + dt.timedelta(hours=1)
    rows = customers.write_hour(shop.url(), bad_hour, new=3, changed=0)
    with sa.create_engine(shop.url()).begin() as conn:
        conn.execute(
            sa.text("UPDATE public.customers SET tier = 'platinum' WHERE customer_id = :id"),
            {"id": rows[0]["customer_id"]},
        )
    before, version = dimension(), live()
    states = run_dag(dags["dim_customers"], conf={"partition": key(bad_hour)})
    assert states["audit"] == "failed" and states["publish"] == "upstream_failed", states
    assert states["_tries"]["audit"] == 1, "bad data is not retried"
    (row,) = Ledger().rows("dim_customers", key(bad_hour))
    assert row["status"] == "quarantined"
    assert "expect_column_values_to_be_in_set(tier)" in row["error"]
    assert dimension() == before and live().snapshot_id == version.snapshot_id
    with sa.create_engine(shop.url()).begin() as conn:  # leave the source valid for later tests
        conn.execute(
            sa.text("DELETE FROM public.customers WHERE customer_id LIKE :p"), {"p": f"c-{bad_hour:%Y%m%d%H}-%"}
        )


def test_staged_merges_are_invisible_and_the_first_to_publish_wins(hourly, shop):
    """I1 and I5 through the steps themselves: two runs of the next hour staged on the same
    version; nothing staged is live before its commit; the first publish wins, the second
    run fails as superseded and leaves the winner's dimension as it is."""
    from wap import steps
    from wap.ledger import Ledger
    from wap.pipeline import find_pipeline

    pipeline = find_pipeline("dim_customers")
    hour = HOURS[-1] + dt.timedelta(hours=2)
    customers.write_hour(shop.url(), hour, new=5, changed=3)
    before, version = dimension(), live()
    first = steps.audit(session_runtime(), pipeline, steps.stage(session_runtime(), pipeline, hour, "manual__first", 1))
    with sa.create_engine(shop.url()).begin() as conn:  # the second run reads other rows: it must not win
        conn.execute(
            sa.text("UPDATE public.customers SET tier = 'gold' WHERE updated_at >= :start AND updated_at < :end"),
            {"start": hour, "end": hour + dt.timedelta(hours=1)},
        )
    second = steps.audit(
        session_runtime(), pipeline, steps.stage(session_runtime(), pipeline, hour, "manual__second", 1)
    )
    assert first.base_snapshot == second.base_snapshot == version.snapshot_id
    assert first.checksum != second.checksum
    assert dimension() == before, "staged rows are not live"
    result = steps.publish(session_runtime(), pipeline, first)
    assert result["status"] == "published"
    won = dimension()
    assert len(won) == len(before) + 5
    with pytest.raises(steps.SupersededError, match="first run to publish"):
        steps.publish(session_runtime(), pipeline, second)
    assert dimension() == won and live().snapshot_id == result["snapshot_id"]
    statuses = {r["run_id"]: r["status"] for r in Ledger().rows("dim_customers", key(hour))}
    assert statuses == {"manual__first": "published", "manual__second": "superseded"}


def test_a_publish_that_crashed_before_its_ledger_row_is_not_repeated(hourly, shop, monkeypatch):
    """I4: the process dies between the commit and the ledger update; Airflow's retry of the
    publish finds the commit by its attempt token, commits nothing, and sets the ledger."""
    from wap import steps, tables
    from wap.ledger import Ledger
    from wap.pipeline import find_pipeline

    pipeline = find_pipeline("dim_customers")
    hour = HOURS[-1] + dt.timedelta(hours=3)
    customers.write_hour(shop.url(), hour, new=2, changed=2)
    staged = steps.audit(
        session_runtime(), pipeline, steps.stage(session_runtime(), pipeline, hour, "manual__crash", 1)
    )
    with monkeypatch.context() as patch:
        crash_after_commit(patch)
        with pytest.raises(Crash):
            steps.publish(session_runtime(), pipeline, staged)
    committed = tables.find_publish(tables.load_table(TABLE), staged.run_token)
    assert committed is not None and live().snapshot_id == committed
    (row,) = Ledger().rows("dim_customers", key(hour))
    assert row["status"] == "running"
    snapshots = len(tables.load_table(TABLE).snapshots())
    assert steps.publish(session_runtime(), pipeline, staged)["snapshot_id"] == committed
    assert len(tables.load_table(TABLE).snapshots()) == snapshots, "the retry committed nothing"
    (row,) = Ledger().rows("dim_customers", key(hour))
    assert (row["status"], row["snapshot_id"]) == ("published", committed)


def test_a_quarantined_merge_is_not_released_over_later_merges(hourly):
    """Its files are a whole dimension merged onto an older version: releasing them would undo
    the merges published since (here, the next test's winner), so it is refused."""
    from wap import quarantine

    bad_hour = key(HOURS[-1] + dt.timedelta(hours=1))
    before = live().snapshot_id
    with pytest.raises(quarantine.QuarantineError, match="merged table"):
        quarantine.release(
            session_runtime(), "dim_customers", bad_hour, reason="tier platinum is valid now", force=True
        )
    assert live().snapshot_id == before


def test_lineage_names_the_database_table_and_the_live_dimension(hourly, shop):
    """I7: the stage task reads `postgres://host:port` `postgres.public.customers`; publish
    writes the dimension's location; every event of this pipeline validates."""
    transport = json.loads(os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    events = [json.loads(line) for line in Path(transport["log_file_path"]).read_text().splitlines() if line.strip()]
    mine = [e for e in events if e["job"]["name"].startswith("dim_customers")]
    assert mine, "no events of dim_customers"
    registry = spec_registry()
    for event in mine:
        validate(event, registry)
        for ds in event.get("inputs", []) + event.get("outputs", []):
            assert "/data/merged=" not in ds["name"] and "quarantine" not in ds["name"], ds["name"]
    publishes = [e for e in mine if e["job"]["name"].endswith(".publish") and e["eventType"] == "COMPLETE"]
    assert publishes
    inputs = {(d["namespace"], d["name"]) for d in publishes[0]["inputs"]}
    assert (f"postgres://127.0.0.1:{shop.port}", "postgres.public.customers") in inputs
    (output,) = publishes[0]["outputs"]
    assert output["facets"]["symlinks"]["identifiers"][0]["name"] == TABLE
    partition = publishes[0]["run"]["facets"]["wapPartition"]
    assert partition["partitionColumn"] == "updated_at"
    assert partition["windowEnd"] > partition["windowStart"]


def test_the_backfill_tooling_speaks_hours(hourly, shop):
    """`wap.cli plan` lists each hour's state and the backfill for exactly the missing hours;
    Airflow's own dry run of that command creates one run per missing hour."""
    first, last = HOURS[0] - dt.timedelta(hours=2), HOURS[-1]
    done = subprocess.run(
        [sys.executable, "-m", "wap.cli", "plan", "dim_customers", "--from", key(first), "--to", key(last)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert any(line.startswith(key(first)) and "missing" in line for line in lines), done.stdout
    assert all(any(line.startswith(key(h)) and " ok " in f"{line} " for line in lines) for h in HOURS), done.stdout
    # The missing hours as one range run, or Airflow's backfill of one run per hour.
    (trigger,) = [line for line in lines if line.startswith("airflow dags trigger")]
    span = f"{key(first)}/{key(HOURS[0] - dt.timedelta(hours=1))}"
    assert trigger == f"""airflow dags trigger dim_customers --conf '{{"partition": "{span}"}}'""", done.stdout
    (command,) = [line for line in lines if line.startswith("airflow backfill create")]
    assert f"--from-date {first.isoformat()}" in command
    assert f"--to-date {(HOURS[0] - dt.timedelta(seconds=1)).isoformat()}" in command
    dry = subprocess.run(
        [sys.executable, "-m", "airflow", *command.split()[1:], "--dry-run"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    planned = re.findall(r"\| 2024-03-01[ T](\d\d:\d\d):00", dry.stdout.split("Runs to be attempted")[-1])
    assert planned == ["06:10", "07:10"], dry.stdout
