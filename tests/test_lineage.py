"""OpenLineage (I7): the events of real runs name the live data, carry the facets a lineage
tool needs, and every event and every facet validates against the official spec, offline.

The spec's JSON schemas are vendored in tests/openlineage-spec/ (see its README); this
project's own run facets have their schemas in plugins/wap/lineage_facets/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest
from conftest import START, run_dag
from ol_spec import spec_registry, validate
from pg import free_port

from wap.settings import REPO_ROOT

TASKS = ("resolve_partition", "stage", "audit", "publish")


def events_file() -> Path:
    return Path(json.loads(os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"])["log_file_path"])


def read_events(offset: int) -> list[dict]:
    with open(events_file(), "rb") as handle:
        handle.seek(offset)
        return [json.loads(line) for line in handle.read().decode().splitlines() if line.strip()]


def settle(offset: int, dag_runs: int) -> list[dict]:
    """The events written since `offset`, once every DAG run's closing event is in (they are emitted
    asynchronously by the provider)."""
    deadline = time.monotonic() + 30
    while True:
        events = read_events(offset)
        closing = [e for e in events if "." not in e["job"]["name"] and e["eventType"] in ("COMPLETE", "FAIL")]
        if len(closing) >= dag_runs or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def task_of(event: dict) -> str:
    return event["job"]["name"].rsplit(".", 1)[-1]


@pytest.fixture(scope="module")
def lineage(dags, landed, spark):
    """Silver for two days and gold for the first: their events and ledger rows."""
    from wap.ledger import Ledger

    offset = events_file().stat().st_size if events_file().exists() else 0
    runs = [
        run_dag(dags["silver_orders"], day=START),
        run_dag(dags["gold_daily_sales"], conf={"partition": START.isoformat()}),
        run_dag(dags["silver_orders"], day=START + dt.timedelta(days=1)),
    ]
    assert all(r["dag"] == "success" for r in runs), runs
    events = settle(offset, len(runs))
    return {"events": events, "runs": runs, "ledger": Ledger().rows()}


def test_every_event_and_every_facet_validates_against_the_spec(lineage):
    registry = spec_registry()
    assert lineage["events"]
    for event in lineage["events"]:
        validate(event, registry)


def test_every_task_starts_and_completes(lineage):
    for dag_id in ("silver_orders", "gold_daily_sales"):
        for task in TASKS:
            kinds = [e["eventType"] for e in lineage["events"] if e["job"]["name"] == f"{dag_id}.{task}"]
            runs = 2 if dag_id == "silver_orders" else 1
            assert kinds.count("START") == runs and kinds.count("COMPLETE") == runs, (dag_id, task, kinds)


def test_datasets_are_the_live_data_never_staging(lineage):
    from wap import tables

    names = {(d["namespace"], d["name"]) for e in lineage["events"] for d in e.get("inputs", []) + e.get("outputs", [])}
    assert names, "the pipeline's tasks name what they read and write"
    for namespace, name in names:
        assert namespace == "file", namespace
        assert "/data/order_date=" not in name and "/quarantine/" not in name and "run-" not in name, name
    silver = tables.load_table("silver.orders").location().removeprefix("file://")
    assert ("file", silver) in names
    assert ("file", str(Path(os.environ["WAP_DATA_DIR"]) / "landing" / "orders")) in names


def brief(assertion: dict) -> dict:
    return {k: assertion.get(k) for k in ("assertion", "success", "column", "severity")}


def complete(lineage: dict, job: str, day: dt.date = START) -> dict:
    (event,) = [
        e
        for e in lineage["events"]
        if e["job"]["name"] == job
        and e["eventType"] == "COMPLETE"
        and e["run"]["facets"]["wapPartition"]["partition"] == day.isoformat()
    ]
    return event


def test_the_graph_runs_from_landed_files_to_silver_to_gold(lineage):
    silver = complete(lineage, "silver_orders.publish")
    gold = complete(lineage, "gold_daily_sales.publish")
    (silver_out,) = silver["outputs"]
    (gold_in,) = gold["inputs"]
    (gold_out,) = gold["outputs"]
    assert silver["inputs"][0]["name"].endswith("/landing/orders")
    assert (gold_in["namespace"], gold_in["name"]) == (silver_out["namespace"], silver_out["name"])
    symlinks = {d["facets"]["symlinks"]["identifiers"][0]["name"] for d in (silver_out, gold_in, gold_out)}
    assert symlinks == {"silver.orders", "gold.daily_sales"}
    assert silver_out["facets"]["symlinks"]["identifiers"][0]["namespace"] == "iceberg://wap"


def test_job_names_are_stable_across_runs(lineage):
    day1 = {
        e["job"]["name"]
        for e in lineage["events"]
        if e["run"]["facets"].get("wapPartition", {}).get("partition") == START.isoformat()
        and e["job"]["name"].startswith("silver")
    }
    day2 = {
        e["job"]["name"]
        for e in lineage["events"]
        if e["run"]["facets"].get("wapPartition", {}).get("partition") == (START + dt.timedelta(days=1)).isoformat()
    }
    assert day1 == day2 == {f"silver_orders.{t}" for t in ("stage", "audit", "publish")}
    namespaces = {e["job"]["namespace"] for e in lineage["events"]}
    assert namespaces == {"wap-embedded"}


def test_tasks_link_to_their_dag_run(lineage):
    dag_runs = {e["run"]["runId"]: e for e in lineage["events"] if "." not in e["job"]["name"]}
    assert len(dag_runs) == 3
    for event in lineage["events"]:
        if "." in event["job"]["name"]:
            parent = event["run"]["facets"]["parent"]
            assert parent["run"]["runId"] in dag_runs, event["job"]["name"]
            assert parent["job"]["name"] == event["job"]["name"].split(".")[0]


def test_published_output_carries_its_version_statistics_checks_and_columns(lineage):
    from wap.audit import load_contract, load_suite

    event = complete(lineage, "silver_orders.publish")
    (out,) = event["outputs"]
    run = event["run"]["facets"]
    (row,) = [r for r in lineage["ledger"] if r["run_token"] == run["wapLedger"]["attempt"]]
    assert row["status"] == "published" and run["wapLedger"]["status"] == "published"
    assert (run["wapLedger"]["runId"], run["wapLedger"]["tryNumber"]) == (row["run_id"], row["try_number"])
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == row["rows_out"]
    assert out["outputFacets"]["outputStatistics"]["fileCount"] >= 1
    assert out["outputFacets"]["outputStatistics"]["size"] > 0
    assert out["facets"]["version"]["datasetVersion"] == str(row["snapshot_id"])
    assert run["wapPartition"] == {
        **run["wapPartition"],
        "partition": START.isoformat(),
        "partitionColumn": "order_date",
    }
    contract = load_contract(load_suite("silver.orders.json"))
    assert [(f["name"], f["type"]) for f in out["facets"]["schema"]["fields"]] == list(contract.columns.items())
    checks = [brief(c) for c in out["facets"]["dataQualityAssertions"]["assertions"]]
    assert all(c["success"] for c in checks)
    assert {
        "assertion": "expect_column_values_to_be_unique",
        "success": True,
        "column": "order_id",
        "severity": "error",
    } in checks
    columns = out["facets"]["columnLineage"]["fields"]
    assert [f["field"] for f in columns["amount"]["inputFields"]] == ["amount"]
    assert [f["field"] for f in columns["placed_ts"]["inputFields"]] == ["event_ts"]
    assert columns["amount"]["inputFields"][0]["name"].endswith("/landing/orders")


def test_a_failing_gate_fails_with_its_assertions(dags, landed, lineage):
    from wap.ledger import Ledger

    day = START + dt.timedelta(days=2)
    bad = {
        "event_id": "E-NEG",
        "order_id": "O-NEG",
        "customer_id": "C-1",
        "event_ts": f"{day.isoformat()}T10:00:00Z",
        "status": "placed",
        "amount": -3,
        "currency": "EUR",
        "channel": "web",
    }
    bad_file = landed / "orders" / f"dt={day.isoformat()}" / "bad.jsonl"
    bad_file.write_text(json.dumps(bad) + "\n")
    offset = events_file().stat().st_size
    try:
        assert run_dag(dags["silver_orders"], day=day)["dag"] == "failed"
    finally:
        bad_file.unlink()  # the day is clean again for the tests after this one
    events = settle(offset, 1)
    registry = spec_registry()
    for event in events:
        validate(event, registry)
    (fail,) = [e for e in events if e["job"]["name"] == "silver_orders.audit" and e["eventType"] == "FAIL"]
    assert "failed its quality gate" in fail["run"]["facets"]["errorMessage"]["message"]
    (candidate,) = fail["inputs"]
    checks = [brief(c) for c in candidate["inputFacets"]["dataQualityAssertions"]["assertions"]]
    failed = [c for c in checks if not c["success"]]
    assert failed == [
        {"assertion": "expect_column_values_to_be_between", "success": False, "column": "amount", "severity": "error"}
    ]
    assert fail["run"]["facets"]["wapLedger"]["status"] == "quarantined"
    assert Ledger().rows("silver_orders", day.isoformat())[-1]["status"] == "quarantined"
    assert not [e for e in events if e["job"]["name"] == "silver_orders.publish" and e["eventType"] == "COMPLETE"]


# ---------------------------------------------------------------- over HTTP, to a receiver that may be down or slow
class Receiver:
    """A lineage server on loopback (the shape of Marquez's `POST /api/v1/lineage`)."""

    def __init__(self, delay: float = 0.0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.events = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if delay:
                    time.sleep(delay)
                received.append((self.path, json.loads(body)))
                self.send_response(201)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def deployed_lineage(url: str) -> dict[str, str]:
    """The README's deployed lineage variables (namespace aside), pointed at `url`."""
    lines = (REPO_ROOT / "README.md").read_text().split("## Lineage", 1)[1].splitlines()
    settings = dict(line.split("=", 1) for line in lines if line.startswith("AIRFLOW__OPENLINEAGE__"))
    settings.pop("AIRFLOW__OPENLINEAGE__NAMESPACE")
    settings["AIRFLOW__OPENLINEAGE__TRANSPORT"] = settings["AIRFLOW__OPENLINEAGE__TRANSPORT"].strip("'")
    assert "http://marquez:5000" in settings["AIRFLOW__OPENLINEAGE__TRANSPORT"]
    settings["AIRFLOW__OPENLINEAGE__TRANSPORT"] = settings["AIRFLOW__OPENLINEAGE__TRANSPORT"].replace(
        "http://marquez:5000", url
    )
    return settings


def run_with_http_lineage(day: dt.date, port: int) -> dict:
    """silver_orders for `day` in a fresh process whose lineage goes over HTTP to `port`."""
    import subprocess
    import sys

    env = {**os.environ, **deployed_lineage(f"http://127.0.0.1:{port}")}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("lineage_run.py")), day.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    outcome = json.loads(result.removeprefix("RESULT "))
    outcome["log"] = done.stdout[-6000:] + done.stderr[-6000:]
    return outcome


def test_events_reach_an_http_receiver_and_a_down_or_slow_one_never_fails_the_run(lineage):
    from wap.ledger import Ledger

    receiver = Receiver()
    try:
        up = run_with_http_lineage(START + dt.timedelta(days=2), receiver.port)
    finally:
        receiver.close()
    assert up["state"] == "success", up["log"]
    registry = spec_registry()
    paths = {path for path, _ in receiver.events}
    assert paths == {"/api/v1/lineage"}
    events = [event for _, event in receiver.events]
    for event in events:
        validate(event, registry)
    for task in TASKS:
        kinds = [e["eventType"] for e in events if e["job"]["name"] == f"silver_orders.{task}"]
        assert sorted(kinds) == ["COMPLETE", "START"], (task, kinds)

    down = run_with_http_lineage(START + dt.timedelta(days=3), free_port())
    assert down["state"] == "success", down["log"]

    slow = Receiver(delay=30)
    try:
        late = run_with_http_lineage(START + dt.timedelta(days=4), slow.port)
    finally:
        slow.close()
    assert late["state"] == "success", late["log"]
    for day in (2, 3, 4):
        assert Ledger().rows("silver_orders", (START + dt.timedelta(days=day)).isoformat())[-1]["status"] == "published"
    print(f"silver_orders run: receiver up {up['seconds']} s, down {down['seconds']} s, slow {late['seconds']} s")
