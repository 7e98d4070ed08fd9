"""A real Airflow on this machine for tests: api-server, scheduler, dag-processor and
triggerer with the LocalExecutor, on a PostgreSQL server started by the test; the
pipelines' run ledger and Iceberg catalog on the same server (their own databases), or on
another (`data_postgres`).

With `celery_broker` (a Redis URL) it runs the CeleryExecutor instead: `celery_workers`
workers (`airflow celery worker`) run the tasks, Celery's results go to Airflow's database,
and each task instance's `hostname` is the name of the worker that ran it (worker-1, ...).

Every process is started in its own process group and stopped by it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pg import PostgresServer, free_port

from wap.embedded import local_airflow_env, stop_process_tree

HERE = Path(__file__).resolve().parent

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class AirflowDeployment:
    def __init__(
        self,
        base: Path,
        postgres: PostgresServer,
        parallelism: int = 2,
        *,
        spark: str,
        data_postgres: PostgresServer | None = None,
        celery_broker: str | None = None,
        celery_workers: int = 2,
    ) -> None:
        """`spark`: the sc:// address of the Spark Connect server every task is a client of (as
        deployed: a task then costs a connection, not a cold JVM)."""
        self.base = base
        self.postgres = postgres
        self.data_postgres = data_postgres or postgres
        self.port = free_port()
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list[Any] = []  # the components' log files, closed in stop()
        for server, database in (
            (postgres, "airflow"),
            (self.data_postgres, "wap_ledger"),
            (self.data_postgres, "wap_catalog"),
        ):
            with sa.create_engine(server.url(), isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
        self.workers = [f"worker-{n}" for n in range(1, celery_workers + 1)] if celery_broker else []
        self.components = (*COMPONENTS, *self.workers)
        self.env = {
            **os.environ,
            # the embedded default's layout, this deployment's port, its API and execution API URLs
            **local_airflow_env(base / "data", self.port, host="127.0.0.1"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url("airflow"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if celery_broker else "LocalExecutor",
            **(
                {
                    "AIRFLOW__CELERY__BROKER_URL": celery_broker,
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres.url("airflow"),
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(parallelism),
                }
                if celery_broker
                else {}
            ),
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            # The log servers of workers and triggerer: free ports, not the fixed defaults.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Test-only secret, made per run: every component must share it.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "1800",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "WAP_LEDGER_URL": self.data_postgres.url("wap_ledger"),
            "WAP_CATALOG_URI": self.data_postgres.url("wap_catalog"),
            "WAP_SPARK_REMOTE": spark,
            "WAP_ARRIVAL_TIMEOUT_S": "45",  # a day whose data never lands fails in 45 s, not 6 h
        }
        self.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        self.url = self.env["AIRFLOW__API__BASE_URL"]

    # ------------------------------------------------------------------ processes
    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run an `airflow` CLI command; its output, or an error with it."""
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        if done.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done.stdout

    def start(self) -> AirflowDeployment:
        (self.base / "logs").mkdir(parents=True, exist_ok=True)
        (self.base / "data" / "lineage").mkdir(parents=True, exist_ok=True)  # the file transport's folder
        self.airflow("db", "migrate", timeout=600)
        for component in self.components:
            self.launch(component)
        self.wait_for(lambda: self.api("GET", "/api/v2/monitor/health"), 180, "the api-server")
        return self

    def launch(self, component: str) -> None:
        """Start one component (again, after `kill`): its log file is appended to."""
        log = open(self.base / "logs" / f"{component}.log", "a")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        command, env = [component], self.env
        if component in self.workers:
            command = ["celery", "worker", "--celery-hostname", f"{component}@localhost"]
            env = {
                **self.env,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),  # each worker serves its logs
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_name.hostname",
                "WAP_TEST_WORKER": component,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), self.env.get("PYTHONPATH")])),
            }
        self.processes[component] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *command],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with everything it started
        )

    def kill(self, component: str) -> None:
        """SIGKILL a component and every process it started (its tasks too) at once: the
        machine it ran on died. `launch` starts it again."""
        stop_process_tree([self.processes.pop(component)], grace=0)

    def stop(self) -> None:
        """Stop every process started here, and those their task processes run in."""
        stop_process_tree(list(self.processes.values()), grace=10)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for component in self.components:
            path = self.base / "logs" / f"{component}.log"
            if path.exists():
                out.append(f"--- {component}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        from urllib.parse import quote

        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return {ti["task_id"]: ti["state"] for ti in self.api("GET", path)["task_instances"]}

    # ------------------------------------------------------------------ REST API
    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from None

    def wait_for(self, probe, seconds: float, what: str) -> Any:
        """Call `probe` until it returns something truthy without raising."""
        deadline = time.monotonic() + seconds
        last: Any = None
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited ({process.returncode})\n{self.log_tail()}")
            try:
                result = probe()
                if result:
                    return result
            except (OSError, RuntimeError) as exc:
                last = exc
            time.sleep(2)
        raise TimeoutError(f"waited {seconds} s for {what} (last: {last})\n{self.log_tail()}")
