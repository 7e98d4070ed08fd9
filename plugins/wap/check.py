"""`wap check`: a pipeline's declaration checked without data, in the time Spark takes to start.

Three parts are checked, and every problem found is listed, not only the first:

- the suite against its contract (`Pipeline.check`: expectation types, the columns they name,
  severities, the partition column);
- the SQL, analysed by Spark against each source's columns (empty frames: no data is read);
- the SQL's result against the contract: every column present, of its type, nothing added
  that the contract does not allow (`audit.check_contract`, the gate's own rule).

Spark stops at the first name it cannot resolve. To find the next problems in the same run,
something stands in for that name in the SQL's text (Spark's closest suggestion, else NULL)
and the SQL is analysed again; a result column of NULL's type (VOID) is then left unjudged,
and the result's problems found with a stand-in in place are marked as such.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wap import audit as gate
from wap import steps
from wap.errors import DataError, SuiteError, UnknownPipelineError
from wap.pipeline import Pipeline, declared_pipelines
from wap.settings import load_settings
from wap.sources import LandedFiles, PublishedTable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from wap.contract import Contract

SUITE, SOURCE, SQL, RESULT = "suite", "source", "sql", "result"
MAX_STAND_INS = 20  # names the SQL may get wrong before the check stops looking for more
_SAMPLE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # the partition the SQL's parameters are bound to


@dataclass(frozen=True)
class Problem:
    part: str  # SUITE, SOURCE, SQL or RESULT
    message: str  # what is wrong, and how to fix it


@dataclass
class Checked:
    """What `check` found for one pipeline: problems (each a reason to fail CI), and notes
    (what could not be checked, and warnings that do not fail)."""

    pipeline: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # the SQL's result: name -> Spark type

    @property
    def ok(self) -> bool:
        return not self.problems


def check(spark: SparkSession, pipeline: Pipeline) -> Checked:
    """Every problem of `pipeline` that shows without data (see the module's doc)."""
    found = Checked(pipeline.name)
    contract = _suite(pipeline, found)
    views = _source_views(spark, pipeline, found)
    if views is None:
        return found
    result, stand_ins = _analysed(spark, pipeline, views, found)
    if result is None:
        return found
    found.columns = {f.name: f.dataType.simpleString() for f in result.schema.fields}
    if contract is None:
        found.notes.append("the SQL's result was not compared with the contract: the contract has problems")
        return found
    staged = pipeline.publish.staged_result(result, list(contract.columns), lambda: None)
    for finding in gate.check_contract(staged, contract):
        if finding.observed == "void" and stand_ins:  # its type comes from a stand-in: unknown
            continue
        fix = _FIXES.get(finding.check, "")
        caveat = f" (found with stand-ins for {_names(stand_ins)})" if stand_ins else ""
        if finding.severity == gate.WARNING:
            found.notes.append(f"{finding.message}{caveat}")
        else:
            found.problems.append(Problem(RESULT, f"{finding.message}{caveat}: {fix}"))
    return found


_FIXES = {
    gate.PRESENT: "return it from the SQL, or remove it from the contract (with a version bump)",
    gate.TYPED: "CAST it in the SQL to the contract's type, or change the contract (with a version bump)",
    gate.ADDED: "drop it from the SQL's SELECT, or declare it in the contract (with a version bump)",
}


def _suite(pipeline: Pipeline, found: Checked) -> Contract | None:
    """The suite's problems into `found`; the contract, if it can be read."""
    try:
        return pipeline.check()
    except SuiteError as exc:
        found.problems += [Problem(SUITE, f"{exc.suite}: {problem}") for problem in exc.problems]
    try:  # the suite's contract may be sound while its expectations are not
        suite = gate.load_suite(pipeline.suite)
    except (OSError, ValueError):
        return None
    meta = suite.get("meta") if isinstance(suite, dict) else None
    raw = meta.get("contract") if isinstance(meta, dict) else None
    problems, _ = gate.contract_problems(raw, pipeline.grain, pipeline.publish.partitioned)
    return None if problems else gate.load_contract(suite)


def _source_views(spark: SparkSession, pipeline: Pipeline, found: Checked) -> dict[str, DataFrame] | None:
    """Each source's view as the SQL sees it, with no rows; None if one cannot be made."""
    views: dict[str, DataFrame] = {}
    for source in pipeline.sources:
        if isinstance(source, PublishedTable):
            try:
                views[source.view] = spark.createDataFrame([], _producer(source.table).ddl())
            except (UnknownPipelineError, SuiteError) as exc:
                found.notes.append(f"the SQL was not analysed: {source.view}'s columns are not known ({exc})")
                return None
        elif isinstance(source, LandedFiles):
            try:
                views[source.view] = source.empty(spark)
            except Exception as exc:  # Spark's ParseException (Classic or Connect)
                said = _spark_said(exc)
                found.problems.append(Problem(SOURCE, f"{source.view}: its schema is not Spark DDL ({said})"))
                return None
        else:
            try:
                views[source.view] = source.empty(spark)
            except Exception as exc:  # no connection, a database that does not answer
                found.notes.append(
                    f"the SQL was not analysed: {source.view}'s columns could not be read ({_spark_said(exc)}); "
                    f"they are once the connection is defined (AIRFLOW_CONN_{source.conn_id.upper()}) and its "
                    "database answers"
                )
                return None
    return views


def _producer(table: str) -> Contract:
    """The contract of the pipeline that publishes `table` (a published table's columns)."""
    for pipeline in declared_pipelines():
        if pipeline.table == table:
            return pipeline.contract
    raise UnknownPipelineError(f"no pipeline in {load_settings().dags_dir} publishes {table}")


def _analysed(
    spark: SparkSession, pipeline: Pipeline, views: dict[str, DataFrame], found: Checked
) -> tuple[DataFrame | None, list[str]]:
    """The SQL analysed on `views` (None if it does not analyse), and what stood in for the
    names Spark could not resolve."""
    for name, frame in views.items():
        frame.createOrReplaceTempView(name)
    partition = pipeline.grain.floor(_SAMPLE)
    try:
        text = pipeline.sql_text()
    except FileNotFoundError:
        found.problems.append(Problem(SQL, f"include/sql/{pipeline.sql}: no such file (WAP_SQL_DIR)"))
        return None, []
    replaced: list[str] = []
    # PySpark logs each analysis error with its whole plan; here the errors are the result.
    quiet = logging.getLogger("SQLQueryContextLogger")
    was_disabled, quiet.disabled = quiet.disabled, True
    try:
        while True:
            try:
                return steps.transformed(spark, pipeline, partition, text=text), replaced
            except DataError as exc:
                cause = exc.__cause__
                found.problems.append(Problem(SQL, f"include/sql/{pipeline.sql}: {_spark_said(cause)}"))
                stand_in = _stand_in(cause)
                if stand_in is None or len(replaced) >= MAX_STAND_INS:
                    return None, replaced
                (start, stop), value = stand_in
                replaced.append(text[start : stop + 1])
                text = f"{text[:start]}{value}{text[stop + 1 :]}"
    finally:
        quiet.disabled = was_disabled


def _spark_said(exc: BaseException | None) -> str:
    """Spark's message without its plan and stack: its first line that says something (a
    syntax error's message starts with an empty line)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


# What Spark cannot resolve and something can stand in for: a column, a struct's field, a function.
_STANDS_IN = ("UNRESOLVED_COLUMN", "UNRESOLVED_FIELD", "UNRESOLVED_ROUTINE")


def _stand_in(exc: BaseException | None) -> tuple[tuple[int, int], str] | None:
    """Where in the SQL text the name Spark could not resolve is (first and last character),
    and what stands in for it: Spark's closest suggestion (the name meant, most likely: the
    analysis goes on with its type), else NULL. None: nothing can."""
    condition = getattr(exc, "getCondition", lambda: None)() or ""
    contexts: list[Any] = getattr(exc, "getQueryContext", lambda: [])() or []
    if not condition.startswith(_STANDS_IN) or not contexts:
        return None
    proposal = (getattr(exc, "getMessageParameters", lambda: None)() or {}).get("proposal", "")
    closest = re.match(r"(`(?:[^`]|``)*`)(\.`(?:[^`]|``)*`)*", proposal)
    return (contexts[0].startIndex(), contexts[0].stopIndex()), closest.group(0) if closest else "NULL"


def _names(fragments: list[str]) -> str:
    return ", ".join(f"`{c}`" for c in fragments)
