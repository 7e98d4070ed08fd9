"""Look at what happened: the run ledger and each table's live partitions.

python -m wap.cli ledger [--pipeline silver_orders] [--partition 2024-01-03]
python -m wap.cli partitions silver.orders
python -m wap.cli tables
python -m wap.cli quarantine list|show|release|discard ...   (see wap.quarantine)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from wap import quarantine, tables
from wap.ledger import Ledger
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


def show_ledger(pipeline: str | None = None, partition: str | None = None) -> str:
    rows = Ledger().rows(pipeline, partition)
    for row in rows:
        if row.get("finished_at"):
            row["finished_at"] = row["finished_at"].strftime("%Y-%m-%d %H:%M:%S")
        if row.get("error"):
            row["error"] = row["error"].splitlines()[0][:60]
    return render(rows, LEDGER_COLUMNS)


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wap.cli", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ledger = commands.add_parser("ledger", help="ledger rows, one per attempt")
    ledger.add_argument("--pipeline")
    ledger.add_argument("--partition")
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
    args = parser.parse_args(argv)
    if args.command == "quarantine":
        try:
            print(quarantine_command(args))
        except quarantine.QuarantineError as exc:
            parser.exit(1, f"error: {exc}\n")
        return
    if args.command == "ledger":
        print(show_ledger(args.pipeline, args.partition))
    elif args.command == "partitions":
        for name in [args.table] if args.table else list_tables():
            print(show_partitions(name), end="\n\n")
    else:
        print(show_tables())


if __name__ == "__main__":
    main()
