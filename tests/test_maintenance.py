"""Table upkeep: snapshots past the rollback window expire, files no snapshot uses are deleted
once older than the margin, and nothing a remaining snapshot reads is ever touched.

One table history, built with the real steps, is maintained step by step (the tests run in
order): day 1 published, day 2 published, day 1 published again (its first files
superseded), a run staged and never published (an orphan), a run staged just now (in
flight), and a run quarantined and awaiting a decision. Snapshot time is controlled with
`now=`, file age with modification times.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import START, run_dag, session_runtime

from wap import maintenance, steps, tables
from wap.ledger import Ledger
from wap.maintenance import Retention

TABLE = "silver.orders"
D1, D2, D3 = (START + dt.timedelta(days=n) for n in range(3))
WINDOW = dt.timedelta(days=7)
AGED = dt.timedelta(days=2)  # past the default 24 h margin, within the 30-day quarantine retention


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def utc_ms(ms: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def age(path: Path, by: dt.timedelta) -> None:
    """Make every file under `path` look written `by` ago."""
    then = time.time() - by.total_seconds()
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        os.utime(file, (then, then))


def files_under(path: Path) -> dict[str, tuple[int, float]]:
    """Every file under `path` (metadata included) with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in path.rglob("*") if p.is_file()}


def live_rows():
    return tables.load_table(TABLE).scan().to_arrow().sort_by([("order_id", "ascending")])


def landed_record(landed: Path, day: dt.date, name: str) -> Path:
    record = {"event_id": f"E-{name}", "order_id": f"O-{name}", "customer_id": "C-1", "status": "placed"}
    record |= {"amount": 5, "event_ts": f"{day}T11:00:00Z", "currency": "EUR", "channel": "web"}
    path = landed / "orders" / f"dt={day}" / f"{name}.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return path


@pytest.fixture(scope="module")
def built(landed, spark):
    from silver_orders import ORDERS

    def publish(day: dt.date, run_id: str):
        """Publish a run; return the snapshots its commit added (a replacing swap adds two:
        the delete and the add, committed together) and the run."""
        before = {s.snapshot_id for s in tables.load_table(TABLE).snapshots()}
        staged = steps.audit(session_runtime(), ORDERS, steps.stage(session_runtime(), ORDERS, day, run_id, 1))
        steps.publish(session_runtime(), ORDERS, staged)
        return {s.snapshot_id for s in tables.load_table(TABLE).snapshots()} - before, staged

    tables.ensure_table(TABLE, ORDERS.contract)
    s1, first = publish(D1, "first")
    s2, second = publish(D2, "second")
    extra = landed_record(landed, D1, "extra")
    s3, again = publish(D1, "again")  # new rows: replaces day 1, superseding `first`'s files
    extra.unlink()
    orphan = steps.stage(session_runtime(), ORDERS, D2, "never-published", 1)
    bad = landed / "orders" / f"dt={D3}" / "bad.jsonl"
    bad.write_text("not json\n" * 20)  # too many unusable records: the stage quarantines the run
    with pytest.raises(steps.GateFailedError):
        steps.stage(session_runtime(), ORDERS, D3, "bad-run", 1)
    bad.unlink()
    (held,) = [r for r in Ledger().rows("silver_orders", str(D3)) if r["status"] == "quarantined"]
    inflight = steps.stage(session_runtime(), ORDERS, D2, "in-flight", 1)
    table = tables.load_table(TABLE)
    assert {s.snapshot_id for s in table.snapshots()} == s1 | s2 | s3
    return SimpleNamespace(
        s1=s1,
        s2=s2,
        s3=s3,
        root=local(table.location()),
        first=local(first.staged_dir),
        published=[local(second.staged_dir), local(again.staged_dir)],
        orphan=local(orphan.staged_dir),
        inflight=local(inflight.staged_dir),
        held=local(held["staged_path"]),
        rows=live_rows(),
    )


def test_young_snapshots_and_files_are_kept(built):
    result = maintenance.maintain_table(session_runtime(), TABLE)  # the defaults: a 7-day window, a 24 h margin
    assert (result.expired, result.removed) == ([], [])
    assert result.held == [f"file://{built.held}"], "the quarantined run is reported as held"
    for run in (built.first, built.orphan, built.inflight, built.held):
        assert any(run.rglob("part-*")), run


def window_edge(after: set[int], before: set[int]) -> dt.datetime:
    """A `now` that puts the snapshots `after` past a WINDOW-long window and `before` within it."""
    ts = {s.snapshot_id: s.timestamp_ms for s in tables.load_table(TABLE).snapshots()}
    return utc_ms((max(ts[s] for s in after) + min(ts[s] for s in before)) / 2) + WINDOW


def test_snapshots_past_the_window_expire_and_the_current_and_recent_ones_stay(built):
    now = window_edge(built.s1, built.s2)
    expired = maintenance.expire_snapshots(session_runtime(), TABLE, Retention(window=WINDOW, min_snapshots=1), now=now)
    assert set(expired) == built.s1

    table = tables.load_table(TABLE)
    assert {s.snapshot_id for s in table.snapshots()} == built.s2 | built.s3
    assert table.current_snapshot().snapshot_id in built.s3
    assert live_rows().equals(built.rows), "expiry changes no live data"
    # The window bounds rollback: day 1's first version is no longer in its history.
    # (one version per publish: the add, not the delete committed with it)
    (version,) = tables.versions(table, D1)
    assert (
        version.snapshot_id in built.s3
        and table.snapshot_by_id(version.snapshot_id).summary.operation.value != "delete"
    )

    # Long past the window, the most recent `min_snapshots` of the history stay, the current one always.
    later = now + dt.timedelta(days=365)
    retention = Retention(window=WINDOW, min_snapshots=len(built.s2 | built.s3))
    assert maintenance.expire_snapshots(session_runtime(), TABLE, retention, now=later) == []
    candidates = maintenance.snapshots_to_expire(table, Retention(min_snapshots=1), later)
    assert set(candidates) == (built.s2 | built.s3) - {table.current_snapshot().snapshot_id}


