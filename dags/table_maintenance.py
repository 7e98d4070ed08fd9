"""Table upkeep: expire old Iceberg snapshots and delete the files no snapshot uses.

Daily, for every table in the catalog (one mapped task each): snapshots older than the
rollback window go (the current one and the most recent few stay), then staged and
quarantined files that no remaining snapshot references and that are older than the
safety margin are deleted; quarantined runs awaiting a decision are kept. The window is
how far back `wap.cli rollback` can reach. Settings: `WAP_ROLLBACK_WINDOW_DAYS` (7),
`WAP_ORPHAN_MARGIN_HOURS` (24), or this DAG's params for one run; see `wap.maintenance`.
"""

import datetime as dt

from airflow.sdk import CronTriggerTimetable, Param, dag

from wap.tasks import DEFAULT_ARGS, catalog_tables, maintain_table


@dag(
    # Upkeep is not about a day's data: a trigger at 03:00 UTC, after the daily pipelines start.
    schedule=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    params={
        "dry_run": Param(False, type="boolean", title="Dry run", description="List what would go; change nothing."),
        "window_days": Param(
            None,
            type=["null", "number"],
            minimum=0,
            title="Rollback window (days)",
            description="Empty: WAP_ROLLBACK_WINDOW_DAYS or 7.",
        ),
        "margin_hours": Param(
            None,
            type=["null", "number"],
            minimum=0,
            title="Orphan margin (hours)",
            description="Empty: WAP_ORPHAN_MARGIN_HOURS or 24.",
        ),
    },
    default_args={"owner": "data-platform", **DEFAULT_ARGS},
    tags=["maintenance", "iceberg"],
    doc_md=__doc__,
)
def table_maintenance():
    maintain_table.override(task_id="maintain").expand(table=catalog_tables())


table_maintenance()
