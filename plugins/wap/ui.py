"""The partitions view in Airflow's UI, and its JSON API (an Airflow 3 plugin: `WapUiPlugin`).

Per pipeline, a strip of its partitions over a range, coloured by state; a partition opens
to its attempts (the ledger), the gate's findings with observed values and samples, the
records rejected by reason, the live version, the lineage and the commands that fix it.
The states are `wap.planner.plan`'s, the same function `wap plan` prints: one source of truth.

    GET /wap/partitions/                              the pipelines you may read (HTML)
    GET /wap/partitions/{pipeline}?from=K&to=K        the strip (HTML)
    GET /wap/partitions/{pipeline}/{key}              one partition (HTML)
    GET /wap/api/pipelines                            the same, as JSON
    GET /wap/api/pipelines/{pipeline}/partitions?from=K&to=K
    GET /wap/api/pipelines/{pipeline}/partitions/{key}

Every route is behind Airflow's own authentication (the UI's session cookie, or a bearer
token from `POST /auth/token`) and authorization (reading the pipeline's DAG). Nothing here
writes: a quarantined partition is released or discarded through its review task
(`dags/quarantine_review.py`) or `wap quarantine`, whose commands the view shows.

Airflow loads every Python file of the plugins folder in every component; this module builds
its FastAPI app only when the API server asks for it (`WapUiPlugin.fastapi_apps`), so a task
process pays nothing for it.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name
# what `create_app` imports, at definition time.
import dataclasses
import datetime as dt
import html
import json
import urllib.parse
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from airflow.plugins_manager import AirflowPlugin

from wap import planner, quarantine, tables
from wap.errors import PartitionError, QuarantineError
from wap.partition import Partition, PartitionRange, key_of
from wap.pipeline import Pipeline, declared_in
from wap.runtime import Runtime
from wap.settings import load_settings

URL_PREFIX = "/wap"
# How many partitions a view shows when no range is asked for, ending at the latest one tried.
DEFAULT_SPAN = 31
MAX_SPAN = 400
# Each state's colour in the strip (the planner's states).
COLOURS = {
    "ok": "#2e7d32",
    "missing": "#9e9e9e",
    "failed": "#c62828",
    "quarantined": "#ef6c00",
    "stale": "#f9a825",
    "rolled_back": "#6a1b9a",
    "running": "#1565c0",
}


# ------------------------------------------------------------------ what the view shows (no Airflow)
@dataclasses.dataclass(frozen=True)
class Declared:
    pipeline: Pipeline
    dag_id: str  # the DAG file's stem: `<dags>/<dag_id>.py`


def declared() -> dict[str, Declared]:
    """Every pipeline the DAG files declare, by name, with the id of its DAG."""
    files = sorted(load_settings().dags_dir.glob("*.py"))
    return _declared(tuple((path, path.stat().st_mtime_ns) for path in files))


@lru_cache(maxsize=4)
def _declared(files: tuple[tuple[Path, int], ...]) -> dict[str, Declared]:
    # Keyed by the files' modification times: a changed DAG file is read again.
    from wap.pipeline import suites_unchecked

    found: dict[str, Declared] = {}
    with suites_unchecked():  # a broken suite is the gate's to report, not a reason to hide the table
        for path, _ in files:
            found |= {p.name: Declared(p, path.stem) for p in declared_in(path)}
    return found


def span_of(runtime: Runtime, pipeline: Pipeline, start: str | None, end: str | None) -> tuple[Partition, Partition]:
    """The range to show: as asked (keys of the pipeline's grain), else the `DEFAULT_SPAN`
    partitions up to the latest one the ledger has (today's, if none). `PartitionError` if
    the keys are not valid or the range is too long."""
    grain = pipeline.grain
    tried = sorted(row["partition"] for row in runtime.ledger.rows(pipeline.name) if "/" not in row["partition"])
    last = grain.parse(end, source="to") if end else grain.parse(tried[-1]) if tried else grain.floor(_now())
    first = grain.parse(start, source="from") if start else grain.next(last, -(DEFAULT_SPAN - 1))
    if start is None and tried:
        first = max(first, grain.parse(tried[0]))
    if last < first:
        raise PartitionError(f"to {grain.key(last)} is before from {grain.key(first)}")
    if (count := len(PartitionRange(first, last, grain))) > MAX_SPAN:  # counted on the calendar
        raise PartitionError(f"{count} partitions asked for; the view shows at most {MAX_SPAN}: narrow from/to")
    return first, last


def overview(runtime: Runtime, item: Declared, first: Partition, last: Partition) -> dict[str, Any]:
    """Each partition's state from `first` to `last`, as `wap plan` gives it, and the commands
    that fix those needing a run."""
    pipeline = item.pipeline
    states = planner.plan(runtime, pipeline, first, last)
    return {
        "pipeline": pipeline.name,
        "dag_id": item.dag_id,
        "table": pipeline.table,
        "grain": pipeline.grain.name,
        "zone": pipeline.grain.zone,
        "from": key_of(first),
        "to": key_of(last),
        "partitions": [{"partition": key_of(s.partition), "state": s.state, "detail": s.detail} for s in states],
        "counts": {
            state: sum(s.state == state for s in states) for state in COLOURS if any(s.state == state for s in states)
        },
        "commands": planner.range_commands(item.dag_id, states, pipeline.batch_size),
    }


def detail(runtime: Runtime, item: Declared, key: str) -> dict[str, Any]:
    """One partition: its state, every attempt, the latest attempt's findings and rejects,
    the live version, the lineage, and the commands that act on it."""
    from pyiceberg.exceptions import NoSuchTableError

    pipeline = item.pipeline
    partition = pipeline.grain.parse(key, source="partition")
    key = key_of(partition)
    (state,) = planner.plan(runtime, pipeline, partition, partition)
    attempts = [_attempt(row) for row in runtime.ledger.rows(pipeline.name, key)]
    try:
        table = tables.load_table(pipeline.table, runtime.catalog)
        live = tables.live_version(table, pipeline.publish.replaces(partition))
    except NoSuchTableError:
        live = None
    commands = [f"airflow dags trigger {item.dag_id} --conf '{json.dumps({'partition': key})}'"]
    commands.append(f"wap run {item.dag_id} --from {key}")
    if state.state == "quarantined":
        commands = [
            f"wap quarantine show {pipeline.name} {key}",
            f'wap quarantine release {pipeline.name} {key} --reason "..."',
            f'wap quarantine discard {pipeline.name} {key} --reason "..."',
            *commands,
        ]
    return {
        "pipeline": pipeline.name,
        "dag_id": item.dag_id,
        "table": pipeline.table,
        "partition": key,
        "zone": pipeline.grain.zone,
        "window": [moment.isoformat() for moment in pipeline.grain.window(partition)],
        "state": state.state,
        "detail": state.detail,
        "attempts": attempts,
        "live": _jsonable(dataclasses.asdict(live)) if live else None,
        "lineage": {
            "inputs": [_source_name(s) for s in pipeline.sources],
            "output": pipeline.table,
            "job": item.dag_id,
        },
        "commands": commands,
    }


def _source_name(source: Any) -> str:
    """What a source is, for a person (no connection made: a database's host is not looked up)."""
    from wap.sources import DatabaseTable, LandedFiles

    if isinstance(source, LandedFiles):
        return f"{source.location()} ({source.format})"
    if isinstance(source, DatabaseTable):
        return f"{source.table} (connection {source.conn_id})"
    return str(source.table)


def _attempt(row: dict[str, Any]) -> dict[str, Any]:
    details = json.loads(row["details"]) if row.get("details") else {}
    rejected = {
        view: dict(sorted((intake.get("rejected") or {}).items()))
        for view, intake in (details.get("intake") or {}).items()
        if intake.get("rejected")
    }
    findings = [dataclasses.asdict(f) for f in quarantine.findings(row)]
    decided = details.get("release") or details.get("discard")
    shown = {
        name: row.get(name)
        for name in (
            "run_id",
            "try_number",
            "status",
            "rows_in",
            "rows_out",
            "checksum",
            "snapshot_id",
            "started_at",
            "finished_at",
            "error",
        )
    }
    return _jsonable({**shown, "findings": findings, "rejected": rejected, "decision": decided})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ------------------------------------------------------------------ HTML (no script: links and a table)
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#222}
a{color:#1565c0}
.strip{display:flex;flex-wrap:wrap;gap:3px;margin:1rem 0}
.cell{display:inline-block;min-width:4.6rem;padding:.35rem .25rem;color:#fff;text-align:center;
 font-size:.8rem;border-radius:3px;text-decoration:none}
.legend span{display:inline-block;padding:.1rem .4rem;margin-right:.3rem;color:#fff;border-radius:3px;font-size:.8rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .4rem;font-size:.85rem;text-align:left}
pre{background:#f5f5f5;padding:.5rem;white-space:pre-wrap}
"""


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _cell(pipeline: str, item: dict[str, Any], base: str) -> str:
    key, state = item["partition"], item["state"]
    href = f"{base}{urllib.parse.quote(pipeline)}/{urllib.parse.quote(key)}"
    title = f"{key}: {state} {item['detail']}".strip()
    return (
        f"<a class='cell' id='p-{html.escape(key)}' data-partition='{html.escape(key)}' "
        f"data-state='{state}' style='background:{COLOURS[state]}' href='{href}' "
        f"title='{html.escape(title)}'>{html.escape(key)}</a>"
    )


def _rows(items: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if i.get(c) is None else str(i.get(c)))}</td>" for c in columns)
        + "</tr>"
        for i in items
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def index_html(items: list[Declared]) -> str:
    listed = "".join(
        f"<li><a href='{urllib.parse.quote(i.pipeline.name)}'>{html.escape(i.pipeline.name)}</a> "
        f"({html.escape(i.pipeline.table)}, {html.escape(i.pipeline.grain.described)})</li>"
        for i in items
    )
    return _page("Partitions", f"<h2>Partitions</h2><ul id='pipelines'>{listed or '<li>none you may read</li>'}</ul>")


def overview_html(view: dict[str, Any], base: str = "") -> str:
    """The strip; `base`: the way from the page's folder to /wap/partitions/ (links are relative,
    so the page works behind a proxy's prefix)."""
    legend = "".join(f"<span style='background:{COLOURS[s]}'>{s} {n}</span>" for s, n in view["counts"].items())
    zone = f", days in {html.escape(view['zone'])}" if view["zone"] != "UTC" else ""
    cells = "".join(_cell(view["pipeline"], item, base) for item in view["partitions"])
    fix = (
        "<h3>To fix what needs a run</h3><pre id='commands'>" + html.escape("\n".join(view["commands"])) + "</pre>"
        if view["commands"]
        else "<p id='commands'>Nothing needs a run in this range.</p>"
    )
    body = (
        f"<p><a href='{base or '.'}'>Partitions</a></p><h2>{html.escape(view['pipeline'])}</h2>"
        f"<p>{html.escape(view['table'])}, {html.escape(view['grain'])}{zone}: {view['from']} to {view['to']} "
        f"(<a href='?from={view['from']}&amp;to={view['to']}'>this range</a>; set ?from= and ?to=)</p>"
        f"<div class='legend' id='legend'>{legend}</div><div class='strip' id='strip'>{cells}</div>{fix}"
    )
    return _page(f"{view['pipeline']}: partitions", body)


def detail_html(view: dict[str, Any]) -> str:
    parts = [
        f"<p><a href='../{urllib.parse.quote(view['pipeline'])}'>{html.escape(view['pipeline'])}</a></p>",
        f"<h2>{html.escape(view['pipeline'])} {html.escape(view['partition'])}: "
        f"<span id='state' data-state='{view['state']}' style='color:{COLOURS[view['state']]}'>{view['state']}</span></h2>",
        f"<p>{html.escape(view['detail'])}; window {view['window'][0]} to {view['window'][1]} (UTC, days in "
        f"{html.escape(view['zone'])})</p>",
    ]
    live = view["live"]
    parts.append(
        "<h3>Live version</h3>"
        + (_rows([live], ["snapshot_id", "rows", "checksum", "run_id", "committed_at"]) if live else "<p>none</p>")
    )
    columns = ["run_id", "try_number", "status", "rows_in", "rows_out", "checksum", "started_at", "finished_at"]
    parts.append("<h3>Attempts</h3><div id='attempts'>" + _rows(view["attempts"], columns) + "</div>")
    latest = view["attempts"][-1] if view["attempts"] else None
    if latest:
        findings = [
            {**f, "sample": json.dumps(f.get("sample"), default=str)[:300] if f.get("sample") else ""}
            for f in latest["findings"]
        ]
        parts.append(
            "<h3>Findings of the latest attempt</h3><div id='findings'>"
            + _rows(findings, ["severity", "check", "column", "observed", "unexpected_count", "message", "sample"])
            + "</div>"
        )
        rejected = [
            {"source": view_name, "reason": reason, "records": count}
            for view_name, reasons in latest["rejected"].items()
            for reason, count in reasons.items()
        ]
        parts.append(
            "<h3>Rejected records</h3><div id='rejected'>" + _rows(rejected, ["source", "reason", "records"]) + "</div>"
        )
        if latest["decision"]:
            parts.append(
                "<h3>Decision</h3><pre id='decision'>"
                + html.escape(json.dumps(latest["decision"], indent=1))
                + "</pre>"
            )
    lineage = view["lineage"]
    parts.append(
        "<h3>Lineage</h3><p id='lineage'>"
        + html.escape(", ".join(lineage["inputs"]))
        + f" &rarr; {html.escape(lineage['output'])} (job {html.escape(lineage['job'])})</p>"
    )
    parts.append("<h3>Commands</h3><pre id='commands'>" + html.escape("\n".join(view["commands"])) + "</pre>")
    return _page(f"{view['pipeline']} {view['partition']}", "".join(parts))


# ------------------------------------------------------------------ the FastAPI app (the API server)
def create_app() -> Any:
    """The plugin's FastAPI app: every route authenticated and authorized by Airflow."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(title="wap partitions", docs_url=None, redoc_url=None, openapi_url=None)
    # Airflow's own: the bearer token, else the UI's session cookie; 401/403 when neither is valid.
    Who = Annotated[Any, Depends(get_user)]

    def readable(who: Any) -> dict[str, Declared]:
        manager = get_auth_manager()
        return {
            name: item
            for name, item in declared().items()
            if manager.is_authorized_dag(method="GET", details=DagDetails(id=item.dag_id), user=who)
        }

    def one(name: str, who: Any) -> Declared:
        found = declared().get(name)
        if found is None or name not in readable(who):
            # Not declared, or not yours to read: the same answer, so names cannot be probed.
            raise HTTPException(status_code=404, detail=f"no pipeline {name!r} you may read")
        return found

    def bad_request(exc: Exception) -> HTTPException:
        return HTTPException(status_code=400, detail=str(exc))

    @app.get("/api/pipelines")
    def api_pipelines(who: Who) -> JSONResponse:
        items = readable(who).values()
        return JSONResponse(
            [{"pipeline": i.pipeline.name, "dag_id": i.dag_id, "table": i.pipeline.table} for i in items]
        )

    @app.get("/api/pipelines/{name}/partitions")
    def api_overview(name: str, request: Request, who: Who) -> JSONResponse:
        return JSONResponse(_overview(one(name, who), request))

    @app.get("/api/pipelines/{name}/partitions/{key}")
    def api_detail(name: str, key: str, who: Who) -> JSONResponse:
        return JSONResponse(_detail(one(name, who), key))

    @app.get("/partitions/", response_class=HTMLResponse)
    def page_index(who: Who) -> str:
        return index_html(list(readable(who).values()))

    @app.get("/partitions/dag/{dag_id}", response_class=HTMLResponse)
    def page_of_dag(dag_id: str, request: Request, who: Who) -> str:
        # The "Partitions" tab of a DAG's page: the pipeline its file declares.
        items = [i for i in readable(who).values() if i.dag_id == dag_id]
        if len(items) != 1:
            return _page("Partitions", f"<p>The DAG {html.escape(dag_id)} declares no pipeline you may read.</p>")
        return overview_html(_overview(items[0], request), base="../")

    @app.get("/partitions/{name}", response_class=HTMLResponse)
    def page_overview(name: str, request: Request, who: Who) -> str:
        return overview_html(_overview(one(name, who), request))

    @app.get("/partitions/{name}/{key}", response_class=HTMLResponse)
    def page_detail(name: str, key: str, who: Who) -> str:
        return detail_html(_detail(one(name, who), key))

    def _overview(item: Declared, request: Request) -> dict[str, Any]:
        runtime = Runtime.from_env()
        try:
            first, last = span_of(
                runtime, item.pipeline, request.query_params.get("from"), request.query_params.get("to")
            )
        except PartitionError as exc:
            raise bad_request(exc) from None
        return overview(runtime, item, first, last)

    def _detail(item: Declared, key: str) -> dict[str, Any]:
        try:
            return detail(Runtime.from_env(), item, key)
        except (PartitionError, QuarantineError) as exc:
            raise bad_request(exc) from None

    return app


_APP: list[Any] = []


class WapUiPlugin(AirflowPlugin):
    """Registered by Airflow from `plugins/wap_ui_plugin.py`: the app at /wap, a "Partitions"
    entry in the navigation, and a "Partitions" tab on each DAG."""

    name = "wap_partitions"
    external_views = [  # noqa: RUF012 -- Airflow's own attribute, a list by its interface
        {"name": "Partitions", "href": "wap/partitions/", "destination": "nav", "url_route": "wap-partitions"},
        {"name": "Partitions", "href": "wap/partitions/dag/{DAG_ID}", "destination": "dag", "url_route": "partitions"},
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        if not _APP:
            _APP.append(create_app())
        return [{"app": _APP[0], "url_prefix": URL_PREFIX, "name": "wap partitions"}]
