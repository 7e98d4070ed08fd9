"""The `wap` command: look at what happened (the run ledger, each table's live partitions) and act on it.

    wap ledger [--pipeline silver_orders] [--partition 2024-01-03] [--details]
    wap partitions [silver.orders]
    wap tables
    wap quarantine list|show|release|discard ...   (see wap.quarantine)
    wap plan silver_orders --from 2024-01-01 --to 2024-01-31   (see wap.planner)
    wap versions silver_orders 2024-01-03
    wap rollback silver_orders [--partition 2024-01-03] --to-snapshot ID --reason ...
    wap maintain [--table silver.orders] [--dry-run] [--window-days 7] [--margin-hours 24]
    wap check [silver_orders ...]   (the suite, the SQL and its result against the contract; no data)
    wap preview silver_orders 2024-01-03 [--rows 10]   (the transform and the gate on landed data; nothing written)
    wap new web_sessions [--grain daily|hourly] [--zone Z] [--source files[:dataset]|postgres[:schema.table]]
                         [--shape S] [--format F]
    wap run web_sessions --from 2024-01-01T05 [--to 2024-01-01T08]   (embedded: dag.test, no servers; range runs)
    wap airflow [--port 8080] [--spark server|in-task]   (a local Airflow: standalone + one shared Spark Connect server)

`make install` puts the `wap` command in `.venv/bin` (an editable install of this package);
`python -m wap.cli ...` is the same command where it is not installed
(the Airflow containers, which find the package through `plugins/`).

Every listing command (ledger, partitions, tables, quarantine list|show, plan, versions,
maintain) takes `--output json` (`-o json`): the same rows as objects with the same fields,
dates and times in ISO 8601, nothing cut to fit, for scripts; `text` (the default) is for people.

Exit codes (errors are translated here, once: `_WapGroup.invoke`):

    0   success
    1   an error a retry cannot fix: bad data, a bad request or declaration
        (`wap.errors.DataError`, or a `ValueError`/`LookupError` from below)
    2   a usage error: an unknown command or option, a missing or malformed argument (click's)
    3   a setup problem: this machine lacks something, e.g. Java (`wap.errors.SetupError`)
    75  a transient error: the same command may succeed when tried again
        (`wap.errors.TransientError`; EX_TEMPFAIL of sysexits.h)

`wap run` runs its range as range runs of at most the pipeline's `batch_size` partitions (one
run per partition with --per-partition), tries every one, then exits 0 if every run succeeded
and 1 if any did not (each run's state is printed, then the pipeline's ledger); a range it cannot run
(no such DAG, a bad key, --to before --from) is refused before anything runs, with 1.
An error that is none of the above is a bug: Python prints its traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import decimal
import json
import logging
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from wap import partition, quarantine, tables, template
from wap.errors import SetupError, WapError
from wap.partition import MAX_RANGE, PartitionRange, key_of
from wap.runtime import Runtime
from wap.settings import load_settings

if TYPE_CHECKING:
    from wap.check import Checked
    from wap.maintenance import Upkeep
    from wap.preview import Previewed

EXIT_OK = 0
EXIT_FAILED = 1  # a retry cannot fix it
EXIT_USAGE = 2  # click's own, for a command line it cannot parse
EXIT_SETUP = 3
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: try again later

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
PARTITION_COLUMNS = ("partition", "rows", "files", "snapshot_id", "checksum", "run_id")
QUARANTINE_COLUMNS = ("pipeline", "partition", "run_id", "try_number", "finished_at", "error")
PLAN_COLUMNS = ("partition", "state", "detail")
VERSION_COLUMNS = ("snapshot_id", "committed_at", "rows", "checksum", "code_version", "run_id")
ROLLBACK_COLUMNS = ("partition", "status", "snapshot_id")
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


# --- rendering: every command's result is written by one Output ------------------------------


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table (no dependency, pipes cleanly)."""
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body]) if body else f"{line}\n{rule}\n(no rows)"


@dataclasses.dataclass(frozen=True)
class TableListing:
    """One table's live partitions, as `partitions` lists them."""

    table: str
    location: str
    partitions: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `plan` found: each partition's state, and what to run about it."""

    states: list[dict[str, Any]]  # partition (its key), state, detail
    commands: list[str]  # range runs covering exactly the partitions that need a run
    backfill: list[str]  # or: Airflow's backfills of the same partitions, one run per partition
    running: list[str]  # partitions with a live attempt
    rest: str = ""  # the REST call that triggers one range run
    zone: str = "UTC"  # the time zone whose calendar days the keys are (a daily grain's)


