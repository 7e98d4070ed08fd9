"""`wap airflow`: a whole local Airflow in one command, with the partitions view and the
quarantine review in its UI, tested through its REST API and in a real browser.

The command is started as a user would (`python -m wap.cli airflow --port P`) on a fresh data
folder: a week of landed orders, one day (2024-01-03) with a negative amount, one day
(2024-01-06) never run. The tests, in order:

- a two-day backfill over REST (one range run) publishes the landed rows, its Spark work on
  the Spark Connect server the command started;
- a range with the bad day quarantines that day alone, and its review DAG asks a person;
- the view's JSON and pages give nothing without Airflow's authentication, or to a user
  Airflow does not let read the DAG;
- the view's states equal `wap plan`'s for the same week;
- in Debian's chromium: log in, see the week coloured by state, open the quarantined day's
  findings, answer the review in Airflow's own UI ("Release", with a reason), and see the
  day turn ok, the decision recorded with who and why (screenshots in the test's folder);
- stopping the command stops everything it started: no process of its data folder is left.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import START
from expected import orders_for_day
from pg import free_port

DAYS = [START + dt.timedelta(days=n) for n in range(7)]  # 2024-01-01 .. 2024-01-07
BAD, NEVER_RUN = DAYS[2], DAYS[5]
WEEK = f"from={DAYS[0]}&to={DAYS[-1]}"


def _call(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            try:
                return response.status, json.loads(raw or b"null")
            except ValueError:
                return response.status, raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:500]


@dataclass
class LocalAirflow:
    api: str
    data: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen
    token: str = ""

    def wait(self, probe, seconds: float, what: str) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"`wap airflow` exited ({self.process.returncode}) waiting for {what}:\n{self.log_tail()}"
                )
            try:
                if result := probe():
                    return result
            except OSError:
                pass
            time.sleep(2)
        raise AssertionError(f"waited {seconds} s for {what}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text()[-4000:]

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return _call(self.api + path, token=token if token is not None else self.token)

    def run_to_end(self, dag_id: str, partition: str, **conf: Any) -> str:
        status, run = _call(
            f"{self.api}/api/v2/dags/{dag_id}/dagRuns",
            "POST",
            {"logical_date": None, "conf": {"partition": partition, **conf}},
            self.token,
        )
        assert status == 200, run
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"

        def finished():
            state = self.get(path)[1]["state"]
            return state if state in ("success", "failed") else None

        return self.wait(finished, 600, f"the run of {partition}")


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


@pytest.fixture(scope="module")
def local_airflow(tmp_path_factory) -> LocalAirflow:
    from sample_data.orders import write_landing

    root = tmp_path_factory.mktemp("local_airflow")
    data = root / "data"
    write_landing(data / "landing", START, days=len(DAYS), orders_per_day=60)
    bad = {"event_id": "E-BAD", "order_id": "O-BAD", "customer_id": "C-1", "status": "placed", "amount": -1}
    bad |= {"event_ts": f"{BAD}T10:00:00Z", "currency": "EUR", "channel": "web"}
    (data / "landing" / "orders" / f"dt={BAD}" / "refund.jsonl").write_text(json.dumps(bad) + "\n")
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
    log = root / "wap-airflow.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "wap.cli", "airflow", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    airflow = LocalAirflow(f"http://127.0.0.1:{port}", data, env, log, process)
    try:
        airflow.wait(lambda: airflow.get("/api/v2/monitor/health", "")[0] == 200, 300, "the api-server")
        passwords = data / "airflow" / "simple_auth_manager_passwords.json.generated"
        login = {"username": "admin", "password": json.loads(passwords.read_text())["admin"]}
        status, body = _call(f"{airflow.api}/auth/token", "POST", login)
        assert status in (200, 201), body
        airflow.token = body["access_token"]
        for dag_id in ("silver_orders", "silver_orders__review"):
            airflow.wait(lambda d=dag_id: airflow.get(f"/api/v2/dags/{d}")[0] == 200, 300, f"the DAG {dag_id}")
            assert _call(f"{airflow.api}/api/v2/dags/{dag_id}", "PATCH", {"is_paused": False}, airflow.token)[0] == 200
        yield airflow
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)


def _published(data: Path, day: dt.date) -> list[dict]:
    from wap.ledger import Ledger

    rows = Ledger(f"sqlite:///{data / 'ledger.db'}").rows("silver_orders", day.isoformat())
    return [r for r in rows if r["status"] == "published"]


def test_a_two_day_backfill_over_rest_publishes_with_every_spark_task_on_one_shared_connect_server(local_airflow):
    assert _call(f"{local_airflow.api}/api/v2/dags")[0] == 401, "no token, nothing"
    assert local_airflow.run_to_end("silver_orders", f"{DAYS[0]}/{DAYS[1]}") == "success", local_airflow.log_tail()
    for day in DAYS[:2]:
        expected = len(orders_for_day(local_airflow.data / "landing", day))
        assert [r["rows_out"] for r in _published(local_airflow.data, day)] == [expected]

    remote = re.search(r"the tasks use (sc://127\.0\.0\.1:\d+)", local_airflow.log.read_text())
    assert remote, local_airflow.log_tail()
    stage_logs = list(
        (local_airflow.data / "airflow" / "logs" / "dag_id=silver_orders").glob("run_id=manual__*/task_id=stage/*.log")
    )
    assert stage_logs and f"Spark: the Spark Connect server {remote.group(1)}" in stage_logs[0].read_text()


def _review_run(airflow: LocalAirflow) -> dict[str, Any]:
    runs = airflow.get("/api/v2/dags/silver_orders__review/dagRuns")[1]["dag_runs"]
    return next((r for r in runs if r.get("partition_key") == BAD.isoformat()), None)


def _hitl_path(run: dict[str, Any]) -> str:
    run_id = urllib.parse.quote(run["dag_run_id"], safe="")
    return f"/api/v2/dags/silver_orders__review/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails"


def test_a_quarantined_day_asks_a_person_in_airflow(local_airflow):
    # No lookback runs (late records re-running earlier days): the day between stays missing.
    assert local_airflow.run_to_end("silver_orders", f"{DAYS[2]}/{DAYS[4]}", lookback=False) == "failed"  # one day
    assert local_airflow.run_to_end("silver_orders", str(DAYS[6]), lookback=False) == "success"
    assert _published(local_airflow.data, BAD) == []
    assert all(_published(local_airflow.data, day) for day in (DAYS[3], DAYS[4], DAYS[6]))

    # One review run, for the quarantined day (its partition key), waiting for an answer.
    run = local_airflow.wait(lambda: _review_run(local_airflow), 120, "the review run")
    _, asked = local_airflow.wait(
        lambda: (found := local_airflow.get(_hitl_path(run)))[0] == 200 and found, 180, "the review's question"
    )
    assert asked["options"] == ["Release", "Discard"]
    assert asked["subject"] == f"silver_orders {BAD} is quarantined: release it, or discard it?"
    assert "expect_column_values_to_be_between" in asked["body"] and "-1.00" in asked["body"]
    assert asked["response_received"] is False


def _mint_token(airflow: LocalAirflow, role: str | None) -> str:
    """A token Airflow's own auth manager signs, in the command's configuration, for a user
    with `role` (None: a user Airflow lets read nothing)."""
    script = (
        "from airflow.api_fastapi.app import create_auth_manager\n"
        "from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser\n"
        "manager = create_auth_manager()\n"
        f"print(manager.generate_jwt(SimpleAuthManagerUser(username='nobody', role={role!r})))\n"
    )
    exports = subprocess.run(
        [sys.executable, "-m", "wap.cli", "airflow", "--env"],
        env=airflow.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env = dict(airflow.env)
    for line in exports.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_the_view_gives_nothing_without_authentication_or_to_a_user_who_may_not_read(local_airflow):
    pages = [
        "/wap/partitions/",
        "/wap/partitions/silver_orders",
        f"/wap/partitions/silver_orders/{BAD}",
        "/wap/api/pipelines",
        f"/wap/api/pipelines/silver_orders/partitions?{WEEK}",
        f"/wap/api/pipelines/silver_orders/partitions/{BAD}",
    ]
    forged = local_airflow.token[:-4] + ("AAAA" if not local_airflow.token.endswith("AAAA") else "BBBB")
    for page in pages:
        for token, refused in (("", 401), (forged, 403)):
            status, body = local_airflow.get(page, token)
            assert status == refused, (page, status, body)
            assert str(BAD) not in str(body) and "silver" not in str(body), (page, body)

    nobody = _mint_token(local_airflow, None)
    assert local_airflow.get("/wap/api/pipelines", nobody) == (200, [])
    for page in pages[1:3] + pages[4:]:
        status, body = local_airflow.get(page, nobody)
        assert status == 404 and str(BAD) not in str(body), (page, status, body)
    # Read-only: no route takes a write.
    assert (
        _call(f"{local_airflow.api}/wap/api/pipelines/silver_orders/partitions/{BAD}", "POST", {}, local_airflow.token)[
            0
        ]
        == 405
    )


def test_the_views_states_equal_wap_plans(local_airflow):
    status, view = local_airflow.get(f"/wap/api/pipelines/silver_orders/partitions?{WEEK}")
    assert status == 200, view
    plan = subprocess.run(
        [
            sys.executable,
            "-m",
            "wap.cli",
            "plan",
            "silver_orders",
            "--from",
            str(DAYS[0]),
            "--to",
            str(DAYS[-1]),
            "-o",
            "json",
        ],
        env=local_airflow.env,
        capture_output=True,
        text=True,
        check=True,
    )
    planned = json.loads(plan.stdout)["partitions"]
    shown = {p["partition"]: p["state"] for p in view["partitions"]}
    assert shown == {p["partition"]: p["state"] for p in planned}
    assert shown == {str(d): "quarantined" if d == BAD else "missing" if d == NEVER_RUN else "ok" for d in DAYS}
    assert view["commands"] == json.loads(plan.stdout)["ranges"]
    for bad, says in ((f"from={DAYS[-1]}&to={DAYS[0]}", "is before"), ("from=yesterday", "YYYY-MM-DD")):
        status, body = local_airflow.get(f"/wap/api/pipelines/silver_orders/partitions?{bad}")
        assert status == 400 and says in str(body), (bad, status, body)
    # A key meant to reach a path or the page's markup: refused as a key, never echoed as markup.
    for hostile in ("..%2F..%2Fledger.db", "2024-01-03%27%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E"):
        for page in (
            f"/wap/api/pipelines/silver_orders/partitions/{hostile}",
            f"/wap/partitions/silver_orders/{hostile}",
        ):
            status, body = local_airflow.get(page)
            assert status in (400, 404) and "<script>" not in str(body), (page, status, body)


def _states_in(driver) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    return {
        c.get_attribute("data-partition"): c.get_attribute("data-state")
        for c in driver.find_elements(By.CSS_SELECTOR, "#strip .cell")
    }


def test_in_a_browser_the_week_is_coloured_by_state_and_a_review_in_the_ui_releases_the_day(local_airflow, tmp_path):
    from browser import chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("WAP_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    driver = chromium(tmp_path / "profile")
    wait = WebDriverWait(driver, 60)
    try:
        # Log in through Airflow's own page: its session cookie is what the view is read with.
        driver.get(f"{local_airflow.api}/wap/partitions/silver_orders?{WEEK}")
        assert "silver_orders" not in driver.page_source, "no session, no view"
        driver.get(f"{local_airflow.api}/auth/login/")
        password = json.loads(
            (local_airflow.data / "airflow" / "simple_auth_manager_passwords.json.generated").read_text()
        )
        wait.until(ready.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
        driver.find_element(By.NAME, "password").send_keys(password["admin"])
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: "_token" in {c["name"] for c in d.get_cookies()})

        # The strip: one cell per day, its state and colour.
        driver.get(f"{local_airflow.api}/wap/partitions/silver_orders?{WEEK}")
        wait.until(ready.presence_of_element_located((By.ID, "strip")))
        expected = {str(d): "quarantined" if d == BAD else "missing" if d == NEVER_RUN else "ok" for d in DAYS}
        assert _states_in(driver) == expected
        colour = driver.find_element(By.ID, f"p-{BAD}").value_of_css_property("background-color")
        assert colour in ("rgba(239, 108, 0, 1)", "rgb(239, 108, 0)"), colour
        assert f'"partition": "{NEVER_RUN}"' in driver.find_element(By.ID, "commands").text
        driver.save_screenshot(str(shots / "partitions-view.png"))

        # The quarantined day's drill-down: the failed check with its sample, and the commands.
        driver.find_element(By.ID, f"p-{BAD}").click()
        wait.until(ready.presence_of_element_located((By.ID, "findings")))
        assert driver.find_element(By.ID, "state").get_attribute("data-state") == "quarantined"
        findings = driver.find_element(By.ID, "findings").text
        assert "expect_column_values_to_be_between" in findings and "-1.00" in findings
        assert f"wap quarantine release silver_orders {BAD}" in driver.find_element(By.ID, "commands").text
        driver.save_screenshot(str(shots / "partition-quarantined.png"))

        # The same view inside Airflow's UI: its navigation entry opens it in a frame.
        driver.get(f"{local_airflow.api}/plugin/wap-partitions")
        frame = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "iframe")))
        assert frame.get_attribute("src").endswith("/wap/partitions/")
        driver.switch_to.frame(frame)
        wait.until(ready.element_to_be_clickable((By.LINK_TEXT, "silver_orders"))).click()
        wait.until(ready.presence_of_element_located((By.ID, "strip")))
        assert _states_in(driver) == expected  # by default: from the first day tried to the last
        driver.switch_to.default_content()
        driver.save_screenshot(str(shots / "airflow-ui-partitions.png"))

        # The review, answered in Airflow's own form: a reason, then Release.
        run = _review_run(local_airflow)
        run_id = urllib.parse.quote(run["dag_run_id"], safe="")
        driver.get(f"{local_airflow.api}/dags/silver_orders__review/runs/{run_id}/tasks/review/required_actions")
        wait.until(ready.presence_of_element_located((By.ID, "element_reason"))).send_keys("a refund: valid")
        release = wait.until(ready.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Release']")))
        driver.save_screenshot(str(shots / "review-form.png"))
        release.click()

        def reviewed():
            state = local_airflow.get(f"/api/v2/dags/silver_orders__review/dagRuns/{run_id}")[1]["state"]
            return state if state in ("success", "failed") else None

        assert local_airflow.wait(reviewed, 300, "the review run") == "success", local_airflow.log_tail()
        driver.get(f"{local_airflow.api}/wap/partitions/silver_orders?{WEEK}")
        wait.until(ready.presence_of_element_located((By.ID, "strip")))
        assert _states_in(driver) == {**expected, str(BAD): "ok"}
        driver.find_element(By.ID, f"p-{BAD}").click()
        decision = json.loads(wait.until(ready.presence_of_element_located((By.ID, "decision"))).text)
        assert (decision["by"], decision["reason"]) == ("admin", "a refund: valid")
    finally:
        driver.quit()
    (published,) = _published(local_airflow.data, BAD)
    assert published["rows_out"] == len(orders_for_day(local_airflow.data / "landing", BAD))
    # The release sent the table's asset event for the day, as a run's publish does.
    events = local_airflow.get("/api/v2/assets/events?source_dag_id=silver_orders__review")[1]["asset_events"]
    assert [(e["uri"], e["partition_key"]) for e in events] == [("iceberg://wap/silver/orders", str(BAD))]


def test_stopping_the_command_stops_everything_it_started(local_airflow):
    local_airflow.process.send_signal(signal.SIGTERM)
    local_airflow.process.wait(timeout=120)
    assert local_airflow.process.returncode == 0, local_airflow.log_tail()
    deadline = time.monotonic() + 30
    while _processes_of(local_airflow.data) and time.monotonic() < deadline:
        time.sleep(1)
    assert _processes_of(local_airflow.data) == [], "everything the command started has stopped"