def test_dry_run_lists_what_would_go_and_changes_nothing(built, capsys):
    from wap import cli

    age(built.root / "data", AGED)
    age(built.root / "quarantine", AGED)
    age(built.inflight, dt.timedelta(0))  # written just now: in flight
    before = files_under(built.root)

    dry = maintenance.maintain_table(session_runtime(), TABLE, dry_run=True)
    # Day 1's first files are not the current snapshot's, but the second publish (in the window) reads them.
    assert dry.runs_removed == [f"file://{built.orphan}"]
    assert dry.bytes_freed == sum(before[str(local(f))][0] for f in dry.removed) > 0
    cli.main(["maintain", "--dry-run"])
    out = capsys.readouterr().out
    assert f"would remove file://{built.orphan}" in out and str(built.inflight) not in out
    assert files_under(built.root) == before, "a dry run deletes nothing and commits nothing"


def test_unreferenced_old_files_go_and_every_referenced_file_stays(built):
    def check_referenced_files_and_rows():
        table = tables.load_table(TABLE)
        referenced = table.inspect.all_files().column("file_path").to_pylist()
        assert referenced and all(local(f).exists() for f in referenced), "every file of every snapshot exists"
        for snapshot in table.snapshots():
            table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()  # each one still reads
        assert live_rows().equals(built.rows), "the live table reads the same rows"

    dry = maintenance.maintain_table(session_runtime(), TABLE, dry_run=True)
    done = maintenance.maintain_table(session_runtime(), TABLE)
    assert done.removed == dry.removed and done.bytes_freed == dry.bytes_freed > 0
    assert not built.orphan.exists(), "the staged run never published is gone, folder and all"
    assert any(built.first.glob("*.parquet")), "a snapshot in the window still reads day 1's first files"
    assert any(built.inflight.glob("*.parquet")), "a run younger than the margin stays"
    assert any(built.held.rglob("part-*")), "a quarantined run awaiting a decision stays"
    for run in built.published:
        assert any(run.glob("*.parquet")) and any(run.glob(".*.crc")), "published runs stay whole"
    check_referenced_files_and_rows()

    # Once the second publish is past the window too, day 1's superseded files go.
    before = tables.load_table(TABLE)
    retention = Retention(window=WINDOW, min_snapshots=1)
    assert (
        set(maintenance.expire_snapshots(session_runtime(), TABLE, retention, now=window_edge(built.s2, built.s3)))
        == built.s2
    )
    # Day 2's data stays live, but its publish (before the window) has left the history.
    assert maintenance.unrecorded_partitions(before, built.s2) == [str(D2)]
    assert maintenance.remove_orphans(session_runtime(), TABLE).runs_removed == [f"file://{built.first}"]
    assert not built.first.exists()
    check_referenced_files_and_rows()
    assert maintenance.maintain_table(session_runtime(), TABLE).removed == [], "a second run finds nothing more"


def test_quarantine_leftovers_have_a_longer_retention(built):
    leftover = built.root / "quarantine" / f"order_date={D2}" / "run-leftover-try1"
    (leftover / "rejects").mkdir(parents=True)
    (leftover / "rejects" / "part-0.json").write_text("{}\n")
    age(leftover, AGED)
    assert maintenance.maintain_table(session_runtime(), TABLE).removed == [], "within the quarantine retention"
    age(leftover, dt.timedelta(days=31))
    age(built.held, dt.timedelta(days=31))
    result = maintenance.maintain_table(session_runtime(), TABLE)
    assert result.runs_removed == [f"file://{leftover}"] and not leftover.exists()
    assert any(built.held.rglob("part-*")), "a run awaiting a decision stays, however old"


def test_the_dag_maintains_every_table(built, dags):
    age(built.inflight, AGED)  # the run died: now an orphan
    assert run_dag(dags["table_maintenance"], conf={"dry_run": True})["dag"] == "success"
    assert built.inflight.exists()
    states = run_dag(dags["table_maintenance"])
    assert states["dag"] == "success" and states["maintain"] == "success"
    assert not built.inflight.exists()


def test_a_run_whose_base_version_expired_still_publishes(built):
    """A run staged on a version whose snapshot expired before it published (nothing newer
    was published) is not superseded: what it meant to replace is what is live."""
    table = tables.load_table(TABLE)
    (row,) = [r for r in Ledger().rows("silver_orders", str(D2)) if r["status"] == "published"]
    expired = row["snapshot_id"]
    assert table.snapshot_by_id(expired) is None and tables.live_version(table, D2) is None
    files = tables.partition_files(table, "order_date", D2)
    summary = {tables.PARTITION: str(D2), tables.RUN_ID: "re-run", tables.ROWS: str(row["rows_out"])}
    snapshot = tables.swap_partition(TABLE, "order_date", D2, files, summary, replaces=expired)
    assert tables.live_version(tables.load_table(TABLE), D2).snapshot_id == snapshot

    # A partition whose publish left the history: the planner reads it from the ledger.
    from silver_orders import ORDERS

    from wap import planner

    far = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    maintenance.expire_snapshots(session_runtime(), TABLE, Retention(window=WINDOW, min_snapshots=1), now=far)
    assert tables.live_version(tables.load_table(TABLE), D1) is None, "day 1's publish has left the history"
    (state,) = planner.plan(session_runtime(), ORDERS, D1, D1)
    assert (state.state, "expired" in state.detail) == ("ok", True), state
    assert live_rows().equals(built.rows)
