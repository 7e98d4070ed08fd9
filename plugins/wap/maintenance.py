"""Table upkeep: expire old snapshots, then delete the files that no snapshot uses.

Every publish adds a snapshot and every snapshot keeps its files: without upkeep a
table's metadata grows with each commit and a replaced partition's old files stay
forever. Two steps per table, for every table in the catalog (`maintain`):

1. `expire_snapshots`: snapshots committed before `now - window` leave the table's
   metadata, except the current one, the `min_snapshots` most recent of its history
   (an idle table can still roll back its last few publishes) and any branch or tag
   head. **The window bounds rollback**: `wap.cli versions` lists, and `wap.cli rollback`
   can restore, only versions whose publish commit is still in the history; a partition
   whose live version was published before the window keeps its data but loses that
   record (`Upkeep.unrecorded`; see the note below). pyiceberg's expiry edits metadata
   only: it deletes no file, which is what step 2 is for.
2. `remove_orphans`: under the table's `data/` (staged runs, `<col>=<day>/<run token>/`)
   and `quarantine/` areas, deletes what no remaining snapshot references, one run-token
   folder at a time (its Parquet, Spark's `_SUCCESS` and `.crc` files, and the folder):
   - a folder holding any file that any remaining snapshot references (not just the
     current one: an older snapshot in the window can be rolled back to) is kept whole;
   - a folder with a file younger than the safety margin is kept: a run staged but not
     yet audited or published looks exactly like an orphan, and only its age tells them
     apart. The margin must exceed the longest time from stage to publish of one run,
     queueing included (`wap.tasks.DEFAULT_ARGS` alone allow about 12 h of audit and
     publish timeouts and retries);
   - a quarantined run awaiting a person's decision (ledger status `quarantined`) is
     kept, however old, in `quarantine/` and in `data/` (where `release` moves it just
     before publishing): deleting it would take the decision for them. `quarantine
     discard` frees it;
   - the rest of `quarantine/` (rejected records of runs that passed or were released,
     leftovers of failed runs) is evidence people look at: kept for `quarantine`
     (default 30 days), longer than staged files.
   `metadata/` is never touched (old metadata, manifest lists and manifests stay).

Run it while pipelines run: the expiry commits only if the table's current snapshot is
still the one it chose against (else it reloads and chooses again), and files a publish
is about to add are young. Do not roll back to a version at the edge of the window while
it runs: that rollback re-adds old files this step may be deleting.

Note: `tables.live_version` (and with it `partitions`, the planner, publish's
unchanged-checksum skip and its check that the partition is still the version the run
staged against) reads a partition's publish from the history. For `unrecorded`
partitions the planner says `missing`, a re-run republishes the same rows (no
duplicates: it is the same swap), and a run staged just before its base version
expired is refused as superseded.

Settings (environment, overridable by arguments): `WAP_ROLLBACK_WINDOW_DAYS` (7),
`WAP_MIN_SNAPSHOTS` (5), `WAP_ORPHAN_MARGIN_HOURS` (24), `WAP_QUARANTINE_RETENTION_DAYS` (30).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from wap import staging, tables
from wap.quarantine import QUARANTINED
from wap.runtime import Runtime

if TYPE_CHECKING:
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

AREAS = ("data", "quarantine")  # staging.partition_dir's areas; never metadata/


@dataclass(frozen=True)
class Retention:
    """How long snapshots and unreferenced files are kept."""

    window: dt.timedelta = dt.timedelta(days=7)
    min_snapshots: int = 5
    margin: dt.timedelta = dt.timedelta(hours=24)
    quarantine: dt.timedelta = dt.timedelta(days=30)

    @classmethod
    def from_env(cls, window_days: float | None = None, margin_hours: float | None = None) -> Retention:
        """The environment's settings (unset: the defaults above); arguments given win."""

        def setting(given: float | None, name: str, default: dt.timedelta, unit: dt.timedelta) -> dt.timedelta:
            value = given if given is not None else os.environ.get(name) or None
            return default if value is None else float(value) * unit

        day, hour = dt.timedelta(days=1), dt.timedelta(hours=1)
        retention = cls(
            window=setting(window_days, "WAP_ROLLBACK_WINDOW_DAYS", cls.window, day),
            min_snapshots=int(os.environ.get("WAP_MIN_SNAPSHOTS") or cls.min_snapshots),
            margin=setting(margin_hours, "WAP_ORPHAN_MARGIN_HOURS", cls.margin, hour),
            quarantine=setting(None, "WAP_QUARANTINE_RETENTION_DAYS", cls.quarantine, day),
        )
        if retention.min_snapshots < 1 or min(retention.window, retention.margin, retention.quarantine) < 0 * day:
            raise ValueError(f"retention out of range (min_snapshots >= 1, times >= 0): {retention}")
        return retention


