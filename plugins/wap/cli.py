"""Look at what happened: the run ledger and each table's live partitions.

python -m wap.cli ledger [--pipeline silver_orders] [--partition 2024-01-03] [--details]
python -m wap.cli partitions silver.orders
python -m wap.cli tables
python -m wap.cli quarantine list|show|release|discard ...   (see wap.quarantine)
python -m wap.cli plan silver_orders --from 2024-01-01 --to 2024-01-31   (see wap.planner)
python -m wap.cli versions silver_orders 2024-01-03
python -m wap.cli rollback silver_orders [--partition 2024-01-03] --to-snapshot ID --reason ...
python -m wap.cli maintain [--table silver.orders] [--dry-run] [--window-days 7] [--margin-hours 24]
python -m wap.cli new web_sessions [--grain daily|hourly] [--source files[:dataset]|postgres[:schema.table]]
python -m wap.cli run web_sessions --from 2024-01-01T05 [--to 2024-01-01T08]   (embedded: dag.test, no servers)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from wap import quarantine, tables, template
from wap.ledger import Ledger
from wap.partition import key_of
from wap.settings import load_settings


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table (no dependency, pipes cleanly)."""
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body]) if body else f"{line}\n{rule}\n(no rows)"


LEDGER_COLUMNS = (
    "pipeline",
    "partition",
    "try_number",
    "status",
    "rows_in",
    "rows_out",
    "checksum",
    "snapshot_id",
    "finished_at",
    "run_id",
    "error",
)


def show_ledger(pipeline: str | None = None, partition: str | None = None, details: bool = False) -> str:
    """The ledger as a table (errors cut to a line), or with `details` every row in full."""
    rows = Ledger().rows(pipeline, partition)
    if details:
        return "\n\n".join(_row_in_full(row) for row in rows) or "(no rows)"
    cut = False
    for row in rows:
        if row.get("finished_at"):
            row["finished_at"] = row["finished_at"].strftime("%Y-%m-%d %H:%M:%S")
        if row.get("error"):
            short = row["error"].splitlines()[0][:60]
            cut, row["error"] = cut or short != row["error"], short
    hint = "\n(errors cut to fit: --details shows every row in full)" if cut else ""
    return render(rows, LEDGER_COLUMNS) + hint


def _row_in_full(row: dict[str, Any]) -> str:
    import json

    lines = [f"{key}: {row[key]}" for key in row if key not in ("error", "details") and row[key] is not None]
    if row.get("error"):
        lines.append("error:\n  " + row["error"].replace("\n", "\n  "))
    if row.get("details"):
        lines.append("details:\n  " + json.dumps(json.loads(row["details"]), indent=2).replace("\n", "\n  "))
    return "\n".join(lines)


def show_partitions(identifier: str) -> str:
    table = tables.load_table(identifier)
    overview = render(
        tables.partitions_overview(table), ("partition", "rows", "files", "snapshot_id", "checksum", "run_id")
    )
    return f"{identifier}  ({table.location()})\n{overview}"


def list_tables() -> list[str]:
    catalog = tables.get_catalog()
    return sorted(".".join(ident) for ns in catalog.list_namespaces() for ident in catalog.list_tables(ns))


def show_tables() -> str:
    settings = load_settings()
    lines = [f"catalog {settings.catalog_name}: {settings.catalog_uri}", f"warehouse: {settings.warehouse}"]
    lines += [f"  {name}  {tables.load_table(name).location()}" for name in list_tables()]
    return "\n".join(lines)


def quarantine_command(args: argparse.Namespace) -> str:
    if args.action == "list":
        rows = quarantine.quarantined(args.pipeline)
        for row in rows:
            row["error"] = (row["error"] or "").removeprefix("quality gate failed: ")[:80]
        return render(rows, ("pipeline", "partition", "run_id", "try_number", "finished_at", "error"))
    if args.action == "show":
        return quarantine.describe(quarantine.find(args.pipeline, args.partition, args.token))
    if args.action == "release":
        result = quarantine.release(
            args.pipeline, args.partition, reason=args.reason, run_token=args.token, force=args.force
        )
        return (
            f"released: {args.pipeline} {args.partition} is {result['status']} (snapshot {result['snapshot_id']}, "
            f"{result['rows']} rows). Pipelines that wait for this table's asset events are not triggered "
            f"by a release: trigger them for {args.partition} if they should see it."
        )
    result = quarantine.discard(args.pipeline, args.partition, reason=args.reason, run_token=args.token)
    return f"discarded: quarantined run {result['run_id']} of {args.pipeline} {args.partition}; its files are deleted"