class Output(ABC):
    """How a command's result is written: `--output text` (for people) or `json` (for programs).

    The commands gather; these render. Each method returns the text to print.
    """

    @abstractmethod
    def ledger(self, rows: list[dict[str, Any]], details: bool) -> str: ...

    @abstractmethod
    def partitions(self, listings: list[TableListing]) -> str: ...

    @abstractmethod
    def catalog(self, name: str, uri: str, warehouse: str, listed: list[tuple[str, str]]) -> str: ...

    @abstractmethod
    def quarantined(self, rows: list[dict[str, Any]]) -> str: ...

    @abstractmethod
    def quarantined_run(self, row: dict[str, Any]) -> str: ...

    @abstractmethod
    def plan(self, plan: Plan) -> str: ...

    @abstractmethod
    def versions(self, versions: list[tables.PublishedVersion]) -> str: ...

    @abstractmethod
    def maintained(self, results: list[Upkeep], dry_run: bool) -> str: ...

    @abstractmethod
    def checked(self, results: list[Checked]) -> str: ...

    @abstractmethod
    def previewed(self, shown: Previewed) -> str: ...


class TextOutput(Output):
    """Tables a person reads: long values cut to a line (the JSON has them whole)."""

    def ledger(self, rows: list[dict[str, Any]], details: bool) -> str:
        if details:
            return "\n\n".join(self._row_in_full(row) for row in rows) or "(no rows)"
        cut, shown = False, []
        for row in rows:
            row = dict(row)
            if row.get("finished_at"):
                row["finished_at"] = row["finished_at"].strftime("%Y-%m-%d %H:%M:%S")
            if row.get("error"):
                short = row["error"].splitlines()[0][:60]
                cut, row["error"] = cut or short != row["error"], short
            shown.append(row)
        hint = "\n(errors cut to fit: --details shows every row in full)" if cut else ""
        return render(shown, LEDGER_COLUMNS) + hint

    @staticmethod
    def _row_in_full(row: dict[str, Any]) -> str:
        lines = [f"{key}: {row[key]}" for key in row if key not in ("error", "details") and row[key] is not None]
        if row.get("error"):
            lines.append("error:\n  " + row["error"].replace("\n", "\n  "))
        if row.get("details"):
            lines.append("details:\n  " + json.dumps(json.loads(row["details"]), indent=2).replace("\n", "\n  "))
        return "\n".join(lines)

    def partitions(self, listings: list[TableListing]) -> str:
        return "".join(f"{self.table_partitions(listing)}\n\n" for listing in listings)

    @staticmethod
    def table_partitions(listing: TableListing) -> str:
        return f"{listing.table}  ({listing.location})\n{render(listing.partitions, PARTITION_COLUMNS)}"

    def catalog(self, name: str, uri: str, warehouse: str, listed: list[tuple[str, str]]) -> str:
        lines = [f"catalog {name}: {uri}", f"warehouse: {warehouse}"]
        return "\n".join(lines + [f"  {name}  {location}" for name, location in listed])

    def quarantined(self, rows: list[dict[str, Any]]) -> str:
        cut = [{**row, "error": (row["error"] or "").removeprefix("quality gate failed: ")[:80]} for row in rows]
        return render(cut, QUARANTINE_COLUMNS)

    def quarantined_run(self, row: dict[str, Any]) -> str:
        return quarantine.describe(row)

    def plan(self, plan: Plan) -> str:
        if plan.commands:
            todo = "\n".join(
                [
                    *plan.commands,
                    "",
                    "or over Airflow's REST API, for each range:",
                    f"  {plan.rest}",
                    "or one run per partition (Airflow's backfill):",
                    *(f"  {command}" for command in plan.backfill),
                ]
            )
        elif plan.running:  # a live attempt: wait for it (a dead one is `failed`, with a command above)
            todo = (
                f"nothing to start: {len(plan.running)} partition(s) have a live attempt running "
                f"({', '.join(plan.running[:5])})"
            )
        else:
            todo = "nothing to do: every partition is published by the current code"
        zone = f"partitions are days in {plan.zone} (keys are its local dates)\n\n" if plan.zone != "UTC" else ""
        return f"{zone}{render(plan.states, PLAN_COLUMNS)}\n\n{todo}"

    def versions(self, versions: list[tables.PublishedVersion]) -> str:
        return render([dataclasses.asdict(v) for v in versions], VERSION_COLUMNS)

    def maintained(self, results: list[Upkeep], dry_run: bool) -> str:
        text = render([r.counts() for r in results], UPKEEP_COLUMNS)
        for r in results if dry_run else ():
            loose = [f for f in r.removed if not f.startswith(tuple(f"{run}/" for run in r.runs_removed))]
            text += "".join(f"\n{r.table}: would expire snapshot {s}" for s in r.expired)
            text += "".join(f"\n{r.table}: would remove {path}" for path in [*r.runs_removed, *loose])
        return text

    def checked(self, results: list[Checked]) -> str:
        blocks = []
        for found in results:
            lines = [f"{found.pipeline}:", *(f"  [{p.part}] {p.message}" for p in found.problems)]
            lines += [f"  note: {note}" for note in found.notes]
            count = len(found.problems)
            lines.append(f"  {count} problem{'s' if count != 1 else ''}" if count else "  ok")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def previewed(self, shown: Previewed) -> str:
        lines = [f"{shown.pipeline} {shown.partition}: a preview (nothing staged, published or recorded)", "", "read:"]
        for read in shown.sources:
            rejected = sum(read["rejected"].values())
            lines.append(
                f"  {read['view']}: {read['records']:,} records read, {read['own_records']:,} in the partition's "
                f"own folder, {rejected:,} rejected"
            )
            lines += [f"    {count:,}  {reason}" for reason, count in sorted(read["rejected"].items())]
            lines += [f"    e.g. {r['file']}: {r['reason']}: {r['record']}" for r in read["sample"]]
            if read["late"]:
                lines.append(f"    late records for earlier partitions: {read['late']}")
        if shown.rows is None:
            lines += ["", "the run would stop at its rejects: the SQL is not run"]
        else:
            lines += ["", f"result: {shown.rows:,} rows, checksum {shown.checksum}"]
            columns = list(shown.columns)
            sample = [{c: _plain(v) if v is not None else None for c, v in row.items()} for row in shown.sample]
            lines += ["  " + line for line in render(sample, columns).splitlines()]
            if shown.rows > len(shown.sample):
                lines.append(f"  ({len(shown.sample)} of {shown.rows:,} rows; --rows N shows more)")
        verdict = "passes" if shown.passed else "would BLOCK the publish (the run is quarantined)"
        lines += ["", f"gate: {verdict}"]
        from wap.audit import TYPED

        found = {(f["check"], f["column"]): f for f in shown.findings}
        typed = [c for c in shown.checks if c["check"] == TYPED]
        if typed and all(c["success"] for c in typed):  # one line for the contract's columns, all as declared
            lines.append(f"  {'ok':<8} {TYPED}: all {len(typed)} columns as declared")
        for check in shown.checks:
            if check in typed and check["success"]:
                continue
            finding = found.get((check["check"], check["column"]))
            severity = finding["severity"] if finding else check["severity"]
            state = "ok" if check["success"] else ("FAILED" if severity == "blocking" else "warning")
            named = f"{check['check']}({check['column']})" if check["column"] else check["check"]
            said = _said(finding) if finding else ""
            lines.append(f"  {state:<8} {named}" + (f": {str(said)[:160]}" if said else ""))
        return "\n".join(lines)


