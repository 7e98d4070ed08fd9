"""The run ledger on SQLite (default) and on a real PostgreSQL server, by URL alone."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from pg import PostgresServer

from wap.ledger import Ledger


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path) -> Ledger:
    if request.param == "sqlite":
        return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    server = request.getfixturevalue("postgres")
    database = f"ledger_{tmp_path.name[-12:].replace('-', '_').lower()}"
    with sa.create_engine(server.url(), isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    return Ledger(server.url(database))


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
    with pytest.raises(sa.exc.IntegrityError):
        ledger.update("p", token, status="done-ish")


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
