"""A new pipeline from the template: its DAG, SQL, expectation suite and test, in four files.

    wap new web_sessions --grain hourly --source files
    wap new customers --source postgres:public.customers --table silver.customer_changes

writes `dags/<name>.py`, `include/sql/<name>.sql`, `expectations/<namespace>.<table>.json`
and `tests/test_<name>.py`, and nothing else. The generated pipeline runs as it is on the
sample data of its generated test; a person then describes their own data in it.

It refuses, before writing anything, a name that is not lower snake case or that would
shadow a Python module, and any name or file already taken in the repository: one of the
four files, a DAG id, a pipeline name or a table declared by a DAG in `dags/` or
`tests/dags/` (read with `ast`, not imported: a broken DAG file does not stop it), or a
suite of that table in `expectations/`.

The text is in the Jinja2 templates of `templates/` (package data), where the grain, the
source and a merge are conditionals; the suite is built here as data. No Airflow: the
command runs on a laptop with nothing started.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import functools
import importlib.util
import json
import keyword
import re
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wap import partition
from wap.errors import TemplateError
from wap.settings import REPO_ROOT

if TYPE_CHECKING:
    import jinja2

_COLUMN_SUFFIX = {"daily": "date", "hourly": "hour"}  # the partition column: event_date, updated_hour, ...
GRAINS = tuple(grain for grain in partition.GRAINS if grain in _COLUMN_SUFFIX)  # the library's, the templates know
SOURCES = ("files", "postgres")
LAYERS = ("bronze", "silver", "gold")  # a name starting with one of these gives the table's namespace
DEFAULT_NAMESPACE = "silver"
DEFAULT_CONN_ID = "source_db"
MAX_LENGTH = 40  # per name: the generated code then fits ruff's 120 columns as written
TEMPLATES = Path(__file__).parent / "templates"

# Lower snake case: a Python identifier, a DAG id, a file name and an SQL identifier at once.
_SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")

# The table's columns after `id` and the partition column (the contract; the SQL makes them).
_FILES_COLUMNS = {"status": "string", "amount": "decimal(12,2)", "updated_ts": "timestamp", "record_count": "bigint"}
_EVENTS_COLUMNS = {"event_ts": "timestamp", "status": "string", "amount": "decimal(12,2)"}
# What a table holds, by source: its shapes, the default first.
# latest: one row per id and partition, in its latest state (an entity's state, e.g. an order);
# events: every record once, as it landed (a fact, e.g. a click or a flight), re-sent copies dropped by id;
# changes: the rows of a database table changed in the partition, as they were then;
# merged: a table keyed by id into which each run merges its rows (a dimension), the newest updated_at winning.
SHAPES = {"files": ("latest", "events"), "postgres": ("changes", "merged")}
FORMATS = ("json", "csv", "parquet")  # landed files: JSON lines, CSV with a header, Parquet
_POSTGRES_COLUMNS = {"status": "string", "amount": "decimal(12,2)", "updated_at": "timestamp"}


# ---------------------------------------------------------------------------- the request
@dataclass(frozen=True)
class Spec:
    """What to create: every name the four files use, checked by `spec`."""

    name: str  # pipeline name, DAG id, DAG function, file stem
    table: str  # "namespace.table"
    grain: str  # "daily" or "hourly"
    source: str  # "files" or "postgres"
    dataset: str  # files: the landed dataset; postgres: "schema.table"
    conn_id: str = DEFAULT_CONN_ID  # postgres: the Airflow connection
    merge_key: str | None = None  # postgres: merge into a table keyed by this column (a dimension)
    shape: str = "latest"  # what a row is (`SHAPES`)
    format: str = "json"  # files: how they are landed (`FORMATS`)
    zone: str = "UTC"  # daily: the IANA time zone whose calendar days the partitions are

    @property
    def sql(self) -> str:
        return f"{self.name}.sql"

    @property
    def suite(self) -> str:
        return f"{self.table}.json"

    @property
    def view(self) -> str:
        return f"landed_{self.dataset}" if self.source == "files" else f"db_{self.dataset.split('.')[1]}"

    @property
    def partition_column(self) -> str | None:
        """The table's partition column; None for a merged table, which is not partitioned."""
        if self.merge_key:
            return None
        return ("event_" if self.source == "files" else "updated_") + _COLUMN_SUFFIX[self.grain]

    def paths(self, root: Path) -> list[Path]:
        """The four files, in the order they are written."""
        return [
            root / "dags" / f"{self.name}.py",
            root / "include" / "sql" / self.sql,
            root / "expectations" / self.suite,
            root / "tests" / f"test_{self.name}.py",
        ]


