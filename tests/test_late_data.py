"""Late-arriving data: records that land in day F's folder but happened on an earlier day
(within the source's `late_folders`) make that earlier partition stale; F's run starts a run
of it (the lookback), and that run publishes the day with its late records, idempotently.
"""

from __future__ import annotations

import datetime as dt
import json

from conftest import START, read_partition, run_dag

DAY, NEXT = START, START + dt.timedelta(days=1)


def triggered_runs(dag_id: str) -> dict[str, tuple]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id.like("late__%")).all()
        return {r.run_id: (r.conf, str(r.state)) for r in runs}


def test_a_late_record_in_the_next_days_folder_reruns_its_day_once(dags, landed, spark):
    from wap import tables
    from wap.ledger import Ledger

    assert run_dag(dags["silver_orders"], day=DAY)["dag"] == "success"
    first = tables.live_version(tables.load_table("silver.orders"), DAY)
    before = triggered_runs("silver_orders")

    # An order of DAY lands after DAY was published, in NEXT's folder.
    late = {
        "event_id": "E-LATE",
        "order_id": "O-LATE",
        "customer_id": "C-7",
        "event_ts": f"{DAY}T23:59:00Z",
        "status": "placed",
        "amount": 12.5,
        "currency": "EUR",
        "channel": "web",
    }
    (landed / "orders" / f"dt={NEXT}" / "late.jsonl").write_text(json.dumps(late) + "\n")
    states = run_dag(dags["silver_orders"], day=NEXT)
    assert states["dag"] == "success"
    (row,) = [r for r in Ledger().rows("silver_orders", str(NEXT)) if r["run_id"] == states["run_id"]]
    assert json.loads(row["details"])["intake"]["landed_orders"]["late"][str(DAY)] >= 1

    started = {k: v for k, v in triggered_runs("silver_orders").items() if k not in before}
    ((run_id, (conf, state)),) = started.items()
    assert state == "queued", "started, for the scheduler to run"
    assert run_id == f"late__{DAY}__{states['run_id']}" and {k: conf[k] for k in ("partition", "lookback")} == {
        "partition": str(DAY),
        "lookback": False,
    }
    assert conf["openlineage"]["parentJobName"] == "silver_orders.reprocess_late", "lineage links the two runs"
    assert "O-LATE" not in read_partition("silver.orders", "order_date", DAY).column("order_id").to_pylist()

    # The run the lookback started (here run with its conf, as the scheduler would):
    rerun = run_dag(dags["silver_orders"], conf=conf)
    assert rerun["dag"] == "success"
    assert rerun["reprocess_late"] == "skipped", "a lookback run does not look back again"
    ids = read_partition("silver.orders", "order_date", DAY).column("order_id").to_pylist()
    assert "O-LATE" in ids and len(ids) == len(set(ids)) == first.rows + 1
    again = tables.live_version(tables.load_table("silver.orders"), DAY)
    # Idempotent: the same run again changes nothing.
    assert run_dag(dags["silver_orders"], conf=conf)["dag"] == "success"
    assert tables.live_version(tables.load_table("silver.orders"), DAY) == again
    assert Ledger().rows("silver_orders", str(DAY))[-1]["status"] == "skipped"