def plan_command(args: argparse.Namespace) -> str:
    from wap import planner
    from wap.pipeline import find_pipeline

    pipeline = find_pipeline(args.pipeline)
    start = pipeline.grain.parse(args.start, source="--from")
    end = pipeline.grain.parse(args.end, source="--to")
    states = planner.plan(pipeline, start, end)
    table = render([{**vars(s), "partition": key_of(s.partition)} for s in states], ("partition", "state", "detail"))
    # A merged table's runs build on each other's versions: one at a time.
    runs = args.max_active_runs or (1 if pipeline.merge else 3)
    commands = planner.backfill_commands(args.dag_id or args.pipeline, states, runs)
    running = [key_of(s.partition) for s in states if s.state == "running"]
    if commands:
        todo = "\n".join(commands)
    elif running:  # a live attempt: wait for it (a dead one is `failed`, with a command above)
        todo = f"nothing to start: {len(running)} partition(s) have a live attempt running ({', '.join(running[:5])})"
    else:
        todo = "nothing to do: every partition is published by the current code"
    return f"{table}\n\n{todo}"


def run_command(args: argparse.Namespace) -> int:
    """Run a DAG embedded for each partition from --from to --to; 0 if every run succeeded."""
    from wap.embedded import prepare_airflow, run_dag
    from wap.pipeline import declared_in

    path = load_settings().dags_dir / f"{args.dag_id}.py"
    try:
        # The keys are read at the grain of the DAG's own pipeline, and validated before anything runs.
        declared = declared_in(path) if path.is_file() else []
        if not declared:
            raise LookupError(f"no DAG file {path} declaring a pipeline")
        grain = declared[0].grain
        first = grain.parse(args.start, source="--from")
        last = grain.parse(args.end or args.start, source="--to")
        if last < first:
            raise ValueError(f"--to {grain.key(last)} is before --from {grain.key(first)}")
    except (LookupError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the runs' outcomes, not Airflow's chatter
    prepare_airflow(load_settings().data_dir)
    failed = 0
    for value in grain.between(first, last):
        state = run_dag(args.dag_id, key_of(value))
        print(f"{args.dag_id} {key_of(value)}: {state}", flush=True)
        failed += "success" not in state
    print(f"\n{show_ledger(args.dag_id)}")
    return 1 if failed else 0


def versions_command(args: argparse.Namespace) -> str:
    from wap.pipeline import find_pipeline

    pipeline = find_pipeline(args.pipeline)
    table = tables.load_table(pipeline.table)
    rows = [vars(v) for v in tables.versions(table, pipeline.grain.parse(args.partition))]
    return render(rows, ("snapshot_id", "committed_at", "rows", "checksum", "code_version", "run_id"))


def rollback_command(args: argparse.Namespace) -> str:
    from wap import rollback
    from wap.pipeline import find_pipeline

    pipeline = find_pipeline(args.pipeline)
    if args.partition:
        result = rollback.rollback_partition(
            pipeline, pipeline.grain.parse(args.partition), args.to_snapshot, args.reason
        )
        return f"{pipeline.table} {result['partition']}: {result['status']} (snapshot {result['snapshot_id']})"
    changed = rollback.rollback_table(pipeline, args.to_snapshot, args.reason)
    return render(changed, ("partition", "status", "snapshot_id"))


UPKEEP_COLUMNS = (
    "table",
    "snapshots_expired",
    "snapshots_left",
    "files_removed",
    "bytes_freed",
    "runs_removed",
    "quarantined_runs_held",
    "unrecorded_partitions",
)


def maintain_command(args: argparse.Namespace) -> str:
    from pyiceberg.exceptions import NoSuchTableError

    from wap import maintenance

    retention = maintenance.Retention.from_env(args.window_days, args.margin_hours)
    try:
        results = maintenance.maintain([args.table] if args.table else None, retention, dry_run=args.dry_run)
    except NoSuchTableError as exc:
        raise LookupError(f"{exc} (python -m wap.cli tables lists them)") from None
    text = render([r.counts() for r in results], UPKEEP_COLUMNS)
    for r in results if args.dry_run else ():
        loose = [f for f in r.removed if not f.startswith(tuple(f"{run}/" for run in r.runs_removed))]
        text += "".join(f"\n{r.table}: would expire snapshot {s}" for s in r.expired)
        text += "".join(f"\n{r.table}: would remove {path}" for path in [*r.runs_removed, *loose])
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wap.cli", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ledger = commands.add_parser("ledger", help="ledger rows, one per attempt")
    ledger.add_argument("--pipeline")
    ledger.add_argument("--partition")
    ledger.add_argument("--details", action="store_true", help="every row in full: the whole error, the details")
    partitions = commands.add_parser("partitions", help="a table's live partitions")
    partitions.add_argument("table", nargs="?", help="e.g. silver.orders (default: every table)")
    commands.add_parser("tables", help="tables and where they are")
    held = commands.add_parser("quarantine", help="runs the quality gate blocked: inspect, release, discard")
    actions = held.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="quarantined runs").add_argument("--pipeline")
    for action, text in (
        ("show", "what failed, samples, where the files are"),
        ("release", "publish the quarantined data anyway (a human decision, recorded)"),
        ("discard", "delete the quarantined files (recorded)"),
    ):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("pipeline")
        sub.add_argument("partition")
        sub.add_argument("--token", help="a specific attempt (default: the partition's latest quarantined run)")
        if action != "show":
            sub.add_argument("--reason", required=True, help="why; kept in the ledger with your user name")
        if action == "release":
            sub.add_argument("--force", action="store_true", help="even if a later run published the partition")
    planning = commands.add_parser("plan", help="partitions missing, failed, quarantined or stale; the backfill")
    planning.add_argument("pipeline")
    planning.add_argument("--from", dest="start", required=True, help="first partition, YYYY-MM-DD (hourly: THH)")
    planning.add_argument("--to", dest="end", required=True, help="last partition (included)")
    planning.add_argument("--dag-id", help="the DAG that runs the pipeline (default: the pipeline's name)")
    planning.add_argument("--max-active-runs", type=int, help="default 3; 1 for a merged table")
    listing = commands.add_parser("versions", help="every published version of a partition still in history")
    listing.add_argument("pipeline")
    listing.add_argument("partition")
    back = commands.add_parser("rollback", help="make an earlier published version live again (recorded)")
    back.add_argument("pipeline")
    back.add_argument("--partition", help="one partition (default: the whole table)")
    back.add_argument("--to-snapshot", type=int, required=True, help="a snapshot id from `versions`")
    back.add_argument("--reason", required=True, help="why; kept in the ledger with your user name")
    upkeep = commands.add_parser("maintain", help="expire old snapshots, delete files no snapshot uses")
    upkeep.add_argument("--table", help="one table, e.g. silver.orders (default: every table)")
    upkeep.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    upkeep.add_argument("--window-days", type=float, help="rollback window (default: WAP_ROLLBACK_WINDOW_DAYS or 7)")
    upkeep.add_argument("--margin-hours", type=float, help="orphan age margin (default: WAP_ORPHAN_MARGIN_HOURS or 24)")
    template.add_parser(commands)
    running = commands.add_parser("run", help="run a DAG here for each partition of a range (dag.test, no servers)")
    running.add_argument("dag_id")
    running.add_argument("--from", dest="start", required=True, help="first partition, YYYY-MM-DD (hourly: THH)")
    running.add_argument("--to", dest="end", help="last partition (default: the first)")
    args = parser.parse_args(argv)
    if args.command == "run":
        parser.exit(run_command(args))
    if args.command in ("plan", "versions", "rollback", "maintain", "new"):
        from wap.rollback import RollbackError

        run = {
            "plan": plan_command,
            "versions": versions_command,
            "rollback": rollback_command,
            "maintain": maintain_command,
            "new": template.run,
        }[args.command]
        try:
            print(run(args))
        except (RollbackError, LookupError, ValueError) as exc:
            parser.exit(1, f"error: {exc}\n")
        return
    if args.command == "quarantine":
        try:
            print(quarantine_command(args))
        except (LookupError, ValueError) as exc:  # QuarantineError, a refused suite, an unknown pipeline
            parser.exit(1, f"error: {exc}\n")
        return
    if args.command == "ledger":
        print(show_ledger(args.pipeline, args.partition, args.details))
    elif args.command == "partitions":
        for name in [args.table] if args.table else list_tables():
            print(show_partitions(name), end="\n\n")
    else:
        print(show_tables())


if __name__ == "__main__":
    main()
