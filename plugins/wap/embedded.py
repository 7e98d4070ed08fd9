"""The embedded default: Airflow, lineage and storage on this machine, no servers.

Used by the quick start and the tests, so both run the DAGs the same way: a SQLite
Airflow metadata DB under the data folder, the repository's dags/ and plugins/, and
OpenLineage events written as JSON lines to a file. `local_airflow` runs a whole local
Airflow (`airflow standalone`) on the same default, its Spark tasks sharing one warm
Spark Connect server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from wap.settings import REPO_ROOT


def embedded_env(data_dir: Path) -> dict[str, str]:
    """Environment variables that point Airflow and the pipelines at `data_dir`."""
    airflow_home = data_dir / "airflow"
    lineage_file = data_dir / "lineage" / "events.jsonl"
    return {
        "WAP_DATA_DIR": str(data_dir),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "wap-embedded",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(lineage_file), "append": True}
        ),
        # Events emitted from a thread of the task process, not a forked copy of it that the
        # task waits for (the provider's default: about 0.3 s per task event here).
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
        "GX_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "plugins"), os.environ.get("PYTHONPATH")])),
    }


def prepare_airflow(data_dir: Path) -> None:
    """Set the environment for this process and create Airflow's metadata DB if needed."""
    env = embedded_env(data_dir)
    os.environ.update(env)
    (data_dir / "lineage").mkdir(parents=True, exist_ok=True)
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    if not db.exists():
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )


def run_dag(dag_id: str, partition: str, lookback: bool = True) -> str:
    """Run one DAG for one partition key (or a range's, FIRST/LAST) in this process, as
    `dag.test()` does (call `prepare_airflow` first); return the run's state. The DAG file is
    `<dags>/<dag_id>.py`. `lookback=False`: no run for earlier partitions with late records
    in this run's folders (a batch after another that read them)."""
    from airflow.dag_processing.dagbag import DagBag

    from wap.partition import PartitionRange, grain_of, span_from_key
    from wap.settings import load_settings

    span = span_from_key(partition)
    value = span.first if isinstance(span, PartitionRange) else span
    path = load_settings().dags_dir / f"{dag_id}.py"
    bag = DagBag(str(path))
    if dag_id not in bag.dags:
        problems = "; ".join(str(e) for e in bag.import_errors.values()) or f"no DAG {dag_id!r} in {path}"
        raise LookupError(problems)
    # The partition param decides the partition; the logical date is the partition's start.
    run = bag.dags[dag_id].test(
        logical_date=grain_of(value).start(value),
        run_conf={"partition": partition, **({} if lookback else {"lookback": False})},
    )
    return str(run.state)


def local_airflow_env(data_dir: Path, port: int, host: str = "localhost") -> dict[str, str]:
    """The environment of a local Airflow on `data_dir` serving on `host:port` (`local_airflow`)."""
    url = f"http://{host}:{port}"
    return {
        **embedded_env(data_dir),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
    }


def local_airflow(
    data_dir: Path, port: int, spark_server: bool, remote: str | None, echo: Callable[[str], None]
) -> int:
    """Run a local Airflow for these DAGs on the embedded default (`airflow standalone`:
    api-server, scheduler, dag-processor, triggerer, LocalExecutor) until it stops or this
    process is interrupted or terminated; its exit code.

    Every Airflow task is a new process. With `spark_server` (unless `remote`, the configured
    `WAP_SPARK_REMOTE`, already names a server), one Spark Connect server is started first and every Spark task
    is its client: a task then costs a connection (~1 s) instead of a cold JVM (~12 s), and
    the server's JVM stays warm from run to run. It stops with Airflow.
    """
    # Airflow's api-server would only log a port in use, and the rest would run on without it.
    import socket

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise ValueError(f"port {port} is in use by another program: stop it, or choose another (--port N)")
    prepare_airflow(data_dir)
    env = {**os.environ, **local_airflow_env(data_dir, port)}
    # `airflow standalone` starts its components as `airflow ...` from the PATH: this Python's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    subprocess.run(
        [sys.executable, "-m", "airflow", "pools", "import", str(REPO_ROOT / "include" / "pools.json")],
        env=env,
        check=True,
        capture_output=True,
    )
    with contextlib.ExitStack() as stack:
        if remote is not None:
            echo(f"Spark: the tasks use {remote} (WAP_SPARK_REMOTE)")
        elif spark_server:
            from wap.spark import ConnectServer

            echo("Spark: starting one Spark Connect server for every task (--spark in-task: a JVM per task)")
            env["WAP_SPARK_REMOTE"] = stack.enter_context(ConnectServer()).remote
            echo(f"Spark: the tasks use {env['WAP_SPARK_REMOTE']}")
        else:
            echo("Spark: each Spark task starts its own local JVM (--spark in-task)")
        echo(
            f"Airflow: {env['AIRFLOW__API__BASE_URL']} (user admin; the password is printed below, and kept in "
            f"{env['AIRFLOW_HOME']}); Ctrl-C stops Airflow and everything this command started"
        )
        airflow = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, start_new_session=True)

        def terminate(*_: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            return airflow.wait()
        except KeyboardInterrupt:
            echo("stopping Airflow and the Spark Connect server")
            stop_process_tree([airflow])
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)


def stop_process_tree(processes: list[subprocess.Popen[bytes]], grace: float = 30) -> None:
    """Stop `processes` and everything they started, whatever process group each moved to
    (an Airflow task supervisor starts each task in a new session): SIGTERM to every group,
    then, after `grace` seconds, SIGKILL to whatever is left. `grace=0`: SIGKILL at once, as
    when the machine they run on dies (the tests' fault injection)."""
    groups = set()
    for pid in {p.pid for p in processes} | _descendants({p.pid for p in processes}):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    for group in groups if grace > 0 else ():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    for process in processes:
        process.wait()


def _descendants(roots: set[int]) -> set[int]:
    """Every process below `roots`, from /proc (whatever session or group it moved to); none
    where there is no /proc (macOS: then only the roots' own groups are stopped)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
