"""The run ledger: one row per attempt, in its own database (not Airflow's).

SQLite file by default, any SQLAlchemy URL (`WAP_LEDGER_URL`, e.g. Postgres) deployed.
The table's commit history is the truth; the ledger is brought back in line with it by
`reconcile` at the start of every attempt, so a crash between publish and ledger update
is repaired by the next attempt.

An attempt is `running` until it records a result. Whether a `running` attempt is still
alive is decided in one place, `dead_reason` (used by `reconcile` and the planner): while a
step of it runs, its process holds the row (`Ledger.hold`: `holder` names the process,
`lease_until` is renewed every quarter of `WAP_LEASE_SECONDS`), so a killed attempt is dead
at once to its own host (the process is gone) and within the lease to any other. Between two
tasks no process holds it, and the attempt keeps its partition for `HANDOFF` (6 h).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from wap.settings import load_settings

# Longer than any task may run (execution_timeout): a row still `running` after this, with no
# lease (a ledger from before leases, or a row started outside `Ledger.hold`), is dead.
STALE_AFTER = dt.timedelta(hours=6)
# Between two tasks of an attempt no process holds its row: the lease a step leaves behind,
# longer than any task may wait for the next one to start.
HANDOFF = STALE_AFTER
# Checked here, not by the database: a CHECK constraint in an existing ledger would refuse
# statuses added later. `discarded`: a quarantined run a human discarded; `superseded`: a run
# that lost its publish to another run of the same partition (the first to publish wins).
STATUSES = ("running", "published", "skipped", "quarantined", "failed", "superseded", "discarded", "rolled_back")
_OLD_STATUS_CHECK = "ck_wap_run_ledger_status"  # that constraint, in ledgers made before

metadata = sa.MetaData()
runs = sa.Table(
    "wap_run_ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(200), nullable=False),
    sa.Column("table_name", sa.String(200), nullable=False),
    sa.Column("partition", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("run_token", sa.String(120), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("rows_in", sa.BigInteger),
    sa.Column("rows_out", sa.BigInteger),
    sa.Column("checksum", sa.String(64)),
    sa.Column("snapshot_id", sa.BigInteger),
    sa.Column("code_version", sa.String(32)),
    sa.Column("staged_path", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
    sa.Column("details", sa.Text),
    sa.Column("contract_version", sa.Integer),
    # The process running a step of the attempt now ("host:pid:start", see `this_holder`);
    # NULL between steps. Until `lease_until` the attempt counts as alive (`dead_reason`).
    sa.Column("holder", sa.String(400)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("pipeline", "run_token", name="uq_wap_run_ledger_attempt"),
)
sa.Index("ix_wap_run_ledger_partition", runs.c.pipeline, runs.c.partition)

log = logging.getLogger(__name__)

# The attempts this process holds now, (ledger URL, pipeline, run token) -> (holder, lease), so
# that `start` inside a hold writes the holder with the new row: a started row always has a lease.
_held: dict[tuple[str, str, str], tuple[str, dt.timedelta]] = {}
_held_lock = threading.Lock()
_HAS_PROC = Path("/proc/self/stat").exists()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@cache
def _host() -> str:
    """This machine as holders name it: the hostname, plus the PID namespace where Linux has
    one (two containers can share a hostname, e.g. with host networking, but not their pids)."""
    name = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return name
    return f"{name}/{namespace.partition('[')[2].rstrip(']')}"


def _process_start(pid: int) -> str | None:
    """When process `pid` started (/proc/<pid>/stat field 22, clock ticks since boot): "Z" for a
    zombie (dead, not yet reaped), None if /proc does not show it (or there is no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold ")" and spaces
    return "Z" if fields[0] in ("Z", "X") else fields[19]


def this_holder() -> str:
    """This process, as a ledger row's `holder`: "host:pid:start" (the start time tells a pid
    reused by a later process from the one that held the row; "-" where there is no /proc)."""
    pid = os.getpid()
    return f"{_host()}:{pid}:{_process_start(pid) or '-'}"


def _gone(holder: str) -> bool:
    """Whether `holder` is a process of this host that no longer runs. A holder elsewhere (or
    unreadable) is not known to be gone: its lease says."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit() or int(parts[1]) <= 0:
        return False
    pid, start = int(parts[1]), parts[2]
    found = _process_start(pid)
    if found is not None:
        return found == "Z" or (start != "-" and found != start)  # "Z": killed; another start: pid reused
    try:  # no /proc, or /proc hides it (hidepid): ask the kernel whether the pid exists at all
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    return False


def _stamp(moment: dt.datetime) -> str:
    return f"{as_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


def dead_reason(
    row: Mapping[str, Any],
    now: dt.datetime | None = None,
    *,
    run_id: str | None = None,
    stale_after: dt.timedelta = STALE_AFTER,
) -> str | None:
    """Why a `running` attempt is dead, or None if it may still be working (or is not running).

    The one rule, for `reconcile` and the planner. A `running` row is dead if
    - a process of this host holds it and that process is gone (or its pid is another
      process's now): at once;
    - its lease expired: no renewal for `WAP_LEASE_SECONDS` while a step runs (the holder,
      on any host, stopped), or no next task within `HANDOFF` after a step;
    - it has no lease (made before leases, or started outside a hold) and started more than
      `stale_after` ago;
    - `run_id` is its run's (a new try of that run is starting, so Airflow gave up on this
      one) and no process holds it.
    Two live attempts of one partition (the first to publish wins) each hold a lease: neither
    is dead to the other.
    """
    if row["status"] != "running":
        return None
    now = now or _now()
    holder, lease = row.get("holder"), row.get("lease_until")
    if holder and _gone(holder):
        return f"process gone: {holder} held the attempt and no longer runs"
    if lease is not None and as_utc(lease) <= now:
        by = f"held by {holder}" if holder else "between tasks: no next task took the attempt up"
        return f"lease expired at {_stamp(lease)} ({by})"
    if lease is None and as_utc(row["started_at"]) < now - stale_after:
        return f"started at {_stamp(row['started_at'])}, more than {stale_after} ago, and holds no lease"
    if run_id is not None and row["run_id"] == run_id and not holder:
        return f"ended without a result: a new try of run {run_id} started and no process holds this one"
    return None


@cache
def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # pool_pre_ping: a pooled connection the server has closed (a restart, a failover, an idle
    # timeout) is replaced at checkout instead of failing the next statement of a long-lived
    # process (the api-server's partitions view, `wap`, dag.test's one process for every task).
    engine = sa.create_engine(url, future=True, pool_pre_ping=True)
    metadata.create_all(engine)
    _upgrade(engine)
    return engine


def _upgrade(engine: sa.Engine) -> None:
    """Bring a ledger made by an older version up to date (a no-op once it is).

    Adds the columns added since (each nullable) and drops the old CHECK on `status`, which
    refuses the statuses added since. If two processes upgrade at once, one of them wins.
    """
    inspector = sa.inspect(engine)
    present = {column["name"] for column in inspector.get_columns(runs.name)}
    missing = [column for column in runs.columns if column.name not in present]
    checked = any(ck["name"] == _OLD_STATUS_CHECK for ck in inspector.get_check_constraints(runs.name))
    if engine.dialect.name == "sqlite" and checked:
        _rebuild_sqlite(engine)  # SQLite cannot drop a constraint; the new table has the new columns too
        return
    quote = engine.dialect.identifier_preparer.quote
    table = quote(runs.name)
    try:
        with engine.begin() as conn:
            for column in missing:
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {quote(column.name)} {kind}"))
            if checked:
                conn.execute(sa.text(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {_OLD_STATUS_CHECK}"))
    except sa.exc.DBAPIError:
        present = {column["name"] for column in sa.inspect(engine).get_columns(runs.name)}
        if not present.issuperset(runs.columns.keys()):
            raise  # not just another process that upgraded it first


def _rebuild_sqlite(engine: sa.Engine) -> None:
    """Copy the rows into a table of the current definition, in one transaction."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # takes the write lock: one process at a time
        try:
            inspector = sa.inspect(conn)
            if any(ck["name"] == _OLD_STATUS_CHECK for ck in inspector.get_check_constraints(runs.name)):
                quote = engine.dialect.identifier_preparer.quote
                kept = ", ".join(quote(column["name"]) for column in inspector.get_columns(runs.name))
                conn.exec_driver_sql(f"ALTER TABLE {runs.name} RENAME TO {runs.name}_old")
                for index in runs.indexes:
                    conn.exec_driver_sql(f"DROP INDEX {index.name}")
                conn.execute(sa.schema.CreateTable(runs))
                for index in runs.indexes:
                    conn.execute(sa.schema.CreateIndex(index))
                conn.exec_driver_sql(f"INSERT INTO {runs.name} ({kept}) SELECT {kept} FROM {runs.name}_old")
                conn.exec_driver_sql(f"DROP TABLE {runs.name}_old")
            conn.exec_driver_sql("COMMIT")
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise


SAMPLE_CHARS = 300  # of one sample value kept in the ledger (a 1 MB string is a sample, not a copy)


def bounded(value: Any) -> Any:
    """A sample value as kept in the ledger: long text cut, saying how long it was."""
    text = value if isinstance(value, str) else None
    if text is None or len(text) <= SAMPLE_CHARS:
        return value
    return f"{text[:SAMPLE_CHARS]}... ({len(text)} characters)"


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown ledger status {status!r}; known: {', '.join(STATUSES)}")


class Ledger:
    """Read and write ledger rows. `Ledger()` uses the configured URL."""

    def __init__(self, url: str | None = None, lease: dt.timedelta | None = None) -> None:
        if url is None or lease is None:
            settings = load_settings()
            url, lease = url or settings.ledger_url, lease or dt.timedelta(seconds=settings.lease_seconds)
        self.engine = _engine(url)
        # How long a hold lasts unless renewed (WAP_LEASE_SECONDS); renewed every quarter of it.
        self.lease = lease

    def start(
        self,
        *,
        pipeline: str,
        table: str,
        partition: str,
        run_id: str,
        try_number: int,
        run_token: str,
        code_version: str | None = None,
        contract_version: int | None = None,
    ) -> None:
        """Record that an attempt started (a re-run of the same attempt resets its row).

        Inside `hold` of this attempt the row is written held by this process, with its lease.
        """
        holder, lease = _held.get((str(self.engine.url), pipeline, run_token), (None, None))
        values = dict(
            table_name=table,
            partition=partition,
            run_id=run_id,
            try_number=try_number,
            code_version=code_version,
            contract_version=contract_version,
            status="running",
            started_at=_now(),
            finished_at=None,
            error=None,
            holder=holder,
            lease_until=lease and _now() + lease,
        )
        with self.engine.begin() as conn:
            updated = conn.execute(
                runs.update().where(runs.c.pipeline == pipeline, runs.c.run_token == run_token).values(**values)
            ).rowcount
            if not updated:
                conn.execute(runs.insert().values(pipeline=pipeline, run_token=run_token, **values))

    def update(self, pipeline: str, run_token: str, **fields: Any) -> None:
        """Set fields of one attempt's row; a final status also stamps `finished_at`.

        `details` (a dict) is merged into the row's details by top-level key, so each
        step adds its own (`audit`, `seconds`, ...) without erasing the others'.
        """
        self.updates(pipeline, {run_token: fields})

    def updates(self, pipeline: str, changes: Mapping[str, Mapping[str, Any]]) -> None:
        """`update` of several attempts (fields by run token) in one transaction: a range
        run's partitions are recorded together, at the cost of one commit."""
        with self.engine.begin() as conn:
            for run_token, given in changes.items():
                fields = dict(given)
                _check_status(fields.get("status"))
                if fields.get("status") not in (None, "running"):
                    fields.setdefault("finished_at", _now())
                attempt = (runs.c.pipeline == pipeline) & (runs.c.run_token == run_token)
                if fields.get("details") is not None:
                    current = conn.execute(sa.select(runs.c.details).where(attempt)).scalar()
                    merged = {**json.loads(current or "{}"), **fields["details"]}
                    fields["details"] = json.dumps(merged, default=str, sort_keys=True)
                conn.execute(runs.update().where(attempt).values(**fields))

    def rows(self, pipeline: str | None = None, partition: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(runs).order_by(runs.c.id)
        if pipeline:
            query = query.where(runs.c.pipeline == pipeline)
        if partition:
            query = query.where(runs.c.partition == partition)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    @contextlib.contextmanager
    def hold(self, pipeline: str, *run_tokens: str) -> Iterator[str]:
        """Hold attempts' rows while this process runs a step of them; yields the holder.

        Sets `holder` (this process) and `lease_until` (now + the lease), and renews the lease
        every quarter of it from a daemon thread until the block ends. Then, if an attempt is
        still `running` (it goes on to its next task), its row is left unheld with a lease of
        `HANDOFF`; if it has a result, with neither. A row that does not exist yet (a stage)
        is held from `start` on. Nested holds of one attempt in one process are one hold. The
        attempts of a range run's partitions are held together: one write, one renewer.
        """
        holder, url = this_holder(), str(self.engine.url)
        with _held_lock:
            ours = [t for t in dict.fromkeys(run_tokens) if (url, pipeline, t) not in _held]
            for token in ours:
                _held[(url, pipeline, token)] = (holder, self.lease)
        if not ours:  # the outer hold renews and releases them
            yield holder
            return
        attempt = (runs.c.pipeline == pipeline) & runs.c.run_token.in_(ours)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(attempt, holder, stop), name=f"wap-lease-{ours[0]}", daemon=True
        )
        finished = False
        try:
            with self.engine.begin() as conn:
                conn.execute(runs.update().where(attempt).values(holder=holder, lease_until=_now() + self.lease))
            renewer.start()
            yield holder
            finished = True
        finally:
            stop.set()
            with _held_lock:
                for token in ours:
                    _held.pop((url, pipeline, token), None)
            if renewer.is_alive():
                renewer.join(timeout=5)  # a renewal still under way cannot take the row back: it needs our holder
            try:
                self._release(attempt, holder)
            except Exception:
                if finished:
                    raise
                log.exception("could not release the hold of %s %s (the step failed anyway)", pipeline, ", ".join(ours))

    def _renew(self, attempt: sa.ColumnElement[bool], holder: str, stop: threading.Event) -> None:
        every = self.lease.total_seconds() / 4
        while not stop.wait(every):
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        runs.update().where(attempt, runs.c.holder == holder).values(lease_until=_now() + self.lease)
                    )
            except Exception:  # the step goes on: the next renewal may work, and the lease outlasts three misses
                log.warning("could not renew the ledger lease of %s; retrying in %.1f s", holder, every, exc_info=True)

    def _release(self, attempt: sa.ColumnElement[bool], holder: str) -> None:
        # Still running: the attempt goes on to its next task. Finished: no lease to keep.
        handed_off = sa.case((runs.c.status == "running", _now() + HANDOFF), else_=sa.null())
        with self.engine.begin() as conn:
            conn.execute(
                runs.update().where(attempt, runs.c.holder == holder).values(holder=None, lease_until=handed_off)
            )

    def reconcile(
        self,
        pipeline: str,
        partition: str,
        run_id: str,
        published_snapshot: Callable[[str], int | None],
        stale_after: dt.timedelta = STALE_AFTER,
    ) -> int:
        """Bring this partition's unfinished rows in line with the table; return how many changed.

        `published_snapshot(run_token)` asks the table whether that attempt was published.
        A row left `running` is `published` if the table says so. Otherwise it is `failed` if
        it is dead (`dead_reason`, with this run's earlier tries dead unless a process holds
        them), with the reason as its error; a live one (another run's, which may still
        publish first) is left alone.
        """
        changed = 0
        now = _now()
        for row in self.rows(pipeline, partition):
            if row["status"] != "running":
                continue
            snapshot = published_snapshot(row["run_token"])
            if snapshot is not None:
                self.update(pipeline, row["run_token"], status="published", snapshot_id=snapshot, error=None)
            elif (reason := dead_reason(row, now, run_id=run_id, stale_after=stale_after)) is None:
                continue
            elif not self._mark_dead(row, reason):
                continue  # its row changed since it was read (renewed, held again, or finished)
            changed += 1
        return changed

    def _mark_dead(self, row: Mapping[str, Any], reason: str) -> bool:
        """Set a dead attempt `failed` with why, unless its row changed since `row` was read."""
        unchanged = (
            (runs.c.id == row["id"])
            & (runs.c.status == "running")
            & runs.c.holder.is_not_distinct_from(row["holder"])
            & runs.c.lease_until.is_not_distinct_from(row["lease_until"])
        )
        values = {"status": "failed", "error": f"attempt died: {reason}"[:4000], "finished_at": _now()}
        with self.engine.begin() as conn:
            return bool(conn.execute(runs.update().where(unchanged).values(**values)).rowcount)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A ledger time as an aware UTC datetime (SQLite hands back naive ones; all are written in UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