class JsonOutput(Output):
    """JSON for programs: a list of objects per listing (one object for `quarantine show` and
    `plan`), the fields the text shows and the rest of the record, nothing cut, ISO 8601 times."""

    @staticmethod
    def dump(value: Any) -> str:
        return json.dumps(value, indent=2, default=_plain)

    @staticmethod
    def _ledger_row(row: dict[str, Any]) -> dict[str, Any]:
        details = row.get("details")
        return {**row, "details": json.loads(details) if details else None}

    def ledger(self, rows: list[dict[str, Any]], details: bool) -> str:
        return self.dump([self._ledger_row(row) for row in rows])  # always in full

    def partitions(self, listings: list[TableListing]) -> str:
        return self.dump([{"table": t.table, **row} for t in listings for row in t.partitions])

    def catalog(self, name: str, uri: str, warehouse: str, listed: list[tuple[str, str]]) -> str:
        return self.dump([{"table": name, "location": location} for name, location in listed])

    def quarantined(self, rows: list[dict[str, Any]]) -> str:
        return self.dump([self._ledger_row(row) for row in rows])

    def quarantined_run(self, row: dict[str, Any]) -> str:
        findings = [dataclasses.asdict(f) for f in quarantine.findings(row)]
        return self.dump({**self._ledger_row(row), "findings": findings, "files": quarantine.files(row)})

    def plan(self, plan: Plan) -> str:
        return self.dump(
            {
                "partitions": plan.states,
                "ranges": plan.commands,
                "rest": plan.rest,
                "backfill": plan.backfill,
                "running": plan.running,
                "zone": plan.zone,
            }
        )

    def versions(self, versions: list[tables.PublishedVersion]) -> str:
        return self.dump([dataclasses.asdict(v) for v in versions])

    def maintained(self, results: list[Upkeep], dry_run: bool) -> str:
        return self.dump(
            [
                {
                    **r.counts(),
                    "expired_snapshots": r.expired,
                    "removed_files": r.removed,
                    "removed_runs": r.runs_removed,
                    "held_runs": r.held,
                    "unrecorded": r.unrecorded,
                }
                for r in results
            ]
        )

    def checked(self, results: list[Checked]) -> str:
        return self.dump([{**dataclasses.asdict(r), "ok": r.ok} for r in results])

    def previewed(self, shown: Previewed) -> str:
        return self.dump(dataclasses.asdict(shown))


