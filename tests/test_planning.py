"""The ledger-aware planner, and rollback: which partitions need a run (and the backfill that
runs exactly those), and making an earlier published version live again, recorded."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import START, publish_then_quarantine, read_partition, run_dag, session_runtime

from wap.settings import REPO_ROOT

DAYS = [START + dt.timedelta(days=n) for n in range(6)]


def cli(*args: str, ok: bool = True, env: dict[str, str] | None = None) -> str:
    # A guard against a hang, not a time limit: `wap run` starts Airflow and a JVM, and runs
    # DAGs (minutes on a loaded 2-core machine).
    done = subprocess.run(
        [sys.executable, "-m", "wap.cli", *args],
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        timeout=900,
    )
    assert (done.returncode == 0) == ok, (done.stdout, done.stderr)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def history(dags, landed, spark):
    """Days 1-3 published, day 4 quarantined, days 5-6 never run."""
    publish_then_quarantine(dags["silver_orders"], landed, DAYS[:3], DAYS[3])
    return landed


def test_plan_lists_what_needs_a_run_and_the_backfill_for_exactly_that(history):
    from wap.pipeline import find_pipeline
    from wap.planner import backfill_commands, plan

    states = plan(session_runtime(), find_pipeline("silver_orders"), DAYS[0], DAYS[-1])
    assert [s.state for s in states] == ["ok", "ok", "ok", "quarantined", "missing", "missing"]
    assert backfill_commands("silver_orders", states) == [
        f"airflow backfill create --dag-id silver_orders --from-date {DAYS[3]} --to-date {DAYS[5]} "
        "--reprocess-behavior failed --max-active-runs 3"
    ]
    out = cli("plan", "silver_orders", "--from", str(DAYS[0]), "--to", str(DAYS[-1]))
    assert "quarantined" in out and f"--from-date {DAYS[3]}" in out


def test_partitions_published_by_other_code_are_stale(history, tmp_path, monkeypatch):
    from wap.pipeline import find_pipeline
    from wap.planner import backfill_commands, plan

    sql = tmp_path / "sql"
    shutil.copytree(REPO_ROOT / "include" / "sql", sql)
    silver = sql / "silver_orders.sql"
    silver.write_text(silver.read_text() + "\n-- a changed transform\n")
    monkeypatch.setenv("WAP_SQL_DIR", str(sql))

    states = plan(session_runtime(), find_pipeline("silver_orders"), DAYS[0], DAYS[4])
    assert [s.state for s in states] == ["stale", "stale", "stale", "quarantined", "missing"]
    assert backfill_commands("silver_orders", states, max_active_runs=2) == [
        f"airflow backfill create --dag-id silver_orders --from-date {DAYS[0]} --to-date {DAYS[4]} "
        "--reprocess-behavior completed --max-active-runs 2"
    ]


def test_a_partition_rolls_back_to_an_earlier_version_and_readers_see_it(history, dags):
    from wap import tables
    from wap.ledger import Ledger

    day = DAYS[1]
    before = read_partition("silver.orders", "order_date", day)
    first = tables.live_version(tables.load_table("silver.orders"), day)
    extra = {"event_id": "E-X", "order_id": "O-X", "customer_id": "C-1", "status": "placed", "amount": 5}
    extra |= {"event_ts": f"{day}T11:00:00Z", "currency": "EUR", "channel": "web"}
    (history / "orders" / f"dt={day}" / "extra.jsonl").write_text(json.dumps(extra) + "\n")
    assert run_dag(dags["silver_orders"], day=day)["dag"] == "success"
    assert read_partition("silver.orders", "order_date", day).num_rows == before.num_rows + 1

    listed = cli("versions", "silver_orders", str(day))
    assert str(first.snapshot_id) in listed
    assert "--reason" in cli("rollback", "silver_orders", "--partition", str(day), "--to-snapshot", "1", ok=False)
    out = cli(
        "rollback", "silver_orders", "--partition", str(day), "--to-snapshot", str(first.snapshot_id), "--reason", "x"
    )
    assert "rolled_back" in out

    after = read_partition("silver.orders", "order_date", day)
    assert after.sort_by("order_id").equals(before.sort_by("order_id")), "readers see the earlier version"
    live = tables.live_version(tables.load_table("silver.orders"), day)
    assert live.checksum == first.checksum and live.rows == first.rows
    row = Ledger().rows("silver_orders", str(day))[-1]
    assert row["status"] == "rolled_back" and row["checksum"] == first.checksum
    assert json.loads(row["details"])["rollback"]["to_snapshot"] == first.snapshot_id
    (history / "orders" / f"dt={day}" / "extra.jsonl").unlink()


def test_the_whole_table_rolls_back_to_an_earlier_snapshot(history):
    from wap import rollback, tables
    from wap.ledger import Ledger
    from wap.pipeline import find_pipeline

    table = tables.load_table("silver.orders")
    first_day = tables.live_version(table, DAYS[0])  # day 1's publish: days 2 and 3 came later
    changed = rollback.rollback_table(
        session_runtime(), find_pipeline("silver_orders"), first_day.snapshot_id, "revert the backfill"
    )
    assert {c["partition"] for c in changed} == {str(DAYS[1]), str(DAYS[2])}
    table = tables.load_table("silver.orders")
    assert tables.partition_files(table, "order_date", DAYS[1]) == []
    assert read_partition("silver.orders", "order_date", DAYS[0]).num_rows == first_day.rows
    assert {r["partition"] for r in Ledger().rows("silver_orders") if r["status"] == "rolled_back"} >= {
        str(DAYS[1]),
        str(DAYS[2]),
    }
    with pytest.raises(rollback.RollbackError, match=r"not in silver\.orders's current history"):
        rollback.rollback_table(session_runtime(), find_pipeline("silver_orders"), 12345, "x")


def test_run_runs_a_dag_here_for_a_range_in_range_runs_or_one_run_per_partition(history, tmp_path):
    """`wap.cli run`: the embedded way to run a pipeline on one's own data (dag.test): a new attempt
    per day of the range, each ending live (published again after the rollbacks above, or skipped),
    each day's outcome printed."""
    from wap.ledger import Ledger

    before = {day: len(Ledger().rows("silver_orders", day.isoformat())) for day in DAYS[:2]}
    # By default one range run for the two days (the pipeline's batch_size is larger) ... in a
    # user's shell: no Airflow settings, and a home without ~/airflow (this suite's are not inherited).
    user = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"HOME": str(tmp_path)}
    out = cli("run", "silver_orders", "--from", DAYS[0].isoformat(), "--to", DAYS[1].isoformat(), env=user)
    assert f"[1/1] silver_orders {DAYS[0]}/{DAYS[1]}: success" in out, out[-3000:]
    for day in DAYS[:2]:  # each day's outcome: status and counts
        row = Ledger().rows("silver_orders", day.isoformat())[-1]
        assert f"{day}  {row['status']}  ({row['rows_in']:,} records read, {row['rows_out']:,} rows)" in out, out
    rows = {day: Ledger().rows("silver_orders", day.isoformat()) for day in DAYS[:2]}
    assert len({rows[day][-1]["run_id"] for day in DAYS[:2]}) == 1, "one run for both days"
    # ... or one run per day.
    out = cli("run", "silver_orders", "--from", DAYS[0].isoformat(), "--to", DAYS[1].isoformat(), "--per-partition")
    for day in DAYS[:2]:
        assert f"silver_orders {day}: success" in out, out[-3000:]
        rows = Ledger().rows("silver_orders", day.isoformat())
        assert len(rows) == before[day] + 2 and rows[-1]["status"] in ("published", "skipped")
        assert rows[-2]["status"] in ("published", "skipped")
    assert "'2024-02-30' is not a real calendar date" in cli("run", "silver_orders", "--from", "2024-02-30", ok=False)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # The grain is the DAG's own (daily), not guessed from the text.
        (("--from", "2024-01-05;DROP TABLE x"), "--from must be a daily partition written YYYY-MM-DD"),
        # A midnight timestamp is the day's key (as Airflow writes one): read as that day, here
        # shown by the range check, before anything runs.
        (("--from", "2024-01-05T00:00:00+00:00", "--to", "2024-01-04"), "--to 2024-01-04 is before --from 2024-01-05"),
    ],
)
def test_run_validates_keys_at_the_pipeline_s_grain_before_anything_runs(args, said):
    out = cli("run", "silver_orders", *args, ok=False)
    assert "error: " in out and said in out, out
    assert "Traceback" not in out
    assert "success" not in out and "failed" not in out


def test_run_names_a_dag_it_does_not_know():
    out = cli("run", "no_such_dag", "--from", "2024-01-05", ok=False)
    assert "error: no DAG file" in out and "Traceback" not in out


def test_ledger_details_show_every_row_in_full(history):
    """The table cuts errors to a line; `--details` shows the whole error and the details."""
    from wap.ledger import Ledger

    (row,) = [r for r in Ledger().rows("silver_orders", str(DAYS[3])) if r["status"] == "quarantined"][-1:]
    table = cli("ledger", "--pipeline", "silver_orders", "--partition", str(DAYS[3]))
    assert "--details shows every row in full" in table or len(row["error"]) < 60
    full = cli("ledger", "--pipeline", "silver_orders", "--partition", str(DAYS[3]), "--details")
    assert row["error"].replace("\n", "\n  ") in full
    assert f"run_token: {row['run_token']}" in full and '"audit": {' in full
