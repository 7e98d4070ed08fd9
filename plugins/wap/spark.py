"""The Spark session: in-process `local[*]` by default, Spark Connect when configured.

One session per process: `get_spark()` returns the running one if there is one, so the
tasks of a `dag.test()` run, or the tests of a pytest session, pay the cold start once.
JDBC drivers (`WAP_JDBC_JARS`, see wap.settings) are loaded when a local session or a local
Connect server starts: `spark.jars` cannot be added to a running one.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from wap.errors import JavaMissingError
from wap.settings import Settings, load_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Why each setting: pyiceberg rejects Spark 4's default INT96 timestamps; partition days are
# UTC calendar days; small shuffles suit one partition of one day on a few cores.
SESSION_CONF = {
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": os.environ.get("WAP_SPARK_SHUFFLE_PARTITIONS", "4"),
    "spark.sql.adaptive.enabled": "true",
    # Staged files sized by bytes, not by core count (see staging.write_staged).
    "spark.sql.adaptive.advisoryPartitionSizeInBytes": "128m",
    "spark.sql.adaptive.coalescePartitions.parallelismFirst": "false",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
}
# The JVM compiles no method over 8,000 bytes of bytecode by default; a query's generated
# code passes that for a wide projection (the landed-file reader's checks), which then runs
# interpreted: half the reader's time at 3.4M lines (`docs/scale.md`). Driver and executors.
JIT_OPTIONS = "-XX:-DontCompileHugeMethods"
LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": os.environ.get("WAP_SPARK_DRIVER_MEMORY", "2g"),
    "spark.sql.warehouse.dir": "/tmp/wap-spark-warehouse",
    "spark.driver.extraJavaOptions": f"-Dderby.system.home=/tmp/wap-derby {JIT_OPTIONS}",
    "spark.executor.extraJavaOptions": JIT_OPTIONS,  # a standalone master's executors (WAP_SPARK_MASTER)
}


def check_java() -> str:
    """Return the Java version line, or raise with how to install Java 17."""
    java = shutil.which("java", path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin")) or shutil.which("java")
    if java is None:
        raise JavaMissingError(
            "PySpark needs Java 17 and no `java` was found. Install it, e.g. "
            "`sudo apt-get install openjdk-17-jre-headless` (Debian/Ubuntu) or "
            "`brew install openjdk@17` (macOS), then set JAVA_HOME."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else java


def jars_conf(settings: Settings | None = None) -> dict[str, str]:
    """`spark.jars` for the configured JDBC drivers (none: no setting), for a local session or server.

    A missing local jar fails here: Spark would only log it, and the read would fail much later
    with "No suitable driver".
    """
    jars = (settings or load_settings()).jdbc_jars
    missing = [jar for jar in jars if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", jar) and not Path(jar).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WAP_JDBC_JARS names jars that do not exist: {', '.join(missing)}. "
            "`make .venv/jars/postgresql.jar` installs the PostgreSQL driver."
        )
    return {"spark.jars": ",".join(jars)} if jars else {}


def get_spark(app_name: str = "wap", settings: Settings | None = None) -> SparkSession:
    """The process's Spark session, created on first use (from `settings`, default the environment's)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    settings = settings or load_settings()
    remote = settings.spark_remote
    if remote:
        # A remote server loads its own JDBC drivers (docker-compose.yaml: spark-connect).
        builder = SparkSession.builder.remote(remote)
        conf = SESSION_CONF
        where = f"the Spark Connect server {remote}"
    else:
        check_java()
        master = os.environ.get("WAP_SPARK_MASTER", "local[*]")
        if master.startswith("local"):
            # Python UDFs (some GX expectations use them) run in workers of this Python, not
            # a bare `python3` from the PATH: Spark 4's UDF workers need pyarrow.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.master(master)
        where = f"{master}, a JVM started by this process"
        conf = {**LOCAL_CONF, **SESSION_CONF, **jars_conf(settings)}
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.appName(app_name).getOrCreate()
    if not remote:
        spark.sparkContext.setLogLevel(os.environ.get("WAP_SPARK_LOG_LEVEL", "WARN"))
    # Where this process's Spark work runs: said once, in the task's log.
    log.info("Spark: %s", where)
    return spark


class ConnectServer:
    """A Spark Connect server on this machine (the one PySpark ships), in its own process
    group: one JVM that many short task processes share, each paying a client connection
    instead of a cold JVM start. For a laptop, the tests and the benchmarks; a cluster runs
    its own (`WAP_SPARK_REMOTE=sc://host:15002`).

    It loads the JDBC drivers of `WAP_JDBC_JARS` (wap.settings), as a local session does.
    Its Python workers (for Python UDFs, which some GX expectations use) run this process's
    Python unless PYSPARK_PYTHON says otherwise: they need pyarrow, which a bare `python3` on
    the PATH may lack. A cluster's server needs a worker Python with pyarrow too.

        with ConnectServer() as server:
            os.environ["WAP_SPARK_REMOTE"] = server.remote
    """

    def __init__(
        self, port: int = 0, timeout: float = 180, master: str | None = None, conf: dict[str, str] | None = None
    ) -> None:
        """`master`: where its executors run (default `WAP_SPARK_MASTER`, else `local[*]`), e.g. a
        standalone cluster's `spark://host:7077`; `conf`: Spark settings on top of this module's."""
        import socket

        if not port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.port, self.timeout = port, timeout
        self.remote = f"sc://127.0.0.1:{port}"
        self.master = master or os.environ.get("WAP_SPARK_MASTER", "local[*]")
        self.conf = conf or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ConnectServer:
        import socket
        import time

        import pyspark

        check_java()
        conf = {
            **LOCAL_CONF,
            **SESSION_CONF,
            **jars_conf(),
            **self.conf,
            "spark.connect.grpc.binding.port": str(self.port),
        }
        self.process = subprocess.Popen(
            [
                str(Path(pyspark.__file__).parent / "bin" / "spark-submit"),
                "--class",
                "org.apache.spark.sql.connect.service.SparkConnectServer",
                "--master",
                self.master,
                "--driver-memory",
                conf.pop("spark.driver.memory"),
                *[arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")],
                "spark-internal",
            ],
            env={**os.environ, "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.timeout
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the Spark Connect server did not start on port {self.port}")
            time.sleep(0.5)

    def stop(self) -> None:
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> ConnectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