def _plain(value: Any) -> Any:
    """What `json` cannot write itself: times as ISO 8601, the rest as plain values."""
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)  # a Path, an enum: their text


OUTPUTS: dict[str, type[Output]] = {"text": TextOutput, "json": JsonOutput}
TEXT = TextOutput()


# --- what the commands gather (the text forms are also used by scripts/quickstart.py) ---------


def run_outcomes(pipeline: str, rows: list[dict[str, Any]]) -> list[str]:
    """What each partition's attempt came to, for a person: its status and rows, the records
    rejected by reason, the gate's warnings, and what blocked it with the command to look."""
    from wap.audit import REJECTS

    lines = []
    for row in rows:
        details = json.loads(row["details"]) if row.get("details") else {}
        counts = f"{row['rows_in'] or 0:,} records read"
        if row.get("rows_out") is not None:
            counts += f", {row['rows_out']:,} rows"
        lines.append(f"{row['partition']}  {row['status']}  ({counts})")
        for view, intake in (details.get("intake") or {}).items():
            for reason, count in sorted((intake.get("rejected") or {}).items()):
                lines.append(f"    rejected in {view}: {count:,} {reason}")
        for finding in (details.get("audit") or {}).get("findings", []):
            if finding["check"] == REJECTS:
                continue  # its counts are above
            named = f"{finding['check']}({finding['column']})" if finding.get("column") else finding["check"]
            lines.append(f"    {finding['severity']}: {named}: {_said(finding)[:160]}")
        if row["status"] == "quarantined":
            lines.append(f"    see: wap quarantine show {pipeline} {row['partition']}")
        elif row["status"] == "failed" and row.get("error"):
            lines.append(f"    error: {row['error'].splitlines()[0][:160]}")
    return lines


def _said(finding: dict[str, Any]) -> str:
    """A gate finding in a line: its message, else what was unexpected, else what was observed."""
    count = finding.get("unexpected_count")
    if finding.get("message"):
        return str(finding["message"])
    return f"{count} unexpected, e.g. {finding.get('sample')}" if count else f"observed {finding.get('observed')}"


def current_runtime() -> Runtime:
    """This invocation's settings, catalog and ledger, built from the environment on first use
    (`new` and `--help` need none)."""
    root = click.get_current_context().find_root()
    if not isinstance(root.obj, Runtime):
        root.obj = Runtime.from_env()
    runtime: Runtime = root.obj
    return runtime


def show_ledger(
    pipeline: str | None = None, partition: str | None = None, details: bool = False, runtime: Runtime | None = None
) -> str:
    """The ledger as a table (errors cut to a line), or with `details` every row in full."""
    return TEXT.ledger((runtime or Runtime.from_env()).ledger.rows(pipeline, partition), details)


def table_listing(runtime: Runtime, identifier: str) -> TableListing:
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = tables.load_table(identifier, runtime.catalog)
    except NoSuchTableError as exc:
        raise LookupError(f"{exc} (`wap tables` lists them)") from None
    return TableListing(identifier, table.location(), tables.partitions_overview(table))


def show_partitions(identifier: str, runtime: Runtime | None = None) -> str:
    return TEXT.table_partitions(table_listing(runtime or Runtime.from_env(), identifier))


def show_tables(runtime: Runtime | None = None) -> str:
    return _tables(runtime or Runtime.from_env(), TEXT)


def _tables(runtime: Runtime, output: Output) -> str:
    settings, catalog = runtime.settings, runtime.catalog
    listed = [(name, tables.load_table(name, catalog).location()) for name in tables.list_tables(catalog)]
    return output.catalog(settings.catalog_name, settings.catalog_uri, settings.warehouse, listed)


def make_plan(
    runtime: Runtime, pipeline_name: str, start: str, end: str, dag_id: str | None, max_active_runs: int | None
) -> Plan:
    from wap import planner
    from wap.pipeline import find_pipeline

    pipeline = find_pipeline(pipeline_name)
    states = planner.plan(
        runtime, pipeline, pipeline.grain.parse(start, source="--from"), pipeline.grain.parse(end, source="--to")
    )
    runs = max_active_runs or pipeline.publish.max_active_runs
    return Plan(
        states=[{**vars(s), "partition": key_of(s.partition)} for s in states],
        commands=planner.range_commands(dag_id or pipeline_name, states, pipeline.batch_size),
        backfill=planner.backfill_commands(dag_id or pipeline_name, states, runs, pipeline.grain),
        running=[key_of(s.partition) for s in states if s.state == "running"],
        rest=planner.rest_call(dag_id or pipeline_name),
        zone=pipeline.grain.zone,
    )


