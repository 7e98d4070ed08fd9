"""A Spark standalone cluster on this machine for tests: a master and its workers, each its
own JVM started from PySpark's own jars (`spark-class` with the standalone Master and Worker
classes), each in its own process group with its executors. No download: PySpark's wheel
holds everything, as it holds the Connect server that runs its application on the master
(`wap.spark.ConnectServer(master=cluster.master_url)`).

    cluster = SparkCluster(tmp, workers=2).start()
    cluster.kill_worker(1)      # SIGKILL of the worker and its executors, as a dead machine
    cluster.start_worker(1)     # a replacement registers with the master
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from pg import free_port

from wap.embedded import stop_process_tree


def _spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


class SparkCluster:
    def __init__(self, base: Path, workers: int = 2, cores: int = 1, memory: str = "1500m") -> None:
        self.base, self.cores, self.memory = base, cores, memory
        self.port, self.ui_port = free_port(), free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.master: subprocess.Popen[bytes] | None = None
        self.workers: dict[int, subprocess.Popen[bytes] | None] = dict.fromkeys(range(1, workers + 1))
        self._logs: list[Any] = []

    @property
    def java_options(self) -> str:
        """The tests' JVM options (conftest: SPARK_SUBMIT_OPTS), for the master's and workers' JVMs
        and, given to an application, for its executors."""
        return os.environ.get("SPARK_SUBMIT_OPTS", "")

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.base / f"{name}.log", "a")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        return subprocess.Popen(
            [_spark_class(), *args],
            # Everything on loopback: the workers, their executors and the master's RPC.
            env={
                **os.environ,
                "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_NO_DAEMONIZE": "1",
                "SPARK_DAEMON_JAVA_OPTS": self.java_options,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its group holds the executors it starts: killed together
        )

    def start(self) -> SparkCluster:
        self.base.mkdir(parents=True, exist_ok=True)
        self.master = self._start(
            "master",
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.ui_port)),
        )
        self._wait(lambda: self.state(), "the Spark master")
        for n in self.workers:
            self.start_worker(n)
        return self

    def start_worker(self, n: int) -> None:
        """Start worker `n` (again, after a kill) and wait until the master counts it alive."""
        self.workers[n] = self._start(
            f"worker-{n}",
            "org.apache.spark.deploy.worker.Worker",
            self.master_url,
            *("--host", "127.0.0.1", "--cores", str(self.cores), "--memory", self.memory),
            *("--webui-port", str(free_port()), "--work-dir", str(self.work_dir(n))),
        )
        alive = sum(1 for p in self.workers.values() if p is not None)
        self._wait(lambda: self.state()["aliveworkers"] >= alive, f"Spark worker {n} to register")

    def kill_worker(self, n: int) -> None:
        """SIGKILL worker `n` and its executors at once (a machine of the cluster dying)."""
        process = self.workers[n]
        assert process is not None, f"worker {n} is not running"
        stop_process_tree([process], grace=0)
        self.workers[n] = None

    def work_dir(self, n: int) -> Path:
        return self.base / f"worker-{n}"

    def state(self) -> dict[str, Any]:
        """The master's own account (its web UI's /json/): workers, alive ones, applications."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
            return json.loads(response.read())

    def tasks_per_worker(self) -> dict[int, int]:
        """How many Spark tasks each worker's executors started, from their own logs (every
        executor a worker ran, the killed ones' included, writes its stderr in the work dir)."""
        return {
            n: sum(
                path.read_text(errors="replace").count("Running task ")
                for path in self.work_dir(n).glob("app-*/*/stderr")
            )
            for n in self.workers
        }

    def stop(self) -> None:
        stop_process_tree([p for p in (self.master, *self.workers.values()) if p is not None], grace=10)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def _wait(self, probe, what: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.master is not None and self.master.poll() is not None:
                raise RuntimeError(f"the Spark master exited: {(self.base / 'master.log').read_text()[-3000:]}")
            try:
                if probe():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"waited {seconds} s for {what}")
