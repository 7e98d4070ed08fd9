"""The run ledger: one row per attempt, in its own database (not Airflow's).

SQLite file by default, any SQLAlchemy URL (`WAP_LEDGER_URL`, e.g. Postgres) deployed.
The table's commit history is the truth; the ledger is brought back in line with it by
`reconcile` at the start of every attempt, so a crash between publish and ledger update
is repaired by the next attempt.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import sqlalchemy as sa

from wap.settings import load_settings

# Longer than any task may run (execution_timeout): a row still `running` after this is dead.
STALE_AFTER = dt.timedelta(hours=6)
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
    sa.UniqueConstraint("pipeline", "run_token", name="uq_wap_run_ledger_attempt"),
)
sa.Index("ix_wap_run_ledger_partition", runs.c.pipeline, runs.c.partition)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@cache
def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        load_settings().data_dir.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, future=True)
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


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown ledger status {status!r}; known: {', '.join(STATUSES)}")


class Ledger:
    """Read and write ledger rows. `Ledger()` uses the configured URL."""

    def __init__(self, url: str | None = None) -> None:
        self.engine = _engine(url or load_settings().ledger_url)

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
        """Record that an attempt started (a re-run of the same attempt resets its row)."""
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
        _check_status(fields.get("status"))
        if fields.get("status") not in (None, "running"):
            fields.setdefault("finished_at", _now())
        attempt = (runs.c.pipeline == pipeline) & (runs.c.run_token == run_token)
        with self.engine.begin() as conn:
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
        A row left `running` is `published` if the table says so. Otherwise it failed if it
        is an earlier try of this same run (its process died), or if it is older than
        `stale_after` (longer than any task may run); a younger row of another run may
        still be working and is left alone.
        """
        changed = 0
        for row in self.rows(pipeline, partition):
            if row["status"] != "running":
                continue
            snapshot = published_snapshot(row["run_token"])
            if snapshot is not None:
                self.update(pipeline, row["run_token"], status="published", snapshot_id=snapshot, error=None)
            elif row["run_id"] == run_id or as_utc(row["started_at"]) < _now() - stale_after:
                self.update(
                    pipeline, row["run_token"], status="failed", error="attempt ended without a result (process died?)"
                )
            else:
                continue
            changed += 1
        return changed


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A ledger time as an aware UTC datetime (SQLite hands back naive ones; all are written in UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