def spec(
    name: str,
    *,
    grain: str = "daily",
    source: str = "files",
    table: str | None = None,
    conn_id: str = DEFAULT_CONN_ID,
    merge: bool = False,
    shape: str | None = None,
    format: str | None = None,
    zone: str = "UTC",
) -> Spec:
    """Check the request's names and fill in the defaults: table `silver.<name>` (or `<layer>.<rest>`
    for a name `<layer>_<rest>`), landed dataset `<table's name>`, database table `public.<table's name>`.

    `source` is `files`, `files:<dataset>`, `postgres` or `postgres:<schema.table>`. `shape` is
    one of the source's `SHAPES` (default: its first); `merge` is `shape="merged"`: a table keyed
    by `id` into which each run merges its rows, the newest `updated_at` winning. `format`: how
    landed files are written (`FORMATS`, default JSON lines). `zone`: a daily pipeline's days
    are that IANA time zone's calendar days (`partition.daily_in`), not UTC's.
    """
    _check_snake("pipeline name", name)
    if grain not in GRAINS:
        raise TemplateError(f"grain {grain!r}: use one of {', '.join(GRAINS)}")
    try:
        partition.grain_named(grain, zone)
    except ValueError as exc:
        raise TemplateError(f"--zone {zone}: {exc}") from None
    if table is None:
        layer, _, rest = name.partition("_")
        table = f"{layer}.{rest}" if layer in LAYERS and rest else f"{DEFAULT_NAMESPACE}.{name}"
    parts = table.split(".")
    if len(parts) != 2:
        raise TemplateError(f"table {table!r}: write it as namespace.table, e.g. silver.{name}")
    for part in parts:
        _check_snake("table", part, shown=table)
    kind, _, detail = source.partition(":")
    if kind not in SOURCES:
        raise TemplateError(f"source {source!r}: use files[:<dataset>] or postgres[:<schema.table>]")
    if kind == "files":
        dataset = detail or parts[1]
        _check_snake("landed dataset", dataset)
    else:
        dataset = detail if "." in detail else f"public.{detail or parts[1]}"
        db_parts = dataset.split(".")
        if len(db_parts) != 2:
            raise TemplateError(f"database table {detail!r}: write it as schema.table, e.g. public.{parts[1]}")
        for part in db_parts:
            _check_snake("database table", part, shown=dataset)
        _check_snake("connection id", conn_id)
    if merge and shape not in (None, "merged"):
        raise TemplateError(f"--merge is --shape merged, not --shape {shape}: give one of them")
    shape = "merged" if merge else shape or SHAPES[kind][0]
    if shape not in SHAPES[kind]:
        other = [k for k, shapes in SHAPES.items() if shape in shapes]
        needs = f"; --shape {shape} needs --source {other[0]}" if other else ""
        raise TemplateError(f"--shape {shape}: a {kind} source's shapes are {', '.join(SHAPES[kind])}{needs}")
    if format is not None and (kind != "files" or format not in FORMATS):
        raise TemplateError(f"--format {format}: landed files are one of {', '.join(FORMATS)}; a database has none")
    merge_key = "id" if shape == "merged" else None
    return Spec(name, table, grain, kind, dataset, conn_id, merge_key, shape=shape, format=format or "json", zone=zone)


def _check_snake(what: str, value: str, *, shown: str | None = None) -> None:
    if not _SNAKE.fullmatch(value) or keyword.iskeyword(value) or len(value) > MAX_LENGTH:
        raise TemplateError(
            f"{what} {shown or value!r} must be lower snake case (a-z, 0-9, single underscores, "
            f"starting with a letter, at most {MAX_LENGTH} characters) and not a Python keyword"
        )


# ---------------------------------------------------------------------------- what exists
@dataclass(frozen=True)
class Declared:
    """The names the repository's DAG files and suites already use."""

    dag_ids: frozenset[str]
    pipelines: frozenset[str]
    tables: frozenset[str]


