"""Which partitions of a pipeline need a run, and the backfill commands that fix exactly those.

A partition needs a run when it is `missing` (never published), `failed` or `quarantined`
(its latest attempt did not publish), or `stale` (published by other code than the
pipeline's current SQL + suite, `Pipeline.code_version`). The table's history says what
is live; the ledger says what was tried. Rolled-back partitions are reported, not
"fixed": rolling back was a decision. A latest attempt still `running` is `running` only
while it is alive; one that died (`ledger.dead_reason`: its process gone, its lease expired)
is `failed`. The planner only reads: the next attempt's reconcile records the death.

    wap plan silver_orders --from 2024-01-01 --to 2024-01-31

What it prints to fix them: range runs (`range_commands`), one run per stretch of consecutive
partitions that need one, at most the pipeline's `batch_size` partitions each; or Airflow's
own `backfill create`, one run per partition (`backfill_commands`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from wap import tables
from wap.errors import PartitionError
from wap.ledger import dead_reason
from wap.partition import Grain, Partition, PartitionRange, grain_of, key_of
from wap.partition import stretches as partition_stretches
from wap.pipeline import Pipeline
from wap.runtime import Runtime

NEEDS_RUN = ("missing", "failed", "quarantined", "stale")


@dataclass(frozen=True)
class PartitionState:
    partition: Partition
    state: str  # ok | missing | failed | quarantined | stale | rolled_back | running
    detail: str = ""


def plan(runtime: Runtime, pipeline: Pipeline, start: Partition, end: Partition) -> list[PartitionState]:
    """The state of every partition from `start` to `end` (inclusive), at the pipeline's grain."""
    if end < start:
        raise PartitionError(f"--to {end} is before --from {start}")
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = tables.load_table(pipeline.table, runtime.catalog)
    except NoSuchTableError:  # never published: every partition is missing
        table = None
    current = pipeline.code_version()
    now = dt.datetime.now(dt.UTC)
    latest: dict[str, dict[str, Any]] = {}
    for row in runtime.ledger.rows(pipeline.name):
        # Rows come oldest first; a superseded run lost to one that published, which counts.
        if key_of(start) <= row["partition"] <= key_of(end) and row["status"] != "superseded":
            latest[row["partition"]] = row
    states = []
    for day in pipeline.grain.between(start, end):
        live = tables.live_version(table, day) if table is not None else None
        last = latest.get(key_of(day)) or {}
        status = last.get("status")
        if status == "rolled_back":
            states.append(PartitionState(day, "rolled_back", f"snapshot {last['snapshot_id']}"))
        elif status == "running" and (died := dead_reason(last, now)) is not None:
            states.append(PartitionState(day, "failed", f"attempt died: {died} (run {last['run_id']})"))
        elif status == "running":
            if last["holder"]:
                held = f"in a step on {last['holder']}"
            else:  # no lease: a row from before leases, alive until stale
                held = "between tasks" if last["lease_until"] else "no lease"
            states.append(PartitionState(day, "running", f"run {last['run_id']} ({held})"))
        elif status in ("failed", "quarantined"):
            states.append(PartitionState(day, status, (last["error"] or "").splitlines()[0][:80]))
        elif live is None and status in ("published", "skipped"):
            # Published, but its commit left the history (snapshot expiry): the ledger says by what code.
            code = last["code_version"] or "?"
            state = "ok" if code == current else "stale"
            states.append(PartitionState(day, state, f"snapshot {last['snapshot_id']} (expired; from the ledger)"))
        elif live is None:
            states.append(PartitionState(day, "missing"))
        elif live.code_version != current:
            states.append(PartitionState(day, "stale", f"code {live.code_version or '?'} (now {current})"))
        else:
            states.append(PartitionState(day, "ok", f"snapshot {live.snapshot_id}"))
    return states


def stretches(states: list[PartitionState]) -> list[PartitionRange]:
    """The runs of consecutive partitions that need a run, as ranges (of one, or more)."""
    found = partition_stretches([key_of(s.partition) for s in states if s.state in NEEDS_RUN])
    return [span if isinstance(span, PartitionRange) else PartitionRange(span, span) for span in found]


def range_commands(dag_id: str, states: list[PartitionState], batch_size: int) -> list[str]:
    """`airflow dags trigger` commands of range runs covering exactly the partitions that need
    a run: one per stretch of consecutive partitions, cut into ranges of at most `batch_size`
    (a stretch of one partition is a run of that partition)."""
    import json

    commands = []
    for stretch in stretches(states):
        for n, batch in enumerate(stretch.batches(batch_size)):
            key = batch.key if len(batch) > 1 else key_of(batch.first)
            # A later batch's day before it is the previous batch's, which read its late
            # records already: no lookback run for it.
            conf = json.dumps({"partition": key} if n == 0 else {"partition": key, "lookback": False})
            commands.append(f"airflow dags trigger {dag_id} --conf '{conf}'")
    return commands


def rest_call(dag_id: str) -> str:
    """The REST form of `range_commands`' triggers (Airflow 3's public API), for one range."""
    return (
        f'curl -X POST "$AIRFLOW_URL/api/v2/dags/{dag_id}/dagRuns" -H "Authorization: Bearer $TOKEN" '
        """-H 'Content-Type: application/json' -d '{"logical_date": null, "conf": {"partition": "FIRST/LAST"}}'"""
    )


def backfill_commands(
    dag_id: str, states: list[PartitionState], max_active_runs: int = 3, grain: Grain | None = None
) -> list[str]:
    """`airflow backfill create` commands covering exactly the partitions that need a run
    (`grain`: the pipeline's, whose zone decides a local day's dates; default the values').

    One command per run of consecutive partitions; the reprocess behaviour is the least that
    re-runs them all: `none` creates runs for days Airflow never ran, `failed` also re-runs
    failed ones, `completed` also re-runs successful ones (stale partitions).
    """
    commands: list[str] = []
    group: list[PartitionState] = []
    for state in [*states, None]:
        needed = state is not None and state.state in NEEDS_RUN
        if (
            state is not None
            and needed
            and group
            and grain_of(state.partition).next(group[-1].partition) == state.partition
        ):
            group.append(state)
            continue
        if group:
            kinds = {s.state for s in group}
            behavior = "completed" if "stale" in kinds else "failed" if kinds & {"failed", "quarantined"} else "none"
            commands.append(
                f"airflow backfill create --dag-id {dag_id} --from-date {_cli_date(group[0].partition, grain)} "
                f"--to-date {_cli_date(group[-1].partition, grain, end=True)} --reprocess-behavior {behavior} "
                f"--max-active-runs {max_active_runs}"
            )
        group = [state] if state is not None and needed else []
    return commands


def _cli_date(partition: Partition, grain: Grain | None = None, end: bool = False) -> str:
    """A partition's bound as `airflow backfill create` takes it (both ends included).

    UTC days: the date. Hours and local days: the start, or for the end its last second, in
    UTC (Airflow reads a bare date as UTC midnight, which is not a local day's logical date),
    so that a schedule that runs a few minutes past the hour (logical date HH:10) is covered too.
    """
    grain = grain or grain_of(partition)
    if grain.name == "daily" and not grain.zoned:
        return str(partition)
    start, stop = grain.window(partition)
    return (stop - dt.timedelta(seconds=1) if end else start).isoformat()
