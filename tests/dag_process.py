"""Run DAGs with dag.test() in a fresh process, as a worker would, then gate small frames with
the gate (`audit.audit`); print the outcome as one JSON line (`RESULT {...}`).

The environment chooses the Spark session (`WAP_SPARK_REMOTE=sc://...` for Spark Connect)
and the data folder (`WAP_DATA_DIR`): a test process that already holds a classic session
cannot switch (`get_spark` returns the active session), a fresh process can.

    python tests/dag_process.py '{"runs": [["silver_orders", "2024-01-01"]], "probes": {}}'

`probes`: {name: {"schema": DDL, "rows": [[...], ...], "expectations": [...]}}.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


def gate_probes(spark: Any, probes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each probe's frame through the gate (`audit.audit`, the frame's own schema as the
    contract): its findings as JSON-ready dicts, and whether the frame was left cached."""
    from pyspark.storagelevel import StorageLevel

    from wap import audit

    out = {}
    for name, probe in probes.items():
        frame = spark.createDataFrame([tuple(row) for row in probe["rows"]], probe["schema"])
        columns = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
        contract = {"version": 1, "partition_column": frame.columns[0], "columns": columns}
        suite = {"name": name, "expectations": probe["expectations"], "meta": {"contract": contract}}
        report, _ = audit.audit(frame, suite)
        # Through JSON, as the ledger keeps them, so both sides compare alike.
        findings = json.loads(json.dumps([dataclasses.asdict(f) for f in report.findings], default=str))
        out[name] = {"findings": findings, "left_cached": frame.storageLevel != StorageLevel.NONE}
    return out


def main() -> None:
    import datetime as dt
    import os
    import sys

    from airflow.dag_processing.dagbag import DagBag
    from pyspark import SparkContext

    from wap.spark import get_spark

    command = json.loads(sys.argv[1])
    states = []
    for dag_id, day in command.get("runs", []):
        # A fresh DAG object per run, as conftest's FreshDags: a run's conf would leak into the next.
        dag = DagBag(os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], f"{dag_id}.py")).dags[dag_id]
        run = dag.test(logical_date=dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=dt.UTC))
        states.append([dag_id, day, str(run.state)])
    spark = get_spark()  # the session the tasks used (the active one)
    probes = gate_probes(spark, command.get("probes", {}))
    result = {
        "states": states,
        "probes": probes,
        "session": f"{type(spark).__module__}.{type(spark).__name__}",
        # Nothing (GX included) started a JVM of its own in this process.
        "local_jvm": SparkContext._active_spark_context is not None,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