# --- errors: translated once, here -------------------------------------------------------------


@contextlib.contextmanager
def _logs_to_stderr() -> Iterator[None]:
    """What the block writes to stdout goes to stderr: Airflow's logging (configured when a DAG
    file is imported) writes Spark's and GX's log lines to stdout, which must carry nothing but
    the command's own output (`-o json` is parsed)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        # py4j says "Closing down clientserver connection" when the process exits, after the output.
        logging.getLogger("py4j").setLevel(logging.WARNING)


def exit_code(exc: BaseException) -> int:
    """The exit code for an error the commands let through (the table in the module docstring)."""
    if isinstance(exc, SetupError):
        return EXIT_SETUP
    if getattr(exc, "retryable", False):
        return EXIT_TEMPFAIL
    return EXIT_FAILED


def _is_translated(exc: BaseException) -> bool:
    """Errors raised on purpose, with a message for the user; a bare KeyError or IndexError is a bug."""
    if isinstance(exc, WapError):
        return True
    return isinstance(exc, LookupError | ValueError) and type(exc) not in (KeyError, IndexError)


class _WapGroup(click.Group):
    """The root group: runs the command and turns the errors it raises on purpose into
    `error: <message>` on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (WapError, LookupError, ValueError) as exc:
            if not _is_translated(exc):
                raise
            click.echo(f"error: {exc}", err=True)
            if getattr(exc, "retryable", False):
                click.echo("(this may be temporary: trying the same command again may succeed)", err=True)
            ctx.exit(exit_code(exc))


# --- the commands: parse, gather, hand to the Output ---------------------------------------------


def output_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`-o/--output text|json`, given to the command as its Output."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(list(OUTPUTS)),
        default="text",
        show_default=True,
        callback=lambda _ctx, _param, value: OUTPUTS[value](),
        help="text: a table for people; json: objects for programs (nothing cut, ISO 8601 times)",
    )(command)


def _help(summary: str, more: str = "") -> dict[str, str]:
    """A command's one-line summary (the group's listing, not cut) and its --help text."""
    text = f"{summary[0].upper()}{summary[1:]}."
    return {"short_help": summary, "help": f"{text}\n\n{more}" if more else text}


FROM_HELP = "first partition, YYYY-MM-DD (hourly: THH)"
REASON_HELP = "why; kept in the ledger with your user name"
TOKEN_HELP = "a specific attempt (default: the partition's latest quarantined run)"


