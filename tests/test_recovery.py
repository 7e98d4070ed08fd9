"""Crashes and retries (I4): the table's commit history is the truth, and the ledger agrees
with it again by the next attempt. Publishing an already-published attempt is a no-op."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from conftest import START, Crash, crash_after_commit, session_runtime

from wap import steps, tables
from wap.ledger import Ledger

DAY = START + dt.timedelta(days=3)


@pytest.fixture(scope="module")
def orders(landed, spark):
    from silver_orders import ORDERS

    return ORDERS


def snapshot_count(identifier: str) -> int:
    return len(tables.load_table(identifier).snapshots())


def ledger_row(token: str) -> dict:
    (row,) = [r for r in Ledger().rows("silver_orders") if r["run_token"] == token]
    return row


def test_retry_after_a_crash_between_commit_and_ledger_is_a_noop(orders, monkeypatch):
    staged = steps.stage(session_runtime(), orders, DAY, "crash-run", 1)
    staged = steps.audit(session_runtime(), orders, staged)
    with monkeypatch.context() as patch:
        crash_after_commit(patch)
        with pytest.raises(Crash):
            steps.publish(session_runtime(), orders, staged)
    committed = tables.find_publish(tables.load_table("silver.orders"), staged.run_token)
    assert committed is not None, "the commit happened before the crash"
    assert ledger_row(staged.run_token)["status"] == "running", "and the ledger missed it"

    snapshots = snapshot_count("silver.orders")
    result = steps.publish(session_runtime(), orders, staged)  # Airflow's retry of the publish task
    assert result == {"status": "published", "snapshot_id": committed, "partition": str(DAY), "rows": staged.rows_out}
    assert snapshot_count("silver.orders") == snapshots, "a retry must not commit again"
    row = ledger_row(staged.run_token)
    assert (row["status"], row["snapshot_id"]) == ("published", committed)


def test_the_next_attempt_reconciles_a_crashed_one_from_the_table(orders, monkeypatch):
    first = steps.stage(session_runtime(), orders, DAY + dt.timedelta(days=1), "reconcile-run", 1)
    first = steps.audit(session_runtime(), orders, first)
    with monkeypatch.context() as patch:
        crash_after_commit(patch)
        with pytest.raises(Crash):
            steps.publish(session_runtime(), orders, first)
    # The whole run is cleared and re-run: a new attempt of the same run.
    second = steps.stage(session_runtime(), orders, DAY + dt.timedelta(days=1), "reconcile-run", 2)
    committed = tables.find_publish(tables.load_table("silver.orders"), first.run_token)
    assert (ledger_row(first.run_token)["status"], ledger_row(first.run_token)["snapshot_id"]) == (
        "published",
        committed,
    )
    second = steps.audit(session_runtime(), orders, second)
    assert steps.publish(session_runtime(), orders, second)["status"] == "skipped"  # same rows: nothing to commit


def test_an_attempt_that_died_before_publishing_is_marked_failed(orders):
    dead = steps.stage(session_runtime(), orders, DAY, "died-run", 1)  # ...and the process dies here
    assert ledger_row(dead.run_token)["status"] == "running"
    steps.stage(session_runtime(), orders, DAY, "died-run", 2)
    row = ledger_row(dead.run_token)
    assert row["status"] == "failed" and "ended without a result" in row["error"]
    assert tables.find_publish(tables.load_table("silver.orders"), dead.run_token) is None


def test_another_runs_recent_attempt_is_left_alone(orders):
    """A running attempt of a different run may still be working: not ours to mark failed."""
    other = steps.stage(session_runtime(), orders, DAY, "other-run", 1)
    steps.stage(session_runtime(), orders, DAY, "this-run", 1)
    assert ledger_row(other.run_token)["status"] == "running"


def test_publishing_the_same_attempt_twice_commits_once(orders):
    staged = steps.stage(session_runtime(), orders, START + dt.timedelta(days=1), "twice-run", 1)
    staged = steps.audit(session_runtime(), orders, staged)
    first = steps.publish(session_runtime(), orders, staged)
    snapshots = snapshot_count("silver.orders")
    assert steps.publish(session_runtime(), orders, staged) == first
    assert snapshot_count("silver.orders") == snapshots


def test_cli_shows_the_ledger_and_the_partitions(orders):
    env = {**os.environ}
    ledger = subprocess.run(
        [sys.executable, "-m", "wap.cli", "ledger", "--pipeline", "silver_orders"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    assert "crash-run" in ledger and "published" in ledger and "failed" in ledger
    partitions = subprocess.run(
        [sys.executable, "-m", "wap.cli", "partitions", "silver.orders"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    live = tables.live_version(tables.load_table("silver.orders"), DAY)
    assert str(DAY) in partitions and str(live.snapshot_id) in partitions and live.checksum in partitions
