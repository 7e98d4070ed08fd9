"""Run silver_orders for one day in a fresh process, as a worker would, with the lineage
transport the environment configures; print the run's state and duration as JSON.

    python tests/lineage_run.py 2024-01-02
"""

import datetime as dt
import json
import os
import sys
import time

from airflow.dag_processing.dagbag import DagBag

day = dt.date.fromisoformat(sys.argv[1])
dag = DagBag(os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], "silver_orders.py")).dags["silver_orders"]
started = time.perf_counter()
run = dag.test(logical_date=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
print("RESULT", json.dumps({"state": str(run.state), "seconds": round(time.perf_counter() - started, 1)}))
