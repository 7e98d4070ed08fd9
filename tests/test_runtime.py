"""Resources are passed in (`wap.runtime.Runtime`, docs/adr/0013): a runtime built here from
settings of its own is what the steps use, with no environment variable set or patched."""

from __future__ import annotations

import dataclasses
import datetime as dt

from wap import planner
from wap.pipeline import find_pipeline
from wap.runtime import Runtime
from wap.settings import load_settings


def test_a_runtime_built_from_settings_uses_its_own_catalog_and_ledger(tmp_path):
    settings = dataclasses.replace(
        load_settings(),
        data_dir=tmp_path,
        landing_dir=tmp_path / "landing",
        catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=(tmp_path / "warehouse").as_uri(),
        ledger_url=f"sqlite:///{tmp_path / 'nested' / 'ledger.db'}",
    )
    started = []
    runtime = Runtime.from_settings(settings, spark=lambda: started.append(1))
    orders = find_pipeline("silver_orders")
    day = dt.date(2024, 1, 1)

    runtime.ledger.start(
        pipeline=orders.name,
        table=orders.table,
        partition=str(day),
        run_id="manual__here",
        try_number=1,
        run_token="run-here-try1",
    )
    runtime.ledger.update(orders.name, "run-here-try1", status="failed", error="stage: made up")
    (state,) = planner.plan(runtime, orders, day, day)

    assert state.state == "failed" and "made up" in state.detail
    assert (tmp_path / "nested" / "ledger.db").is_file(), "the ledger is this runtime's"
    assert runtime.places.landing_dir == tmp_path / "landing"
    runtime.catalog.create_namespace("probe")
    assert (tmp_path / "catalog.db").is_file(), "the catalog is this runtime's"
    assert started == [], "nothing started Spark: a runtime starts it only when a step asks"


def test_the_edge_runtime_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WAP_LEDGER_URL", f"sqlite:///{tmp_path / 'env-ledger.db'}")
    assert Runtime.from_env().settings.ledger_url.endswith("env-ledger.db")


def test_a_database_that_cannot_be_reached_is_named_and_said_to_be_worth_a_retry(tmp_path):
    """The real driver's errors (psycopg2, SQLite): a refused connection names the database it
    was for; any other database error is left as it is."""
    import socket

    import pytest
    import sqlalchemy as sa

    from wap.errors import DatabaseUnreachableError

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = dataclasses.replace(
        load_settings(),
        catalog_uri=f"postgresql+psycopg2://wap@127.0.0.1:{port}/wap_catalog",
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
    )
    with pytest.raises(sa.exc.OperationalError) as refused:
        sa.create_engine(settings.catalog_uri).connect()
    said = settings.unreachable_database(refused.value)
    assert said is not None and "Iceberg catalog" in said and "ledger" not in said.split(":")[0], said
    assert "retry" in said and "wap tables" in said and "refused" in said
    assert DatabaseUnreachableError(said).retryable

    engine = sa.create_engine(settings.ledger_url)
    with pytest.raises(sa.exc.OperationalError) as other, engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert settings.unreachable_database(other.value) is None, "not a lost connection"
    assert settings.unreachable_database(ValueError("x")) is None
