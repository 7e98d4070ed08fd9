"""The run ledger on SQLite (default) and on a real PostgreSQL server, by URL alone."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg import PostgresServer

from wap.ledger import HANDOFF, STATUSES, Ledger, as_utc, dead_reason, runs, this_holder


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
    assert {"holder", "lease_until"} <= {c["name"] for c in inspector.get_columns("wap_run_ledger")}
    with ledger.hold("p", "new") as holder:
        assert ledger.rows("p")[-1]["holder"] == holder
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:  # the attempt key survived
        conn.execute(
            sa.insert(old_runs).values(**{k: v for k, v in rows["old"].items() if k in old_runs.c and k != "id"})
        )


def test_a_ledger_made_before_leases_gets_them_and_its_running_rows_are_judged_by_age(ledger_url):
    """The ledger of the release before leases (contract versions, no CHECK): columns are added
    in place, and its `running` rows, which have no lease, are dead only once stale."""
    old = sa.MetaData()
    columns = [c for c in runs.columns if c.name not in ("holder", "lease_until")]
    sa.Table(
        "wap_run_ledger",
        old,
        *[sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable) for c in columns],
        sa.UniqueConstraint("pipeline", "run_token", name="uq_wap_run_ledger_attempt"),
    )
    engine = sa.create_engine(ledger_url)
    old.create_all(engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for token, started in (("stale", now - dt.timedelta(hours=7)), ("young", now - dt.timedelta(hours=1))):
            conn.execute(
                old.tables["wap_run_ledger"]
                .insert()
                .values(
                    pipeline="p",
                    table_name="s.t",
                    partition="2024-01-01",
                    run_id=f"r-{token}",
                    try_number=1,
                    run_token=token,
                    status="running",
                    started_at=started,
                )
            )
    engine.dispose()

    ledger = Ledger(ledger_url)
    rows = {r["run_token"]: r for r in ledger.rows("p")}
    assert (rows["stale"]["holder"], rows["stale"]["lease_until"]) == (None, None)
    assert "more than 6:00:00 ago, and holds no lease" in dead_reason(rows["stale"])
    assert dead_reason(rows["young"]) is None
    assert ledger.reconcile("p", "2024-01-01", "r-new", lambda token: None) == 1
    assert {r["run_token"]: r["status"] for r in ledger.rows("p")} == {"stale": "failed", "young": "running"}


def test_a_hold_names_this_process_renews_its_lease_and_hands_the_attempt_on(ledger_url):
    # A lease of seconds, not a fraction: on CI's loaded machine a 0.4 s lease expired between
    # two statements (the renewing thread got no turn), which is not what this test is about.
    ledger = Ledger(ledger_url, lease=dt.timedelta(seconds=4))
    with ledger.hold("p", "run-r1-try1") as holder:
        assert holder == this_holder() and holder.split(":")[1] == str(os.getpid())
        attempt(ledger, "r1", 1)  # a stage: the row is made inside the hold, held from the start
        (first,) = ledger.rows("p")
        assert first["holder"] == holder and dead_reason(first) is None
        time.sleep(2.5)  # more than two renewal periods (a quarter of the lease each)
        (renewed,) = ledger.rows("p")
        assert renewed["lease_until"] > first["lease_until"] and dead_reason(renewed) is None
    (handed_on,) = ledger.rows("p")  # still running: the attempt's next task comes
    assert handed_on["holder"] is None and dead_reason(handed_on) is None
    left = as_utc(handed_on["lease_until"]) - dt.datetime.now(dt.UTC)
    assert HANDOFF - dt.timedelta(minutes=1) < left <= HANDOFF
    with ledger.hold("p", "run-r1-try1"):
        ledger.update("p", "run-r1-try1", status="published")
    (done,) = ledger.rows("p")
    assert (done["holder"], done["lease_until"]) == (None, None)


def test_a_range_holds_its_partitions_together_and_records_them_in_one_transaction(ledger_url):
    """A range run's attempts: one hold for all of them (held, renewed and handed on alike), a
    nested hold of some of them leaves them to the outer one, and `updates` writes each row's
    own fields (details merged per row) or none of them."""
    ledger = Ledger(ledger_url, lease=dt.timedelta(seconds=4))
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    tokens = [f"run-r1-try1-{day}" for day in days]
    with ledger.hold("p", *tokens) as holder:
        for day, token in zip(days, tokens, strict=True):
            ledger.start(pipeline="p", table="s.t", partition=day, run_id="r1", try_number=1, run_token=token)
        first = {r["run_token"]: r for r in ledger.rows("p")}
        assert {r["holder"] for r in first.values()} == {holder}
        with ledger.hold("p", tokens[0], "other"):  # `other` is held here and released at this block's end
            pass
        assert all(r["holder"] == holder for r in ledger.rows("p")), "the inner hold released none of the outer's"
        time.sleep(2.5)  # more than two renewal periods
        assert all(r["lease_until"] > first[r["run_token"]]["lease_until"] for r in ledger.rows("p"))
        ledger.updates("p", {t: {"details": {"audit": n}} for n, t in enumerate(tokens)})
        ledger.updates("p", {tokens[0]: {"status": "published", "details": {"publish": 1}}, tokens[1]: {"rows_in": 5}})
    rows = {r["run_token"]: r for r in ledger.rows("p")}
    assert [json.loads(rows[t]["details"]) for t in tokens] == [{"audit": 0, "publish": 1}, {"audit": 1}, {"audit": 2}]
    assert (rows[tokens[0]]["status"], rows[tokens[1]]["rows_in"]) == ("published", 5)
    assert rows[tokens[0]]["finished_at"] is not None and rows[tokens[1]]["finished_at"] is None
    # Released: the finished one with no lease, the running ones handed on.
    assert (rows[tokens[0]]["holder"], rows[tokens[0]]["lease_until"]) == (None, None)
    assert all(rows[t]["holder"] is None and dead_reason(rows[t]) is None for t in tokens[1:])
    with pytest.raises(ValueError, match="unknown ledger status"):
        ledger.updates("p", {tokens[1]: {"rows_out": 7}, tokens[2]: {"status": "bogus"}})
    assert ledger.rows("p")[1]["rows_out"] is None, "one transaction: the first change was not kept either"


def test_a_failed_renewal_is_logged_and_the_step_goes_on(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'ledger.db'}?timeout=0.1"  # a locked database fails fast
    ledger = Ledger(url, lease=dt.timedelta(seconds=0.4))
    attempt(ledger, "r1", 1)
    with caplog.at_level(logging.WARNING, logger="wap.ledger"), ledger.hold("p", "run-r1-try1"):
        lock = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another writer holds the database: renewals fail
        time.sleep(0.5)
        lock.execute("COMMIT")
        lock.close()
        time.sleep(0.3)
        (row,) = ledger.rows("p")
        assert dead_reason(row) is None, "renewed again once the database was free"
    assert "could not renew the ledger lease" in caplog.text


def gone_holder(*, zombie: bool = False) -> tuple[str, subprocess.Popen]:
    """The holder name of a real process of this host that has ended (reaped, or a zombie)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "from wap.ledger import this_holder; print(this_holder(), flush=True)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    holder = child.stdout.readline().strip()
    child.stdout.close()
    if zombie:
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
    else:
        child.wait()
    return holder, child


