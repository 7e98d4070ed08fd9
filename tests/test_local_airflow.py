"""`wap airflow`: a whole local Airflow in one command, its Spark tasks on one warm server.

The command is started as a user would (`python -m wap.cli airflow --port P`) on a fresh data
folder with landed orders. The test logs in through Airflow's own authentication (the admin
password `airflow standalone` generated), triggers a two-day backfill over the REST API (one
range run), and checks that both days are published with the landed rows, that the stage task's Spark work
ran on the Spark Connect server the command started (the task's log names it), and that
stopping the command stops everything it started: no process of its data folder is left.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from conftest import START
from expected import orders_for_day
from pg import free_port


def _call(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:500]


def _wait(probe, seconds: float, what: str, process: subprocess.Popen, log: Path) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"`wap airflow` exited ({process.returncode}) waiting for {what}:\n{log.read_text()[-4000:]}"
            )
        try:
            if result := probe():
                return result
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError(f"waited {seconds} s for {what}:\n{log.read_text()[-4000:]}")


def _processes_of(data: Path) -> list[int]:
    """Processes whose environment names this data folder (what the command started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if f"WAP_DATA_DIR={data}\0".encode() in environ:
                found.append(int(entry.name))
    return found


def test_wap_airflow_publishes_two_days_with_every_spark_task_on_one_shared_connect_server(tmp_path):
    from sample_data.orders import write_landing
    from wap.ledger import Ledger

    data = tmp_path / "data"
    write_landing(data / "landing", START, days=3, orders_per_day=60)
    port = free_port()
    env = {
        **os.environ,
        "WAP_DATA_DIR": str(data),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "WAP_ARRIVAL_TIMEOUT_S": "45",  # the unpause's scheduled run (nothing landed for it) ends soon
    }
    for name in ("WAP_SPARK_REMOTE", "WAP_SPARK_MASTER", "WAP_LEDGER_URL", "WAP_CATALOG_URI"):
        env.pop(name, None)
    log = tmp_path / "wap-airflow.log"
    api = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        command = subprocess.Popen(
            [sys.executable, "-m", "wap.cli", "airflow", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: _call(f"{api}/api/v2/monitor/health")[0] == 200, 300, "the api-server", command, log)
        assert _call(f"{api}/api/v2/dags")[0] == 401, "no token, nothing"

        passwords = data / "airflow" / "simple_auth_manager_passwords.json.generated"
        login = {"username": "admin", "password": json.loads(passwords.read_text())["admin"]}
        status, body = _call(f"{api}/auth/token", "POST", login)
        assert status in (200, 201), body
        token = body["access_token"]
        _wait(lambda: _call(f"{api}/api/v2/dags/silver_orders", token=token)[0] == 200, 300, "the DAG", command, log)
        assert _call(f"{api}/api/v2/dags/silver_orders", "PATCH", {"is_paused": False}, token)[0] == 200
        days = [START, START + dt.timedelta(days=1)]  # a two-day backfill: one range run over REST
        status, run = _call(
            f"{api}/api/v2/dags/silver_orders/dagRuns",
            "POST",
            {"logical_date": None, "conf": {"partition": f"{days[0]}/{days[1]}"}},
            token,
        )
        assert status == 200, run
        path = f"{api}/api/v2/dags/silver_orders/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"

        def finished():
            state = _call(path, token=token)[1]["state"]
            return state if state in ("success", "failed") else None

        assert _wait(finished, 600, "the run", command, log) == "success", log.read_text()[-4000:]

        rows = Ledger(f"sqlite:///{data / 'ledger.db'}").rows("silver_orders")
        for day in days:
            published = [r for r in rows if r["partition"] == day.isoformat() and r["status"] == "published"]
            assert [r["rows_out"] for r in published] == [len(orders_for_day(data / "landing", day))]

        remote = re.search(r"the tasks use (sc://127\.0\.0\.1:\d+)", log.read_text())
        assert remote, log.read_text()[-4000:]
        stage_logs = list(
            (data / "airflow" / "logs" / "dag_id=silver_orders").glob("run_id=manual__*/task_id=stage/*.log")
        )
        assert stage_logs and f"Spark: the Spark Connect server {remote.group(1)}" in stage_logs[0].read_text()
    finally:
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=120)
    assert command.returncode == 0, log.read_text()[-4000:]
    deadline = time.monotonic() + 30
    while _processes_of(data) and time.monotonic() < deadline:
        time.sleep(1)
    assert _processes_of(data) == [], "everything the command started has stopped"