@click.group(
    cls=_WapGroup,
    help=__doc__.split("\n\n")[0] + "\n\nThe listing commands take -o json (objects for programs). Exit codes: "
    "0 ok, 1 an error a retry cannot fix, 2 usage, 3 a setup problem, 75 transient (try again).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def wap() -> None:
    pass


@wap.command(**_help("ledger rows, one per attempt"))
@click.option("--pipeline", help="one pipeline's rows")
@click.option("--partition", help="one partition's rows")
@click.option("--details", is_flag=True, help="every row in full: the whole error, the details")
@output_option
def ledger(pipeline: str | None, partition: str | None, details: bool, output: Output) -> None:
    click.echo(output.ledger(current_runtime().ledger.rows(pipeline, partition), details))


@wap.command(**_help("a table's live partitions", "TABLE: e.g. silver.orders (default: every table)."))
@click.argument("table", required=False)
@output_option
def partitions(table: str | None, output: Output) -> None:
    runtime = current_runtime()
    names = [table] if table else tables.list_tables(runtime.catalog)
    click.echo(output.partitions([table_listing(runtime, name) for name in names]), nl=False)


@wap.command("tables", **_help("tables and where they are"))
@output_option
def tables_command(output: Output) -> None:
    click.echo(_tables(current_runtime(), output))


@wap.group("quarantine", **_help("runs the quality gate blocked: inspect, release, discard"))
def quarantine_group() -> None:
    pass


@quarantine_group.command("list", **_help("quarantined runs"))
@click.option("--pipeline", help="one pipeline's runs")
@output_option
def quarantine_list(pipeline: str | None, output: Output) -> None:
    click.echo(output.quarantined(quarantine.quarantined(current_runtime(), pipeline)))


@quarantine_group.command("show", **_help("what failed, samples, where the files are"))
@click.argument("pipeline")
@click.argument("partition")
@click.option("--token", help=TOKEN_HELP)
@output_option
def quarantine_show(pipeline: str, partition: str, token: str | None, output: Output) -> None:
    click.echo(output.quarantined_run(quarantine.find(current_runtime(), pipeline, partition, token)))


@quarantine_group.command("release", **_help("publish the quarantined data anyway (a human decision, recorded)"))
@click.argument("pipeline")
@click.argument("partition")
@click.option("--token", help=TOKEN_HELP)
@click.option("--reason", required=True, help=REASON_HELP)
@click.option("--force", is_flag=True, help="even if a later run published the partition")
def quarantine_release(pipeline: str, partition: str, token: str | None, reason: str, force: bool) -> None:
    result = quarantine.release(current_runtime(), pipeline, partition, reason=reason, run_token=token, force=force)
    click.echo(
        f"released: {pipeline} {partition} is {result['status']} (snapshot {result['snapshot_id']}, "
        f"{result['rows']} rows). Pipelines that wait for this table's asset events are not triggered "
        f"by a release: trigger them for {partition} if they should see it."
    )


@quarantine_group.command("discard", **_help("delete the quarantined files (recorded)"))
@click.argument("pipeline")
@click.argument("partition")
@click.option("--token", help=TOKEN_HELP)
@click.option("--reason", required=True, help=REASON_HELP)
def quarantine_discard(pipeline: str, partition: str, token: str | None, reason: str) -> None:
    result = quarantine.discard(current_runtime(), pipeline, partition, reason=reason, run_token=token)
    click.echo(f"discarded: quarantined run {result['run_id']} of {pipeline} {partition}; its files are deleted")


@wap.command(**_help("partitions missing, failed, quarantined or stale; the backfill"))
@click.argument("pipeline")
@click.option("--from", "start", required=True, help=FROM_HELP)
@click.option("--to", "end", required=True, help="last partition (included)")
@click.option("--dag-id", help="the DAG that runs the pipeline (default: the pipeline's name)")
@click.option("--max-active-runs", type=int, help="default 3; 1 for a merged table")
@output_option
def plan(pipeline: str, start: str, end: str, dag_id: str | None, max_active_runs: int | None, output: Output) -> None:
    click.echo(output.plan(make_plan(current_runtime(), pipeline, start, end, dag_id, max_active_runs)))


@wap.command(**_help("every published version of a partition still in history"))
@click.argument("pipeline")
@click.argument("partition")
@output_option
def versions(pipeline: str, partition: str, output: Output) -> None:
    from wap.pipeline import find_pipeline

    declared = find_pipeline(pipeline)
    table = tables.load_table(declared.table, current_runtime().catalog)
    click.echo(output.versions(list(tables.versions(table, declared.grain.parse(partition)))))


@wap.command(**_help("make an earlier published version live again (recorded)"))
@click.argument("pipeline")
@click.option("--partition", help="one partition (default: the whole table)")
@click.option("--to-snapshot", type=int, required=True, help="a snapshot id from `versions`")
@click.option("--reason", required=True, help=REASON_HELP)
def rollback(pipeline: str, partition: str | None, to_snapshot: int, reason: str) -> None:
    from wap import rollback as rollbacks
    from wap.pipeline import find_pipeline

    declared = find_pipeline(pipeline)
    if partition:
        done = rollbacks.rollback_partition(
            current_runtime(), declared, declared.grain.parse(partition), to_snapshot, reason
        )
        click.echo(f"{declared.table} {done['partition']}: {done['status']} (snapshot {done['snapshot_id']})")
    else:
        click.echo(render(rollbacks.rollback_table(current_runtime(), declared, to_snapshot, reason), ROLLBACK_COLUMNS))


@wap.command(**_help("expire old snapshots, delete files no snapshot uses"))
@click.option("--table", help="one table, e.g. silver.orders (default: every table)")
@click.option("--dry-run", is_flag=True, help="list what would go; change nothing")
@click.option("--window-days", type=float, help="rollback window (default: WAP_ROLLBACK_WINDOW_DAYS or 7)")
@click.option("--margin-hours", type=float, help="orphan age margin (default: WAP_ORPHAN_MARGIN_HOURS or 24)")
@output_option
def maintain(
    table: str | None, dry_run: bool, window_days: float | None, margin_hours: float | None, output: Output
) -> None:
    from pyiceberg.exceptions import NoSuchTableError

    from wap import maintenance

    retention = maintenance.Retention.from_env(window_days, margin_hours)
    try:
        results = maintenance.maintain(current_runtime(), [table] if table else None, retention, dry_run=dry_run)
    except NoSuchTableError as exc:
        raise LookupError(f"{exc} (`wap tables` lists them)") from None
    click.echo(output.maintained(results, dry_run))


@wap.command(
    **_help(
        "create a pipeline from the template: DAG, SQL, expectation suite, test",
        "NAME: pipeline name = DAG id = file names, lower snake case (e.g. web_sessions). Writes "
        "dags/NAME.py, include/sql/NAME.sql, expectations/<namespace>.<table>.json and tests/test_NAME.py, "
        "and nothing else; refuses, writing nothing, a name or file already taken.",
    )
)
@click.argument("name")
@click.option(
    "--grain",
    type=click.Choice(tuple(partition.GRAINS)),
    default="daily",
    show_default=True,
    help="one partition per UTC day or hour (or per day of --zone)",
)
@click.option(
    "--zone",
    default="UTC",
    show_default=True,
    metavar="ZONE",
    help="daily: partitions are the calendar days of this IANA time zone (e.g. America/New_York; "
    "23- and 25-hour days where the clocks change); the key is the local date",
)
@click.option(
    "--source",
    default="files",
    metavar="files[:DATASET]|postgres[:SCHEMA.TABLE]",
    help="landed files (default dataset: the table's name) or a PostgreSQL table (default public.<table's name>)",
)
@click.option("--table", help="namespace.table (default: <layer>.<rest> for a name <layer>_<rest>, else silver.<name>)")
@click.option(
    "--conn-id",
    default=template.DEFAULT_CONN_ID,
    help=f"postgres: the Airflow connection id (default {template.DEFAULT_CONN_ID})",
)
@click.option(
    "--shape",
    type=click.Choice([shape for shapes in template.SHAPES.values() for shape in shapes]),
    help="what a row is. files: latest (default; one row per id and partition, its latest state, e.g. an order) "
    "or events (every record once, as landed, re-sent copies dropped by id, e.g. a click); postgres: changes "
    "(default; the rows changed in the partition) or merged (a table keyed by id, a dimension)",
)
@click.option("--merge", is_flag=True, help="the same as --shape merged")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(template.FORMATS),
    help="files: how they are landed: json (JSON lines, the default), csv (with a header) or parquet",
)
def new(
    name: str,
    grain: str,
    source: str,
    table: str | None,
    conn_id: str,
    shape: str | None,
    merge: bool,
    file_format: str | None,
    zone: str,
) -> None:
    request = argparse.Namespace(
        name=name,
        grain=grain,
        source=source,
        table=table,
        conn_id=conn_id,
        merge=merge,
        shape=shape,
        format=file_format,
        zone=zone,
    )
    click.echo(template.run(request))