def test_which_running_attempts_are_dead(ledger):
    """Each case a real row; `reconcile` marks exactly the dead ones, with why."""
    now = dt.datetime.now(dt.UTC)
    me = this_holder()
    host, pid, start = me.rsplit(":", 2)
    gone, _ = gone_holder()
    zombie, child = gone_holder(zombie=True)
    cases = {  # token: (fields, dead because, or None: alive)
        "held-here": ({"holder": me, "lease_until": now + dt.timedelta(minutes=1)}, None),
        "pid-gone": ({"holder": gone, "lease_until": now + dt.timedelta(minutes=1)}, "process gone"),
        "zombie": ({"holder": zombie, "lease_until": now + dt.timedelta(minutes=1)}, "process gone"),
        "pid-reused": (
            {"holder": f"{host}:{pid}:{int(start) - 1}", "lease_until": now + dt.timedelta(minutes=1)},
            "process gone",
        ),
        "elsewhere": ({"holder": "elsewhere.invalid/1:4242:77", "lease_until": now + dt.timedelta(seconds=30)}, None),
        "elsewhere-expired": (
            {"holder": "elsewhere.invalid/1:4242:77", "lease_until": now - dt.timedelta(seconds=1)},
            "lease expired at",
        ),
        "handed-on": ({"lease_until": now + HANDOFF}, None),
        "handoff-expired": ({"lease_until": now - dt.timedelta(seconds=1)}, "between tasks"),
        "no-lease-young": ({"started_at": now - dt.timedelta(hours=5)}, None),
        "no-lease-old": ({"started_at": now - dt.timedelta(hours=7)}, "holds no lease"),
    }
    for n, (token, (fields, _)) in enumerate(cases.items()):
        ledger.start(pipeline="p", table="s.t", partition="2024-01-01", run_id=f"r{n}", try_number=1, run_token=token)
        ledger.update("p", token, **fields)
    try:
        rows = {r["run_token"]: r for r in ledger.rows("p")}
        for token, (_, why) in cases.items():
            reason = dead_reason(rows[token], now)
            assert (reason is None) if why is None else (why in (reason or "")), (token, reason)
        assert dead_reason(rows["pid-gone"], now) == f"process gone: {gone} held the attempt and no longer runs"
        # An earlier try of the asking run is dead unless a process holds it.
        assert "ended without a result" in dead_reason(rows["handed-on"], now, run_id="r6")
        assert dead_reason(rows["held-here"], now, run_id="r0") is None
        assert dead_reason(rows["elsewhere"], now, run_id="r4") is None

        dead = [token for token, (_, why) in cases.items() if why]
        assert ledger.reconcile("p", "2024-01-01", "r-new", lambda token: None) == len(dead)
        after = {r["run_token"]: r for r in ledger.rows("p")}
        assert sorted(t for t, r in after.items() if r["status"] == "failed") == sorted(dead)
        for token in dead:
            assert after[token]["error"] == f"attempt died: {dead_reason(rows[token], now)}"
            assert after[token]["finished_at"] is not None
    finally:
        child.wait()


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
