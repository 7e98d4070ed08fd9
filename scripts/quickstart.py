"""The quick start: a week of sample orders through the silver and gold pipelines.

Runs each DAG with Airflow's `dag.test()` (in-process, no servers) for each day, then
prints the run ledger and the tables' partitions. Safe to run again: every step is
idempotent, so a second run publishes nothing new (its ledger rows say `skipped`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from sample_data.orders import ORDERS_PER_DAY, write_landing  # noqa: E402
from wap.embedded import prepare_airflow  # noqa: E402
from wap.settings import load_settings  # noqa: E402


def say(message: str) -> None:
    print(message, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2024, 1, 1))
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--orders-per-day", type=int, default=ORDERS_PER_DAY)
    parser.add_argument("--data-dir", type=Path, default=load_settings().data_dir)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    # Quiet Airflow's own task-runner logs; the pipeline's progress lines are shown below.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

    from wap.spark import check_java, get_spark

    say(f"java: {check_java()}")
    say(f"[1/4] preparing Airflow (SQLite metadata DB) under {data_dir / 'airflow'}")
    prepare_airflow(data_dir)

    files = write_landing(load_settings().landing_dir, args.start, args.days, args.orders_per_day)
    say(
        f"[2/4] generated {len(files)} landed files for {args.days} days from {args.start} in {load_settings().landing_dir}"
    )

    # Show the pipeline's own progress lines, not Airflow's task-runner chatter.
    progress = logging.getLogger("wap")
    progress.addHandler(_ProgressHandler())
    progress.setLevel(logging.INFO)
    progress.propagate = False
    from wap.embedded import run_dag

    # The first day alone, as a scheduled run does; the other days as one range run (a
    # backfill: one run, one pass of work, an outcome per day).
    last = args.start + dt.timedelta(days=args.days - 1)
    runs = [args.start.isoformat()]
    if args.days > 1:
        runs.append(f"{args.start + dt.timedelta(days=1)}/{last}" if args.days > 2 else last.isoformat())
    say("[3/4] running silver_orders then gold_daily_sales: the first day, then the other days as one range run")
    for key in runs:
        for dag_id in ("silver_orders", "gold_daily_sales"):
            say(f"  {key}  {dag_id}")
            started = time.monotonic()
            state = run_dag(dag_id, key)
            say(f"    -> {state} in {time.monotonic() - started:.1f}s")
            if "success" not in state:
                say(f"{dag_id} failed for {key}; see the log above and `.venv/bin/wap ledger`")
                return 1

    from wap import cli, tables

    say("[4/4] results\n")
    say(cli.show_ledger())
    say("")
    for name in tables.list_tables():
        say(cli.show_partitions(name) + "\n")
    say(cli.show_tables())
    say(f"lineage events: {data_dir / 'lineage' / 'events.jsonl'}")
    say(f"ledger: {load_settings().ledger_url}   (.venv/bin/wap ledger)")
    get_spark().stop()
    return 0


class _ProgressHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"    . {record.getMessage().splitlines()[0]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
