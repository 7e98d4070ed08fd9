"""The run ledger on SQLite (default) and on a real PostgreSQL server, by URL alone."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from pg import PostgresServer

from wap.ledger import STATUSES, Ledger


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path) -> str:
    """The URL of a new, empty database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    server = request.getfixturevalue("postgres")
    database = f"ledger_{tmp_path.name[-12:].replace('-', '_').lower()}"
    with sa.create_engine(server.url(), isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    return server.url(database)


@pytest.fixture
def ledger(ledger_url) -> Ledger:
    return Ledger(ledger_url)


def attempt(ledger: Ledger, run_id: str, try_number: int, partition: str = "2024-01-01") -> str:
    token = f"run-{run_id}-try{try_number}"
    ledger.start(pipeline="p", table="s.t", partition=partition, run_id=run_id, try_number=try_number, run_token=token)
    return token


def test_an_attempt_goes_from_running_to_published(ledger):
    token = attempt(ledger, "r1", 1)
    (row,) = ledger.rows("p")
    assert (row["status"], row["finished_at"]) == ("running", None)
    ledger.update("p", token, status="published", snapshot_id=2**62, rows_in=10, rows_out=9, checksum="abc")
    (row,) = ledger.rows("p")
    assert (row["status"], row["snapshot_id"], row["rows_out"]) == ("published", 2**62, 9)
    assert row["finished_at"] is not None


def test_unknown_status_is_refused(ledger):
    token = attempt(ledger, "r1", 1)
    with pytest.raises(ValueError, match="done-ish"):
        ledger.update("p", token, status="done-ish")
    (row,) = ledger.rows("p")
    assert (row["status"], row["finished_at"]) == ("running", None)
    for status in STATUSES:  # the database itself refuses none of them
        ledger.update("p", token, status=status)
        assert ledger.rows("p")[0]["status"] == status


def test_a_ledger_made_before_contract_versions_is_upgraded(ledger_url):
    """The ledger as the first release made it: no contract_version, a CHECK on status."""
    old = sa.MetaData()
    old_runs = sa.Table(
        "wap_run_ledger",
        old,
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
        sa.UniqueConstraint("pipeline", "run_token", name="uq_wap_run_ledger_attempt"),
        sa.CheckConstraint(
            "status IN ('running', 'published', 'skipped', 'quarantined', 'failed')", name="ck_wap_run_ledger_status"
        ),
    )
    sa.Index("ix_wap_run_ledger_partition", old_runs.c.pipeline, old_runs.c.partition)
    engine = sa.create_engine(ledger_url)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            old_runs.insert().values(
                pipeline="p",
                table_name="s.t",
                partition="2024-01-01",
                run_id="r0",
                try_number=1,
                run_token="old",
                status="quarantined",
                started_at=dt.datetime.now(dt.UTC),
            )
        )
    engine.dispose()

    ledger = Ledger(ledger_url)
    ledger.start(
        pipeline="p",
        table="s.t",
        partition="2024-01-01",
        run_id="r1",
        try_number=1,
        run_token="new",
        contract_version=2,
    )
    ledger.update("p", "old", status="discarded")  # refused by the old CHECK
    rows = {r["run_token"]: r for r in ledger.rows("p")}
    assert (rows["old"]["status"], rows["old"]["contract_version"]) == ("discarded", None)
    assert (rows["new"]["status"], rows["new"]["contract_version"]) == ("running", 2)
    inspector = sa.inspect(ledger.engine)
    assert {ix["name"] for ix in inspector.get_indexes("wap_run_ledger")} >= {"ix_wap_run_ledger_partition"}
    assert inspector.get_check_constraints("wap_run_ledger") == []
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:  # the attempt key survived
        conn.execute(
            sa.insert(old_runs).values(**{k: v for k, v in rows["old"].items() if k in old_runs.c and k != "id"})
        )


def test_reconcile_trusts_the_table(ledger):
    published = attempt(ledger, "r1", 1)
    died = attempt(ledger, "r1", 2)
    other = attempt(ledger, "r2", 1)
    committed = {published: 42}
    changed = ledger.reconcile("p", "2024-01-01", "r1", committed.get)
    assert changed == 2
    status = {r["run_token"]: (r["status"], r["snapshot_id"]) for r in ledger.rows("p")}
    assert status == {published: ("published", 42), died: ("failed", None), other: ("running", None)}
    # Much later, the other run's row is stale: it is marked failed too.
    assert ledger.reconcile("p", "2024-01-01", "r3", committed.get, stale_after=dt.timedelta(0)) == 1


def test_concurrent_writers_each_get_their_row(ledger):
    errors = []

    def writer(n: int) -> None:
        try:
            for t in range(1, 6):
                token = attempt(ledger, f"w{n}", t, partition=f"2024-01-{n + 1:02d}")
                ledger.update("p", token, status="published", snapshot_id=n * 10 + t)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = ledger.rows("p")
    assert len(rows) == 20 and {r["status"] for r in rows} == {"published"}
