"""Roll a partition, or a whole table, back to an earlier published version.

Every publish stays in the table's history until snapshot expiry (the rollback window),
its files with it. Rolling one partition back is an ordinary partition swap to that
version's files: one atomic commit, readers see the old version or the restored one.
Rolling a whole table back makes an earlier snapshot current again (one metadata commit).
Either way the ledger gets a `rolled_back` row per partition changed, with who and why.

    wap versions silver_orders 2024-01-03
    wap rollback silver_orders --partition 2024-01-03 --to-snapshot 123 --reason "bad fix"
    wap rollback silver_orders --to-snapshot 123 --reason "revert yesterday's backfill"
"""

from __future__ import annotations

import datetime as dt
import getpass
from typing import Any

from wap import staging, tables
from wap.errors import RollbackError
from wap.partition import Partition, from_key, key_of
from wap.pipeline import Pipeline
from wap.runtime import Runtime

# Snapshot summary key of a rollback's commit: the snapshot whose version it restored.
ROLLED_BACK_TO = "wap.rolled-back-to"


def _record(
    runtime: Runtime,
    pipeline: Pipeline,
    partition: Partition,
    version: tables.PublishedVersion | None,
    snapshot_id: int,
    reason: str,
) -> None:
    """A `rolled_back` ledger row: the version now live (None: the partition is gone)."""
    run_id = f"rollback__{dt.datetime.now(dt.UTC).isoformat()}"
    token = staging.run_token(run_id, 1)
    ledger = runtime.ledger
    ledger.start(
        pipeline=pipeline.name,
        table=pipeline.table,
        partition=key_of(partition),
        run_id=run_id,
        try_number=1,
        run_token=token,
        code_version=version.code_version if version else None,
    )
    decision = {
        "to_version_of": version.run_id if version else None,
        "to_snapshot": version.snapshot_id if version else snapshot_id,
        "reason": reason,
        "by": getpass.getuser(),
    }
    ledger.update(
        pipeline.name,
        token,
        status="rolled_back",
        rows_out=version.rows if version else 0,
        checksum=version.checksum if version else None,
        snapshot_id=snapshot_id,
        details={"rollback": decision},
    )


def rollback_partition(
    runtime: Runtime, pipeline: Pipeline, partition: Partition, to_snapshot: int, reason: str
) -> dict[str, Any]:
    """Make the partition's version as of snapshot `to_snapshot` live again."""
    _require(reason)
    if refusal := pipeline.publish.rollback_refusal(pipeline.table):
        raise RollbackError(refusal)
    table = tables.load_table(pipeline.table, runtime.catalog)
    target = tables.live_version(table, partition, as_of=to_snapshot)
    if target is None:
        raise RollbackError(f"{pipeline.table} had no published partition {partition} at snapshot {to_snapshot}")
    current = tables.live_version(table, partition)
    if current is not None and current.checksum == target.checksum:
        return {"status": "unchanged", "partition": key_of(partition), "snapshot_id": current.snapshot_id}
    files = tables.partition_files(table, pipeline.partition_column, partition, as_of=to_snapshot)
    token = staging.run_token(f"rollback-to-{target.snapshot_id}", 1)
    snapshot_id = tables.swap_partition(
        pipeline.table,
        pipeline.partition_column,
        partition,
        files,
        {
            tables.PIPELINE: pipeline.name,
            tables.RUN_ID: target.run_id,
            tables.RUN_TOKEN: token,
            tables.PARTITION: key_of(partition),
            tables.ROWS: str(target.rows),
            tables.CHECKSUM: target.checksum,
            tables.CODE_VERSION: target.code_version,
            ROLLED_BACK_TO: str(target.snapshot_id),
        },
        replaces=current and current.snapshot_id,
        catalog=runtime.catalog,
    )
    _record(runtime, pipeline, partition, target, snapshot_id, reason)
    return {
        "status": "rolled_back",
        "partition": key_of(partition),
        "snapshot_id": snapshot_id,
        "rows": target.rows,
    }


def rollback_table(runtime: Runtime, pipeline: Pipeline, to_snapshot: int, reason: str) -> list[dict[str, Any]]:
    """Make snapshot `to_snapshot` the table's current one; one ledger row per partition it changes."""
    _require(reason)
    table = tables.load_table(pipeline.table, runtime.catalog)
    current = table.current_snapshot()
    if current is None or to_snapshot not in {s.snapshot_id for s in tables.history(table)}:
        raise RollbackError(f"snapshot {to_snapshot} is not in {pipeline.table}'s current history")
    days = {
        from_key(s.summary[tables.PARTITION])
        for s in tables.history(table)
        if s.summary and s.summary.get(tables.PARTITION)
    }
    changed = []
    for day in sorted(days):
        now, then = tables.live_version(table, day), tables.live_version(table, day, as_of=to_snapshot)
        if (now and now.snapshot_id) != (then and then.snapshot_id):
            changed.append((day, then))
    table.manage_snapshots().rollback_to_snapshot(to_snapshot).commit()
    out = []
    for day, then in changed:
        _record(runtime, pipeline, day, then, to_snapshot, reason)
        out.append(
            {"partition": key_of(day), "status": "rolled_back" if then else "removed", "snapshot_id": to_snapshot}
        )
    return out


def _require(reason: str) -> None:
    if not reason or not reason.strip():
        raise RollbackError("say why (--reason): the ledger keeps it with the rollback")
