"""`wap preview` (wap.preview): a partition's transform and gate on its landed data, nothing written.

Its figures are a run's: the rows and checksum it shows equal what the run of that day then
publishes, and a day the gate would block shows the failing check and the rejects by
reason. Nothing it does is seen afterwards: no table, no ledger row, no file in the warehouse.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import START, run_dag

from wap.settings import REPO_ROOT

DAY, BAD_DAY = START + dt.timedelta(days=1), START + dt.timedelta(days=2)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def runtime(data_dir, spark):
    from wap.runtime import Runtime
    from wap.settings import load_settings

    return Runtime.from_settings(load_settings(), spark=lambda: spark)


@pytest.fixture(scope="module")
def silver(data_dir):
    from wap.pipeline import find_pipeline

    return find_pipeline("silver_orders")


def test_a_preview_writes_nothing_and_shows_what_the_run_then_publishes(runtime, silver, landed, dags):
    from wap import tables
    from wap.preview import preview

    warehouse = Path(runtime.settings.warehouse.removeprefix("file://"))
    shown = preview(runtime, silver, DAY, rows=5)
    assert shown.passed and shown.rows and shown.checksum
    assert len(shown.sample) == 5 and set(shown.sample[0]) == set(silver.contract.columns)
    assert {c["success"] for c in shown.checks} == {True} and len(shown.checks) > 10
    (read,) = shown.sources
    assert read["view"] == "landed_orders" and read["records"] > read["own_records"] > 0
    # Nothing of it is seen afterwards.
    assert runtime.ledger.rows("silver_orders") == []
    assert tables.list_tables(runtime.catalog) == []
    assert files_under(warehouse) == []
    # The run of that day publishes exactly what the preview showed.
    assert run_dag(dags["silver_orders"], day=DAY)["dag"] == "success"
    live = tables.live_version(tables.load_table("silver.orders", runtime.catalog), DAY)
    assert (live.rows, live.checksum) == (shown.rows, shown.checksum)


def land_bad_day(landed: Path) -> None:
    """A record with a negative amount (a blocking expectation fails) and a line that is not JSON."""
    folder = landed / "orders" / f"dt={BAD_DAY}"
    event = {
        "event_id": "E-NEG",
        "order_id": "O-NEG",
        "customer_id": "C-1",
        "event_ts": f"{BAD_DAY}T12:00:00Z",
        "status": "placed",
        "amount": -12.5,
        "currency": "EUR",
        "channel": "web",
    }
    (folder / "bad.jsonl").write_text(json.dumps(event) + "\n{not json\n")


def test_a_day_the_gate_would_block_shows_why_and_the_command_exits_1(runtime, silver, landed):
    from wap.preview import NOT_KEPT, preview

    land_bad_day(landed)
    before = runtime.ledger.rows("silver_orders")
    shown = preview(runtime, silver, BAD_DAY)
    assert not shown.passed
    failed = {(c["check"], c["column"]) for c in shown.checks if not c["success"]}
    assert ("expect_column_values_to_be_between", "amount") in failed, shown.checks
    (read,) = shown.sources
    assert read["rejected"] == {"unparseable record": 1}, read
    rejects = next(f for f in shown.findings if f["check"] == "source: rejected records")
    assert rejects["observed"]["kept_in"] == NOT_KEPT and rejects["sample"][0]["record"] == "{not json"
    assert runtime.ledger.rows("silver_orders") == before

    done = subprocess.run(
        [sys.executable, "-m", "wap.cli", "preview", "silver_orders", str(BAD_DAY), "--rows", "2"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    out = done.stdout
    assert "gate: would BLOCK the publish" in out, out
    assert "FAILED   expect_column_values_to_be_between(amount)" in out, out
    assert "1  unparseable record" in out and "(2 of " in out, out
    assert runtime.ledger.rows("silver_orders") == before


def test_a_bad_partition_key_is_refused(runtime, silver):
    done = subprocess.run(
        [sys.executable, "-m", "wap.cli", "preview", "silver_orders", "2024-02-30"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 1 and "PARTITION" in done.stderr and "2024-02-30" in done.stderr, done.stderr
