"""The embedded default: Airflow, lineage and storage on this machine, no servers.

Used by the quick start and the tests, so both run the DAGs the same way: a SQLite
Airflow metadata DB under the data folder, the repository's dags/ and plugins/, and
OpenLineage events written as JSON lines to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