@wap.command(
    **_help(
        "run a DAG here for a range of partitions (dag.test, no servers)",
        "Range runs by default: one run per batch of at most the pipeline's batch_size partitions "
        "(--batch-size to change it; --per-partition for one run per partition). "
        "Exits 0 if every run succeeded, 1 if any did not (each is still tried).",
    )
)
@click.argument("dag_id")
@click.option("--from", "start", required=True, help=FROM_HELP)
@click.option("--to", "end", help="last partition (default: the first)")
@click.option("--batch-size", type=click.IntRange(1, MAX_RANGE), help="partitions per range run")
@click.option("--per-partition", is_flag=True, help="one run per partition (as Airflow's backfill does)")
@click.pass_context
def run(
    ctx: click.Context, dag_id: str, start: str, end: str | None, batch_size: int | None, per_partition: bool
) -> None:
    from wap.embedded import prepare_airflow, run_dag
    from wap.pipeline import declared_in

    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the runs' outcomes, not Airflow's chatter
    # Airflow reads its home and database from the environment once, when first imported (a DAG
    # file imports it): the embedded one is set up before that, or dag.test() finds ~/airflow's.
    prepare_airflow(load_settings().data_dir)
    path = load_settings().dags_dir / f"{dag_id}.py"
    # The keys are read at the grain of the DAG's own pipeline, and validated before anything runs.
    declared = declared_in(path) if path.is_file() else []
    if not declared:
        raise LookupError(f"no DAG file {path} declaring a pipeline")
    grain = declared[0].grain
    first = grain.parse(start, source="--from")
    last = grain.parse(end or start, source="--to")
    if last < first:
        raise ValueError(f"--to {grain.key(last)} is before --from {grain.key(first)}")
    size = 1 if per_partition else batch_size or declared[0].batch_size
    ledger, pipeline = current_runtime().ledger, declared[0].name
    batches = PartitionRange(first, last, grain).batches(size)
    failed = 0
    for n, batch in enumerate(batches):
        key = batch.key if len(batch) > 1 else key_of(batch.first)
        seen = max((row["id"] for row in ledger.rows(pipeline)), default=0)
        click.echo(f"[{n + 1}/{len(batches)}] {dag_id} {key}: running")
        started = time.monotonic()
        state = run_dag(dag_id, key, lookback=n == 0)  # a later batch's late records are the previous one's
        click.echo(f"[{n + 1}/{len(batches)}] {dag_id} {key}: {state} in {time.monotonic() - started:.1f} s")
        latest = {row["partition"]: row for row in ledger.rows(pipeline) if row["id"] > seen}
        for line in run_outcomes(pipeline, [latest[k] for k in sorted(latest)]):
            click.echo(f"  {line}")
        failed += "success" not in state
    click.echo(f"\n{show_ledger(dag_id, runtime=current_runtime())}")
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)


