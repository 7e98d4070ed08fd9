"""Quarantined runs from the command line: inspect, then release or discard, each recorded.

The commands run as a user runs them (`python -m wap.cli quarantine ...` in a subprocess)
against runs that the real silver DAG quarantined.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import START, read_partition, run_dag

from wap.settings import REPO_ROOT


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "wap.cli", "quarantine", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert (done.returncode == 0) == ok, (done.stdout, done.stderr)
    return done


def land_bad_amount(landed: Path, day: dt.date) -> None:
    folder = landed / "orders" / f"dt={day.isoformat()}"
    event = {
        "event_id": "E-BAD",
        "order_id": f"O-BAD-{day:%d}",
        "customer_id": "C-1",
        "event_ts": f"{day.isoformat()}T12:00:00Z",
        "status": "placed",
        "amount": -12.5,
        "currency": "EUR",
        "channel": "web",
    }
    (folder / "bad.jsonl").write_text(json.dumps(event) + "\n")


def last_row(day: dt.date) -> dict:
    from wap.ledger import Ledger

    return Ledger().rows("silver_orders", day.isoformat())[-1]


@pytest.fixture(scope="module")
def quarantined_day(dags, landed, spark):
    """Day 1 published clean, then re-run with a negative amount: quarantined."""
    assert run_dag(dags["silver_orders"], day=START)["dag"] == "success"
    land_bad_amount(landed, START)
    assert run_dag(dags["silver_orders"], day=START)["dag"] == "failed"
    assert last_row(START)["status"] == "quarantined"
    return START


def test_show_says_what_failed_and_where_the_files_are(quarantined_day):
    listed = cli("list").stdout
    assert "silver_orders" in listed and quarantined_day.isoformat() in listed
    assert "expect_column_values_to_be_between(amount)" in listed

    shown = cli("show", "silver_orders", quarantined_day.isoformat()).stdout
    assert "quality gate FAILED" in shown
    assert "expect_column_values_to_be_between" in shown and "amount" in shown
    assert "-12.50" in shown  # the sample value
    data_files = [line.split()[-1] for line in shown.splitlines() if line.strip().startswith("data ")]
    assert data_files and all(Path(f.removeprefix("file://")).exists() for f in data_files)
    assert "/quarantine/order_date=" in data_files[0]


def test_release_needs_a_reason_and_publishes_what_was_quarantined(quarantined_day):
    from wap import tables

    day = quarantined_day.isoformat()
    assert "--reason" in cli("release", "silver_orders", day, ok=False).stderr
    assert "say why" in cli("release", "silver_orders", day, "--reason", "  ", ok=False).stderr
    token = last_row(quarantined_day)["run_token"]

    out = cli("release", "silver_orders", day, "--reason", "refund booked as a negative order").stdout
    assert "released: silver_orders" in out and "published" in out

    row = last_row(quarantined_day)
    assert row["run_token"] == token and row["status"] == "published"
    release = json.loads(row["details"])["release"]
    assert release["reason"] == "refund booked as a negative order" and release["by"]
    live = tables.live_version(tables.load_table("silver.orders"), quarantined_day)
    assert live.run_token == token and live.snapshot_id == row["snapshot_id"]
    amounts = read_partition("silver.orders", "order_date", quarantined_day).column("amount").to_pylist()
    assert min(amounts) < 0, "readers see the released rows"
    assert "no quarantined run" in cli("show", "silver_orders", day, ok=False).stderr


def test_release_refuses_to_go_back_behind_a_later_publish(dags, landed, spark):
    day = START + dt.timedelta(days=1)
    land_bad_amount(landed, day)
    assert run_dag(dags["silver_orders"], day=day)["dag"] == "failed"
    (landed / "orders" / f"dt={day.isoformat()}" / "bad.jsonl").unlink()
    assert run_dag(dags["silver_orders"], day=day)["dag"] == "success"  # a later, clean run

    refused = cli("release", "silver_orders", day.isoformat(), "--reason", "x", ok=False).stderr
    assert "published by a later run" in refused and "--force" in refused


def test_a_run_that_broke_the_contract_cannot_be_released(dags, landed, spark, tmp_path, monkeypatch):
    day = START + dt.timedelta(days=2)
    sql = tmp_path / "sql"
    shutil.copytree(REPO_ROOT / "include" / "sql", sql)
    silver = sql / "silver_orders.sql"
    silver.write_text(silver.read_text().replace("AS event_count", "AS event_count, 'x' AS coupon"))
    monkeypatch.setenv("WAP_SQL_DIR", str(sql))
    assert run_dag(dags["silver_orders"], day=day)["dag"] == "failed"

    refused = cli("release", "silver_orders", day.isoformat(), "--reason", "x", ok=False).stderr
    assert "does not match the table's contract" in refused and "coupon" in refused


def test_a_run_stopped_at_its_sources_has_nothing_to_release_and_can_be_discarded(dags, landed, spark):
    day = START + dt.timedelta(days=3)
    folder = landed / "orders" / f"dt={day.isoformat()}"
    (folder / "broken.jsonl").write_text("not json\n" * 20)
    assert run_dag(dags["silver_orders"], day=day)["dag"] == "failed"
    row = last_row(day)
    assert row["status"] == "quarantined"
    quarantine = Path(row["staged_path"].removeprefix("file://"))
    assert list((quarantine / "rejects").rglob("*.json"))

    refused = cli("release", "silver_orders", day.isoformat(), "--reason", "x", ok=False).stderr
    assert "nothing to release" in refused

    out = cli("discard", "silver_orders", day.isoformat(), "--reason", "upstream re-sent the day").stdout
    assert "discarded" in out
    assert not quarantine.exists()
    row = last_row(day)
    assert row["status"] == "discarded" and row["staged_path"] is None
    assert json.loads(row["details"])["discard"]["reason"] == "upstream re-sent the day"