@dataclass(frozen=True)
class Upkeep:
    """What upkeep did to one table (or, with `dry_run`, would do)."""

    table: str
    dry_run: bool
    expired: list[int] = field(default_factory=list)  # snapshot ids
    snapshots_left: int = 0
    removed: list[str] = field(default_factory=list)  # file URIs
    bytes_freed: int = 0
    runs_removed: list[str] = field(default_factory=list)  # run-token folders
    held: list[str] = field(default_factory=list)  # quarantined runs awaiting a decision, kept
    unrecorded: list[str] = field(default_factory=list)  # live partitions whose publish left the history

    def counts(self) -> dict[str, Any]:
        """The numbers, for logs and XCom (the lists can be long)."""
        return {
            "table": self.table,
            "dry_run": self.dry_run,
            "snapshots_expired": len(self.expired),
            "snapshots_left": self.snapshots_left,
            "files_removed": len(self.removed),
            "bytes_freed": self.bytes_freed,
            "runs_removed": len(self.runs_removed),
            "quarantined_runs_held": len(self.held),
            "unrecorded_partitions": len(self.unrecorded),
        }


def snapshots_to_expire(table: Table, retention: Retention, now: dt.datetime) -> list[int]:
    """Ids of the snapshots older than the window that may go (nothing is committed)."""
    cutoff_ms = (now - retention.window).timestamp() * 1000
    recent = {s.snapshot_id for s in itertools.islice(tables.history(table), retention.min_snapshots)}
    # Branch and tag heads: pyiceberg refuses to expire them (the current one is main's head).
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    return sorted(
        s.snapshot_id
        for s in table.snapshots()
        if s.timestamp_ms < cutoff_ms and s.snapshot_id not in recent | protected
    )