def declared(root: Path = REPO_ROOT) -> Declared:
    """DAG ids, pipeline names and tables declared in `dags/` and `tests/dags/` (the test DAG
    folder holds both), and the tables of the suites in `expectations/`."""
    dag_ids: set[str] = set()
    pipelines: set[str] = set()
    tables: set[str] = set()
    for path in sorted([*(root / "dags").glob("*.py"), *(root / "tests" / "dags").glob("*.py")]):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError):
            dag_ids.add(path.stem)  # unreadable: at least its usual DAG id is taken
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for decorator in node.decorator_list:
                    if _called_name(decorator) == "dag":
                        dag_ids |= _text_argument(decorator, "dag_id") or {node.name}
            elif isinstance(node, ast.Call):
                called = _called_name(node.func)
                if called == "DAG":
                    dag_ids |= _text_argument(node, "dag_id", 0)
                elif called == "Pipeline":
                    pipelines |= _text_argument(node, "name", 0)
                    tables |= _text_argument(node, "table", 1)
    for path in sorted((root / "expectations").glob("*.json")):
        tables.add(path.stem)
        try:
            name = json.loads(path.read_text(encoding="utf-8")).get("name")
        except (ValueError, UnicodeDecodeError, AttributeError):
            continue
        if isinstance(name, str):
            tables.add(name)
    return Declared(frozenset(dag_ids), frozenset(pipelines), frozenset(tables))


def _called_name(node: ast.expr) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    return None


def _text_argument(call: ast.expr, name: str, index: int | None = None) -> set[str]:
    """The call's argument `name` (else its positional argument `index`) if a non-empty string literal,
    as a set of it; else an empty set (not a call, no such argument, or not written as a literal)."""
    if not isinstance(call, ast.Call):
        return set()
    given = [item.value for item in call.keywords if item.arg == name]
    given += call.args[index : index + 1] if index is not None else []
    for value in given:
        if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value:
            return {value.value}
    return set()


def conflicts(request: Spec, root: Path = REPO_ROOT) -> list[str]:
    """Everything of the request already taken in the repository at `root` (empty: free)."""
    found = [
        f"{path.relative_to(root)} exists"
        for path in [*request.paths(root), root / "tests" / "dags" / f"{request.name}.py"]
        if path.exists()
    ]
    names = declared(root)
    shadowed = _module_shadowed(request.name, root)
    if shadowed:
        found.append(shadowed)
    if request.name in names.dag_ids:
        found.append(f"a DAG with id {request.name!r} is declared")
    if request.name in names.pipelines:
        found.append(f"a pipeline named {request.name!r} is declared")
    if request.table in names.tables:
        found.append(f"table {request.table} is declared (by a DAG's Pipeline or a suite in expectations/)")
    return found


def _module_shadowed(name: str, root: Path) -> str | None:
    """dags/ is on the import path of workers and tests: dags/<name>.py would hide a module of that name."""
    if name in sys.stdlib_module_names:
        return f"{name!r} is a module of Python's standard library: dags/{name}.py would shadow it"
    for folder in ("plugins", "tests"):  # the repository's other import roots (pyproject's pythonpath)
        for candidate in (root / folder / f"{name}.py", root / folder / name):
            if candidate.exists():
                return f"{candidate.relative_to(root)} exists: dags/{name}.py would shadow it"
    try:
        found = sys.modules[name].__spec__ if name in sys.modules else importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None) or ""
    if found is None or (origin and Path(origin).resolve().parent == (root / "dags").resolve()):
        return None  # nothing, or the DAG file itself (reported as existing)
    return f"{name!r} is an importable module ({origin or 'a package'}): dags/{name}.py would shadow it"


