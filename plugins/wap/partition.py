"""The one partition a run is bound to, resolved once, the same way for every DAG.

Order of precedence (DESIGN.md, "Resolve"):
1. `params["partition"]`: a manual override, e.g. `airflow dags trigger -c '{"partition": "2024-01-31"}'`;
2. `dag_run.partition_key`: Airflow 3.2+ partitioned runs (partitioned asset events);
3. `logical_date`: scheduled and backfill runs. Its UTC calendar day is the partition.

`data_interval_start` is never used: for a CLI-triggered run it is "now".
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

# Strict ISO calendar date. Anything else (paths, SQL, times, whitespace) is rejected
# before it can reach a path or a query.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# A partition key may also be a midnight timestamp (CronPartitionTimetable's default key format).
_MIDNIGHT_KEY = re.compile(r"(\d{4}-\d{2}-\d{2})T00:00:00(?:Z|\+00:00)?")

HOW_TO_PASS = (
    'Pass a partition: trigger with conf {"partition": "YYYY-MM-DD"}, '
    "or run with a logical date (scheduled run, backfill, or dag.test(logical_date=...))."
)


class PartitionError(ValueError):
    """The run has no partition, or the value given is not a valid one."""


def parse_partition(value: object, *, source: str = "partition") -> dt.date:
    """Validate a partition value and return it as a date; raise `PartitionError` otherwise."""
    if isinstance(value, dt.datetime):
        return _utc_day(value)
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise PartitionError(f"{source} must be a date as YYYY-MM-DD, got {shown}. {HOW_TO_PASS}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise PartitionError(f"{source} {value!r} is not a real calendar date: {exc}") from None


def resolve_partition(context: Mapping[str, Any]) -> dt.date:
    """Return the partition of the run described by an Airflow task context."""
    params = context.get("params") or {}
    override = params.get("partition") if isinstance(params, Mapping) else None
    if override not in (None, ""):
        return parse_partition(override, source='params["partition"]')

    dag_run = context.get("dag_run")
    key = getattr(dag_run, "partition_key", None) or context.get("partition_key")
    if key:
        midnight = _MIDNIGHT_KEY.fullmatch(str(key))
        return parse_partition(midnight.group(1) if midnight else key, source="dag_run.partition_key")

    logical_date = context.get("logical_date")
    if logical_date is not None:
        return _utc_day(logical_date)

    raise PartitionError(
        f"This run has no partition: no params['partition'], no partition key and no logical date. {HOW_TO_PASS}"
    )


def _utc_day(moment: dt.datetime) -> dt.date:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.date()