def expire_snapshots(
    runtime: Runtime,
    identifier: str,
    retention: Retention | None = None,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> list[int]:
    """Expire the table's snapshots older than the rollback window; return their ids."""
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.table.refs import MAIN_BRANCH
    from pyiceberg.table.update import AssertRefSnapshotId
    from pyiceberg.table.update.snapshot import ExpireSnapshots

    retention = retention or Retention.from_env()
    now = now or dt.datetime.now(dt.UTC)
    for attempt in range(tables.COMMIT_RETRIES):
        table = tables.load_table(identifier, runtime.catalog)
        expired = snapshots_to_expire(table, retention, now)
        current = table.current_snapshot()
        if dry_run or not expired or current is None:
            return expired
        try:
            with table.transaction() as tx:
                # pyiceberg's expiry carries no requirement: a rollback landing meanwhile could make
                # one of these ids main's head, and expiring it would leave the table without one.
                # (`_apply` is the only way pyiceberg 0.12 offers to add a requirement.)
                # (`snapshot_id` is the field's name; mypy without pydantic's plugin sees only its alias.)
                requirement = AssertRefSnapshotId(snapshot_id=current.snapshot_id, ref=MAIN_BRANCH)  # type: ignore[call-arg]
                tx._apply((), (requirement,))
                ExpireSnapshots(tx).by_ids(expired).commit()
            log.info("%s: expired %s snapshots older than %s", identifier, len(expired), now - retention.window)
            return expired
        except CommitFailedException:
            time.sleep(0.05 * 2**attempt)  # a publish landed meanwhile: choose again on the new state
    raise RuntimeError(f"{identifier}: snapshot expiry kept conflicting after {tables.COMMIT_RETRIES} tries")


def unrecorded_partitions(table: Table, expired: set[int]) -> list[str]:
    """Live partitions whose publish commit is among `expired` (a `table` loaded before the expiry).

    Their data stays, but `tables.live_version` no longer finds which run published them.
    """
    live: dict[str, int] = {}
    for snapshot in tables.history(table):
        day = snapshot.summary.get(tables.PARTITION) if snapshot.summary is not None else None
        if day:
            live.setdefault(day, snapshot.snapshot_id)  # newest first: the first one is live
    return sorted(day for day, snapshot_id in live.items() if snapshot_id in expired)


def referenced_files(table: Table, ignoring: Collection[int] = ()) -> set[str]:
    """Every file that any snapshot of the table reads (but those in `ignoring`), as paths."""
    io = table.io
    manifests = {
        m.manifest_path: m for s in table.snapshots() if s.snapshot_id not in ignoring for m in s.manifests(io)
    }
    # Live entries only: a DELETED entry records a file the snapshot no longer reads.
    return {
        _path(entry.data_file.file_path)
        for manifest in manifests.values()
        for entry in manifest.fetch_manifest_entry(io, discard_deleted=True)
    }


def awaiting_decision(runtime: Runtime, identifier: str) -> set[str]:
    """Run tokens of the table's quarantined runs that no one has released or discarded."""
    rows = runtime.ledger.rows()
    return {row["run_token"] for row in rows if row["table_name"] == identifier and row["status"] == QUARANTINED}


def remove_orphans(
    runtime: Runtime,
    identifier: str,
    retention: Retention | None = None,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    ignoring: Collection[int] = (),
) -> Upkeep:
    """Delete the table's staged and quarantined files no snapshot references (module doc).

    `ignoring`: snapshots to count as gone (a dry run's would-be-expired ones).
    """
    from pyarrow import fs

    retention = retention or Retention.from_env()
    now = now or dt.datetime.now(dt.UTC)
    table = tables.load_table(identifier, runtime.catalog)
    location = table.location().rstrip("/")
    filesystem, root = staging.file_system(location)  # configured like the catalog's (an object store's keys)
    scheme = location.split("://", 1)[0] + "://" if "://" in location else ""
    held_tokens = awaiting_decision(runtime, identifier)
    # Listed before the references are read: a file published meanwhile is then young, or referenced.
    units: dict[str, list[fs.FileInfo]] = {}
    for area in AREAS:
        selector = fs.FileSelector(f"{root}/{area}", allow_not_found=True, recursive=True)
        for info in filesystem.get_file_info(selector):
            if info.type == fs.FileType.File:
                parts = info.path[len(root) + 1 :].split("/")
                # A run's folder `<area>/<col>=<day>/<token>/` is one unit; a file elsewhere is its own.
                units.setdefault("/".join(parts[:3]) + "/" if len(parts) > 3 else "/".join(parts), []).append(info)
    referenced = referenced_files(tables.load_table(identifier, runtime.catalog), ignoring)

    removed: list[str] = []
    runs: list[str] = []
    held: list[str] = []
    size = 0
    for unit, infos in sorted(units.items()):
        area, folder, where = unit.split("/", 1)[0], unit.endswith("/"), f"{root}/{unit.rstrip('/')}"
        keep_for = max(retention.margin, retention.quarantine) if area == "quarantine" else retention.margin
        if any(info.path in referenced for info in infos):
            continue
        if folder and unit.split("/")[2] in held_tokens:
            held.append(scheme + where)
            continue
        if now - max(info.mtime for info in infos) < keep_for:
            continue
        removed += [scheme + info.path for info in infos]
        size += sum(info.size for info in infos)
        if folder:
            runs.append(scheme + where)
        if not dry_run:
            for info in infos:
                filesystem.delete_file(info.path)
            if folder and not _has_files(filesystem, where):
                filesystem.delete_dir(where)  # the emptied run folder, with its empty subfolders
    log.info(
        "%s: %s %s files (%s bytes) in %s runs; kept %s quarantined runs awaiting a decision",
        identifier,
        "would remove" if dry_run else "removed",
        len(removed),
        size,
        len(runs),
        len(held),
    )
    return Upkeep(identifier, dry_run, removed=removed, bytes_freed=size, runs_removed=runs, held=held)


def maintain_table(
    runtime: Runtime,
    identifier: str,
    retention: Retention | None = None,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> Upkeep:
    """Expire the table's old snapshots, then remove its unreferenced staged/quarantined files."""
    retention = retention or Retention.from_env()
    now = now or dt.datetime.now(dt.UTC)
    before = tables.load_table(identifier, runtime.catalog)
    expired = expire_snapshots(runtime, identifier, retention, now, dry_run)
    cleanup = remove_orphans(runtime, identifier, retention, now, dry_run, ignoring=expired if dry_run else ())
    unrecorded = unrecorded_partitions(before, set(expired))
    if unrecorded:
        log.warning(
            "%s: %s live partitions were published before the rollback window: their publish records leave "
            "the history, so the planner will call them missing (first: %s)",
            identifier,
            len(unrecorded),
            unrecorded[0],
        )
    left = {s.snapshot_id for s in tables.load_table(identifier, runtime.catalog).snapshots()} - set(expired)
    return replace(cleanup, expired=expired, snapshots_left=len(left), unrecorded=unrecorded)


def maintain(
    runtime: Runtime,
    identifiers: Iterable[str] | None = None,
    retention: Retention | None = None,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> list[Upkeep]:
    """`maintain_table` for each table named (default: every table in the catalog)."""
    retention = retention or Retention.from_env()
    names = tables.list_tables(runtime.catalog) if identifiers is None else identifiers
    return [maintain_table(runtime, name, retention, now, dry_run) for name in names]


def _has_files(filesystem: Any, directory: str) -> bool:
    from pyarrow import fs

    infos = filesystem.get_file_info(fs.FileSelector(directory, allow_not_found=True, recursive=True))
    return any(info.type == fs.FileType.File for info in infos)


def _path(uri: str) -> str:
    """A file URI as its filesystem's path (what pyarrow lists), so the two compare."""
    _, sep, rest = uri.partition("://")
    return rest if sep else uri.removeprefix("file:")