# ---------------------------------------------------------------------------- rendering
@functools.cache
def environment(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    """The templates' Jinja environment; `loader`: read them from elsewhere (default `TEMPLATES`)."""
    import jinja2  # here: `wap.cli` imports this module for every command

    env = jinja2.Environment(
        loader=loader or jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,  # a name the code does not give is an error, not an empty string
        keep_trailing_newline=True,
        autoescape=False,  # Python, SQL and text, not HTML
        trim_blocks=True,  # a line holding only {% ... %} leaves nothing in the output
        lstrip_blocks=True,
    )
    env.filters["reflow"] = _reflow
    return env


def context(request: Spec) -> dict[str, Any]:
    """The names the templates are given (each template's header says which it uses)."""
    grain = partition.grain_named(request.grain, request.zone)
    unit = grain.unit  # DAY or HOUR, in SQL intervals
    return {
        **asdict(request),  # name, table, grain, source, dataset, conn_id, merge_key, shape, format, zone
        "zoned": grain.zoned,
        "sample": _sample(grain),
        "sql": request.sql,
        "suite": request.suite,
        "view": request.view,
        "partition_column": request.partition_column,
        "merged": request.merge_key is not None,
        "unit": unit,
        "period": unit.lower(),  # day or hour, in prose
    }


def _sample(grain: partition.Grain) -> dict[str, str]:
    """The generated test's moments (UTC, ISO) for a local day's pipeline: in the day 2024-01-01,
    at its edges and just outside it, on the zone's clock (the UTC grains' are in the template)."""
    start, end = grain.window(dt.date(2024, 1, 1))

    def utc(moment: dt.datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S")

    second = dt.timedelta(seconds=1)
    return {
        "logical_date": f"dt.datetime({start.year}, {start.month}, {start.day}, {start.hour}, tzinfo=dt.UTC)",
        "first": utc(start + dt.timedelta(hours=8)),
        "later": utc(start + dt.timedelta(hours=9, minutes=30)),
        "last": utc(end - second),
        "before": utc(start - second),
        "next_start": utc(end),
    }


def suite(request: Spec) -> dict[str, Any]:
    """The expectation suite: the table's contract (its columns and types) and the gate's checks."""
    column = request.partition_column  # None: a merged table, which is not partitioned
    columns = {"id": "string", **({column: partition.GRAINS[request.grain].column_type} if column else {})}
    columns |= {"latest": _FILES_COLUMNS, "events": _EVENTS_COLUMNS}.get(request.shape, _POSTGRES_COLUMNS)
    contract = {"version": 1, **({"partition_column": column} if column else {})}
    contract |= {"on_added_column": "block", "columns": columns}

    def expect(kind: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": f"expect_{kind}", "kwargs": kwargs}

    expectations = [
        expect("table_row_count_to_be_between", min_value=1),
        expect("column_values_to_not_be_null", column="id"),
        expect("column_values_to_be_unique", column="id"),
        *([expect("column_values_to_not_be_null", column=column)] if column else []),
        expect("column_values_to_not_be_null", column="amount"),
        expect("column_values_to_be_between", column="amount", min_value=0, max_value=1000000),
        expect("column_values_to_be_in_set", column="status", value_set=["new", "active", "closed"]),
        {**expect("column_values_to_not_be_null", column="status"), "meta": {"severity": "warning"}},
    ]
    return {"name": request.table, "meta": {"contract": contract}, "expectations": expectations}


def render(request: Spec) -> dict[str, str]:
    """The four files' text, by their path relative to the repository root, in the order written."""
    values = context(request)
    dag_file, sql_file, suite_file, test_file = request.paths(Path())
    texts = {
        dag_file: environment().get_template("dag.py.j2").render(values),
        sql_file: environment().get_template("transform.sql.j2").render(values),
        suite_file: json.dumps(suite(request), indent=2) + "\n",
        test_file: environment().get_template("test_pipeline.py.j2").render(values),
    }
    for path in (dag_file, test_file):  # a template mistake shows here, not in the user's first run
        try:
            ast.parse(texts[path], filename=str(path))
        except SyntaxError as exc:
            raise TemplateError(f"the template made {path} invalid Python ({exc}); nothing was written") from exc
    return {str(path): text for path, text in texts.items()}


def _reflow(text: str, width: int = sys.maxsize) -> str:
    """The filter `reflow`: the words of `text` on lines of at most `width` characters (default: one line)."""
    return textwrap.fill(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


# ---------------------------------------------------------------------------- writing
def create(request: Spec, root: Path = REPO_ROOT) -> list[Path]:
    """Write the four files of a new pipeline (`spec(...)`) under `root`; return their paths.

    Raises `TemplateError`, with nothing written, for anything already taken.
    """
    taken = conflicts(request, root)
    if taken:
        listed = "".join(f"\n  - {item}" for item in taken)
        raise TemplateError(f"pipeline {request.name!r} not created, nothing was written:{listed}")
    texts = render(request)  # all four rendered (and checked) before the first is written
    written: list[Path] = []
    try:
        for relative, text in texts.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as handle:  # "x": never overwrite, even in a race
                handle.write(text)
            written.append(path)
    except BaseException:  # a full disk, a permission, an interrupt: all four or none
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def next_steps(request: Spec, written: list[Path], root: Path = REPO_ROOT) -> str:
    """What the command prints: the files and what to do with them."""
    dag_file, sql_file, suite_file, test_file = (str(path.relative_to(root)) for path in written)
    files = {"dag_file": dag_file, "sql_file": sql_file, "suite_file": suite_file, "test_file": test_file}
    width = max(len(path) for path in files.values())
    text = environment().get_template("next_steps.txt.j2").render(context(request), **files, width=width)
    return text.rstrip("\n")


# ---------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> str:
    """Carry out `new` (its options are `wap.cli`'s `new` command); return what to print.
    Raises `TemplateError` (a ValueError) when refused."""
    request = spec(
        args.name,
        grain=args.grain,
        source=args.source,
        table=args.table,
        conn_id=args.conn_id,
        merge=args.merge,
        shape=args.shape,
        format=args.format,
        zone=args.zone,
    )
    return next_steps(request, create(request))
