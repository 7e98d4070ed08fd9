"""Quarantined runs: what failed and where the files are, then a human's decision.

A run the quality gate blocked keeps what it made under
`<table>/quarantine/<column>=<day>/<run token>/`: `data/` (the staged Parquet, if the run
got that far) and `rejects/<source>/` (landed records it could not use). Its ledger row
says `quarantined` and lists the failed checks. After looking, a person either

- releases it: the staged files are published as the partition, by the same atomic
  swap as any run, and the ledger row records who released it and why; or
- discards it: the files are deleted and the row says `discarded`.

    wap quarantine list
    wap quarantine show silver_orders 2024-01-03
    wap quarantine release silver_orders 2024-01-03 --reason "refunds are valid"
    wap quarantine discard silver_orders 2024-01-03 --reason "bad export, re-landed"
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from typing import Any

from wap import audit as gate
from wap import staging
from wap.errors import QuarantineError
from wap.ledger import as_utc
from wap.partition import from_key
from wap.runtime import Runtime

QUARANTINED = "quarantined"
# Statuses that put a partition live: a later one makes releasing an older run a step back.
LIVE = ("published", "skipped")


def quarantined(runtime: Runtime, pipeline: str | None = None) -> list[dict[str, Any]]:
    """Ledger rows of runs waiting in quarantine, oldest first."""
    return [row for row in runtime.ledger.rows(pipeline) if row["status"] == QUARANTINED]


def find(runtime: Runtime, pipeline: str, partition: str, run_token: str | None = None) -> dict[str, Any]:
    """The partition's latest quarantined run (or the one with `run_token`)."""
    rows = [r for r in runtime.ledger.rows(pipeline, partition) if r["status"] == QUARANTINED]
    if run_token:
        rows = [r for r in rows if r["run_token"] == run_token]
    if not rows:
        which = f" with token {run_token}" if run_token else ""
        raise QuarantineError(f"no quarantined run{which} of {pipeline} for partition {partition}")
    return rows[-1]


def findings(row: dict[str, Any]) -> list[gate.Finding]:
    audit = json.loads(row.get("details") or "{}").get("audit") or {}
    return [gate.Finding(**f) for f in audit.get("findings", [])]


def files(row: dict[str, Any]) -> dict[str, list[str]]:
    """The quarantined files: staged data and rejected records."""
    root = row["staged_path"]
    return {
        "data": staging.list_files(f"{root}/data"),
        "rejects": staging.list_files(f"{root}/rejects", ".json"),
    }


def describe(row: dict[str, Any]) -> str:
    """What failed and where the files are, for a person deciding."""
    report = gate.AuditReport(rows=row.get("rows_out"), findings=findings(row))
    held = files(row)
    lines = [
        f"{row['pipeline']} {row['partition']}: quarantined run {row['run_id']} (try {row['try_number']}, "
        f"token {row['run_token']}, finished {row['finished_at']})",
        f"rows read {row['rows_in']}, rows staged {row['rows_out']}, checksum {row['checksum']}",
        "",
        report.summary(),
    ]
    for finding in report.findings:  # in full: the table above is cut to fit a line
        lines.append(
            f"  {finding.severity} {finding.check}({finding.column or ''}): {finding.message or finding.observed}"
        )
        for sample in finding.sample or []:  # bounded when stored
            lines.append(f"    sample: {sample}")
    lines += ["", f"files under {row['staged_path']}:"]
    lines += [f"  data     {f}" for f in held["data"]] or ["  data     (none: the run stopped before staging)"]
    lines += [f"  rejects  {f}" for f in held["rejects"]]
    return "\n".join(lines)


def release(
    runtime: Runtime,
    pipeline_name: str,
    partition: str,
    *,
    reason: str,
    run_token: str | None = None,
    force: bool = False,
    by: str | None = None,
) -> dict[str, Any]:
    """Publish a quarantined run's staged files as the live partition; return the publish result.
    `by`: who decided (default: this process's user; a review in Airflow's UI gives its user)."""
    from wap import steps
    from wap.pipeline import find_pipeline

    row = find(runtime, pipeline_name, partition, run_token)
    _require_reason(reason)
    held = files(row)
    if not held["data"]:
        raise QuarantineError(
            f"nothing to release: run {row['run_id']} stopped before staging ({row['error']}); "
            "fix the landed files or the source's max_rejected_share and run the partition again"
        )
    schema = [f for f in findings(row) if f.check.startswith("contract:") and f.severity == gate.BLOCKING]
    if schema:
        raise QuarantineError(
            "cannot release: the staged data does not match the table's contract ("
            + "; ".join(f.message for f in schema)
            + "); change the SQL or bump the contract, then run the partition again"
        )
    later = [r for r in runtime.ledger.rows(pipeline_name, partition) if r["id"] > row["id"] and r["status"] in LIVE]
    if later and not force:
        raise QuarantineError(
            f"partition {partition} was published by a later run ({later[-1]['run_id']}); releasing this "
            "older run would replace it. Pass --force to do that anyway."
        )
    pipeline = find_pipeline(pipeline_name)
    table = steps.tables.load_table(pipeline.table, runtime.catalog)
    live = steps.tables.live_version(table, pipeline.publish.replaces(from_key(partition)))
    if live is not None and (
        refusal := pipeline.publish.release_refusal(
            pipeline.table, partition, live.run_id, live.committed_at, as_utc(row["started_at"])
        )
    ):
        raise QuarantineError(refusal)
    staged_dir = staging.partition_dir(
        table.location(),
        "data",
        pipeline.partition_column,
        from_key(partition),
        row["run_token"],
    )
    staging.move_dir(f"{row['staged_path']}/data", staged_dir)
    staged = staging.StagedRun(
        pipeline=pipeline_name,
        table=pipeline.table,
        partition=partition,
        run_id=row["run_id"],
        try_number=row["try_number"],
        run_token=row["run_token"],
        staged_dir=staged_dir,
        files=staging.list_files(staged_dir),
        rows_in=row["rows_in"] or 0,
        code_version=row["code_version"] or "",
        contract_version=row.get("contract_version"),
        rows_out=row["rows_out"],
        checksum=row["checksum"],
        base_snapshot=live.snapshot_id if live else None,  # the decision was made against what is live now
    )
    result = steps.publish(runtime, pipeline, staged)
    runtime.ledger.update(pipeline_name, row["run_token"], details={"release": _decision(reason, by)})
    return result


def discard(
    runtime: Runtime,
    pipeline_name: str,
    partition: str,
    *,
    reason: str,
    run_token: str | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    """Delete a quarantined run's files; its ledger row says `discarded`, by whom and why."""
    row = find(runtime, pipeline_name, partition, run_token)
    _require_reason(reason)
    staging.remove_dir(row["staged_path"])
    runtime.ledger.update(
        pipeline_name,
        row["run_token"],
        status="discarded",
        staged_path=None,
        details={"discard": _decision(reason, by)},
    )
    return {"status": "discarded", "partition": partition, "run_id": row["run_id"]}


def _require_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise QuarantineError("say why (--reason): the ledger keeps it with the decision")


def _decision(reason: str, by: str | None = None) -> dict[str, str]:
    return {"by": by or getpass.getuser(), "reason": reason.strip(), "at": dt.datetime.now(dt.UTC).isoformat()}
