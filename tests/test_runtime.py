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