@wap.command(
    "check",
    **_help(
        "check pipelines without data: the suite, the SQL and its result against the contract",
        "PIPELINE: one or more names (default: every pipeline of the DAG files). Spark analyses the SQL "
        "on each source's columns, with no rows; every problem found is listed with its fix. "
        "Exit code 1 if any problem is found: use it in CI.",
    ),
)
@click.argument("names", nargs=-1, metavar="[PIPELINE]...")
@output_option
@click.pass_context
def check_command(ctx: click.Context, names: tuple[str, ...], output: Output) -> None:
    from wap.check import check
    from wap.pipeline import declared_pipelines, find_pipeline

    with _logs_to_stderr():
        pipelines = [find_pipeline(name, checked=False) for name in names] or declared_pipelines()
        spark = current_runtime().spark()
        results = [check(spark, pipeline) for pipeline in pipelines]
    click.echo(output.checked(results))
    ctx.exit(EXIT_OK if all(r.ok for r in results) else EXIT_FAILED)


@wap.command(
    **_help(
        "a partition's transform and gate on its landed data, shown; nothing written",
        "The same reading (with its reject accounting), SQL and gate as a run of PARTITION, on the live table "
        "as it is: counts and rejects by reason, the first rows of the result, and every check's verdict. "
        "Nothing is staged, published or recorded in the ledger. Exit code 1 if the gate would block the publish.",
    )
)
@click.argument("pipeline")
@click.argument("partition")
@click.option("--rows", type=click.IntRange(0, 1000), default=10, show_default=True, help="result rows to show")
@output_option
@click.pass_context
def preview(ctx: click.Context, pipeline: str, partition: str, rows: int, output: Output) -> None:
    from wap.pipeline import find_pipeline
    from wap.preview import preview as run_preview

    with _logs_to_stderr():
        declared = find_pipeline(pipeline)
        shown = run_preview(current_runtime(), declared, declared.grain.parse(partition, source="PARTITION"), rows)
    click.echo(output.previewed(shown))
    ctx.exit(EXIT_OK if shown.passed else EXIT_FAILED)


@wap.command(
    **_help(
        "run a local Airflow for these DAGs (airflow standalone on the embedded default)",
        "API server, scheduler, dag-processor and triggerer with the LocalExecutor, on the data folder's "
        "SQLite databases, the pools imported; until Ctrl-C. By default every Spark task is a client of one "
        "Spark Connect server started with it (a task costs a connection, not a cold JVM).",
    )
)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="the UI and API port")
@click.option(
    "--spark",
    type=click.Choice(("server", "in-task")),
    default="server",
    show_default=True,
    help="server: one shared Spark Connect server; in-task: each Spark task starts its own JVM "
    "(WAP_SPARK_REMOTE, if set, names the server to use instead)",
)
@click.option(
    "--env",
    "print_env",
    is_flag=True,
    help="print the environment as shell exports, start nothing (for the `airflow` command in another shell: "
    'eval "$(wap airflow --env)")',
)
@click.pass_context
def airflow(ctx: click.Context, port: int, spark: str, print_env: bool) -> None:
    from wap.embedded import local_airflow, local_airflow_env

    settings = load_settings()
    if print_env:
        import shlex

        exports = local_airflow_env(settings.data_dir, port).items()
        click.echo("\n".join(f"export {k}={shlex.quote(v)}" for k, v in exports))
        return
    server = spark == "server"
    ctx.exit(local_airflow(settings.data_dir, port, server, settings.spark_remote, echo=click.echo))


def main(argv: Sequence[str] | None = None) -> None:
    """The `wap` console script and `python -m wap.cli`: returns on success, else exits with the
    command's code (the table in the module docstring)."""
    try:
        wap.main(args=None if argv is None else list(argv), prog_name="wap")
    except SystemExit as done:
        if done.code not in (None, 0):
            raise


if __name__ == "__main__":
    main()
