"""The quality gate: a table's schema contract, then its Great Expectations suite.

Both live in one file per table, `expectations/<table>.json`: a GX 1.x suite whose
`meta.contract` holds the contract (columns and types, partition column, version,
policy for added columns). Each expectation may set `meta.severity` to `warning`
(recorded, published anyway); the default is `blocking`.

An expectation that raises inside GX counts as failed, never as passed.

Two more checks come from the suite's `meta` and the run itself, in the same report:
- `meta.volume`: the partition's row count against the median of the table's recent
  partitions (`min_share_of_median`, over `recent_partitions`, once `min_history` exist);
- rejected source records (see `sources.take_in`): blocking above the source's allowed share.

Speed: the common expectation types (below, `_compile`) are evaluated by the gate itself,
with GX's semantics (held to GX case by case by the tests): their aggregates are measured
while the stage writes the staged files (`Gate.observe`), each uniqueness check is one pass
over the written key columns, and a passing audit judges those values without reading the
data (ADR 0017). GX evaluates every other type, and re-runs the failed ones to report their
counts and sample values; its verdict is final.

Spark Connect: GX 1.24 validates a Spark Connect DataFrame as it does a classic one (its
Spark datasource accepts both and its metrics use the DataFrame API only; compiled and
GX-only types give the same verdicts, counts and samples: tests/test_spark_connect.py).
Two things outside GX's checks of the frame: the types GX evaluates with Python UDFs
(`..._match_strftime_format`, `..._json_parseable`, `..._match_json_schema`) need Spark's
Python workers to have pyarrow, else the expectation raises (`ModuleNotFoundError: No module
named 'pyarrow'` from the worker) and fails the gate (`wap.spark` gives the workers this
Python); and GX leaves the frame cached, which on a shared server outlives the task, so
`run_suite` uncaches it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wap.contract import Contract
from wap.errors import SuiteError
from wap.ledger import bounded
from wap.settings import REPO_ROOT, load_settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from wap.partition import Grain
    from wap.sources import Intake

BLOCKING, WARNING = "blocking", "warning"
SAMPLE_VALUES = 5
# Names of the gate's own checks (GX expectations are named by their type).
PRESENT, TYPED, ADDED = "contract: column present", "contract: column type", "contract: no added columns"
VOLUME, REJECTS = "volume: rows vs recent partitions", "source: rejected records"


@dataclass
class Finding:
    check: str
    column: str | None
    severity: str
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[Any] = field(default_factory=list)
    message: str = ""


@dataclass
class AuditReport:
    rows: int | None  # None: the run stopped before anything was staged
    findings: list[Finding]

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == BLOCKING]

    @property
    def passed(self) -> bool:
        return not self.blocking

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "passed": self.passed, "findings": [asdict(f) for f in self.findings]}

    def summary(self) -> str:
        """A short table for the task log."""
        if not self.findings:
            return f"quality gate passed: {self.rows} rows, all checks met"
        verdict = "PASSED with warnings" if self.passed else "FAILED"
        on = "the landed records" if self.rows is None else f"{self.rows} rows"
        lines = [f"quality gate {verdict} on {on}:"]
        lines.append(f"  {'severity':<9} {'check':<48} {'column':<16} {'unexpected':>10}  observed / sample")
        for f in self.findings:
            shown = f.message or (f.sample if f.sample else f.observed)
            lines.append(
                f"  {f.severity:<9} {f.check:<48} {f.column or ''!s:<16} "
                f"{'' if f.unexpected_count is None else f.unexpected_count:>10}  {str(shown)[:80]}"
            )
        return "\n".join(lines)


def load_suite(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The suite JSON `expectations/<name>`; cached per process (treat as read-only).

    Cached by the file's path and version, not by `name`: a process that points
    WAP_EXPECTATIONS_DIR elsewhere, or edits the file, reads what is there now.
    """
    path = Path(directory or load_settings().expectations_dir) / name
    version = path.stat()
    return _read_suite(str(path), version.st_mtime_ns, version.st_size)


@cache
def _read_suite(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def load_contract(suite: dict[str, Any]) -> Contract:
    raw = suite.get("meta", {}).get("contract")
    if not raw:
        raise ValueError(f"suite {suite.get('name')!r} has no meta.contract")
    return Contract(
        version=int(raw["version"]),
        partition_column=raw.get("partition_column"),
        columns=dict(raw["columns"]),
        on_added_column=raw.get("on_added_column", "block"),
    )


# ------------------------------------------------------------------ the load-time check
# A suite is checked against its own contract when its pipeline loads (at DAG import): a
# mistake that no data could satisfy (a typo in a column name, a regex on a number) is an
# import error in Airflow, not a day staged with Spark and then quarantined as bad data.
# JSON only: GX is not imported here (DAG files must stay light to parse).

# Every expectation type GX 1.x registers (1.24: `great_expectations.expectations.registry`).
GX_TYPES = frozenset(
    {
        "expect_column_distinct_values_to_be_in_set",
        "expect_column_distinct_values_to_contain_set",
        "expect_column_distinct_values_to_equal_set",
        "expect_column_kl_divergence_to_be_less_than",
        "expect_column_max_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_median_to_be_between",
        "expect_column_min_to_be_between",
        "expect_column_most_common_value_to_be_in_set",
        "expect_column_pair_values_a_to_be_greater_than_b",
        "expect_column_pair_values_to_be_equal",
        "expect_column_pair_values_to_be_in_set",
        "expect_column_proportion_of_non_null_values_to_be_between",
        "expect_column_proportion_of_unique_values_to_be_between",
        "expect_column_quantile_values_to_be_between",
        "expect_column_stdev_to_be_between",
        "expect_column_sum_to_be_between",
        "expect_column_to_exist",
        "expect_column_type_to_be",
        "expect_column_unique_value_count_to_be_between",
        "expect_column_value_lengths_to_be_between",
        "expect_column_value_lengths_to_equal",
        "expect_column_value_z_scores_to_be_less_than",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_dateutil_parseable",
        "expect_column_values_to_be_decreasing",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_increasing",
        "expect_column_values_to_be_json_parseable",
        "expect_column_values_to_be_null",
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_be_unique",
        "expect_column_values_to_match_json_schema",
        "expect_column_values_to_match_like_pattern",
        "expect_column_values_to_match_like_pattern_list",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_match_regex_list",
        "expect_column_values_to_match_strftime_format",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_not_be_outliers",
        "expect_column_values_to_not_match_like_pattern",
        "expect_column_values_to_not_match_like_pattern_list",
        "expect_column_values_to_not_match_regex",
        "expect_column_values_to_not_match_regex_list",
        "expect_compound_columns_to_be_unique",
        "expect_multicolumn_sum_to_equal",
        "expect_multicolumn_values_to_be_equal",
        "expect_query_results_to_match_comparison",
        "expect_select_column_values_to_be_unique_within_record",
        "expect_table_column_count_to_be_between",
        "expect_table_column_count_to_equal",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_columns_to_match_set",
        "expect_table_row_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_table_row_count_to_equal_other_table",
        "unexpected_rows_expectation",
    }
)
# The kwargs by which GX 1.x expectations name columns of the batch: one each, or a list.
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_COLUMN_LIST_KWARGS = ("column_list", "column_set")
SEVERITIES = (BLOCKING, WARNING)
ADDED_COLUMN_POLICIES = ("block", "allow")

# What the columns of a type must be; a type not listed takes a column of any type. From
# GX 1.24 itself: value lengths "only work for string-type values" (its docstring), and
# the pattern and parsing types read values as text; the bounds of between/min/max/median
# are numbers or dates (their pydantic fields), and GX on Spark 4 refuses a string or
# boolean column against them (`ColumnValuesBetween`); increasing/decreasing "only work
# for numeric or datetime data"; mean is refused by GX on a non-numeric Spark column, and
# sum, stdev, quantiles (numeric bounds only), z-scores and outliers are arithmetic.
TEXT, NUMBER, TIME, BOOL = "string", "numeric", "date/time", "boolean"
_TEXT_ONLY = frozenset({TEXT})
_ORDERED = frozenset({NUMBER, TIME})
_NUMBERS_ONLY = frozenset({NUMBER})
COLUMN_TYPE_RULES: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        (
            "expect_column_value_lengths_to_be_between",
            "expect_column_value_lengths_to_equal",
            "expect_column_values_to_match_regex",
            "expect_column_values_to_not_match_regex",
            "expect_column_values_to_match_regex_list",
            "expect_column_values_to_not_match_regex_list",
            "expect_column_values_to_match_like_pattern",
            "expect_column_values_to_not_match_like_pattern",
            "expect_column_values_to_match_like_pattern_list",
            "expect_column_values_to_not_match_like_pattern_list",
            "expect_column_values_to_match_strftime_format",
            "expect_column_values_to_be_dateutil_parseable",
            "expect_column_values_to_be_json_parseable",
            "expect_column_values_to_match_json_schema",
        ),
        _TEXT_ONLY,
    ),
    **dict.fromkeys(
        (
            "expect_column_values_to_be_between",
            "expect_column_min_to_be_between",
            "expect_column_max_to_be_between",
            "expect_column_median_to_be_between",
            "expect_column_values_to_be_increasing",
            "expect_column_values_to_be_decreasing",
        ),
        _ORDERED,
    ),
    **dict.fromkeys(
        (
            "expect_column_mean_to_be_between",
            "expect_column_sum_to_be_between",
            "expect_column_stdev_to_be_between",
            "expect_column_quantile_values_to_be_between",
            "expect_column_value_z_scores_to_be_less_than",
            "expect_column_values_to_not_be_outliers",
            "expect_multicolumn_sum_to_equal",
        ),
        _NUMBERS_ONLY,
    ),
}
_NEEDS = {
    _TEXT_ONLY: "a string column (it reads values as text)",
    _ORDERED: "a numeric, date or timestamp column (it compares values with numbers or dates)",
    _NUMBERS_ONLY: "a numeric column (it does arithmetic on the values)",
}


def type_class(spark_type: str) -> str | None:
    """The class of a contract's column type that expectations care about (None: another type)."""
    name = _type_name(spark_type)
    if name == "string":
        return TEXT
    if name in _NUMERIC or name.startswith("decimal("):
        return NUMBER
    if name in ("date", "timestamp", "timestamp_ntz"):
        return TIME
    return BOOL if name == "boolean" else None


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=2, cutoff=0.6)
    # A runner-up about as close as the best is named too: the closest type to a typo can
    # be its opposite (`..._to_be_not_null`: `..._to_be_null`, then `..._to_not_be_null`).
    ratio = [difflib.SequenceMatcher(None, name, c).ratio() for c in close]
    close = [c for c, r in zip(close, ratio, strict=True) if r >= ratio[0] - 0.05]
    return f"did you mean {' or '.join(map(repr, close))}?" if close else ""


def _required_column_kwargs(kind: str) -> tuple[str, ...]:
    """The column kwargs an expectation type cannot go without (GX 1.x, by its family)."""
    if kind.startswith("expect_column_pair_"):
        return ("column_A", "column_B")
    if kind.startswith("expect_column_"):
        return ("column",)
    if kind.startswith(("expect_compound_columns_", "expect_multicolumn_", "expect_select_column_")):
        return ("column_list",)
    return {
        "expect_table_columns_to_match_ordered_list": ("column_list",),
        "expect_table_columns_to_match_set": ("column_set",),
    }.get(kind, ())


def contract_problems(raw: Any, grain: Grain | None, partitioned: bool) -> tuple[list[str], dict[str, str] | None]:
    """The contract's own problems, and its columns (None: unusable)."""
    if not isinstance(raw, dict):
        return ["meta.contract is missing: declare the table's columns and types there"], None
    problems, columns = [], raw.get("columns")
    if not isinstance(columns, dict) or not columns or not all(isinstance(t, str) for t in columns.values()):
        problems.append('meta.contract.columns must map each column to its type, e.g. {"id": "string"}')
        columns = None
    if isinstance(raw.get("version"), bool) or not isinstance(raw.get("version"), int):
        problems.append(f"meta.contract.version must be a whole number (1 for a new table), not {raw.get('version')!r}")
    policy = raw.get("on_added_column", "block")
    if policy not in ADDED_COLUMN_POLICIES:
        problems.append(f"meta.contract.on_added_column {policy!r} must be 'block' or 'allow'")
    if columns is None or grain is None:
        return problems, columns
    # The partition column against the pipeline's grain (until now checked at stage, once Spark was up).
    column = raw.get("partition_column")
    if column is None:
        if partitioned:
            problems.append(
                "meta.contract has no partition_column; only a merged pipeline (Pipeline(publish=Merge(...))) "
                "writes an unpartitioned table"
            )
    elif column not in columns:
        hint = _did_you_mean(str(column), columns) or f"the contract's columns are: {', '.join(columns)}"
        problems.append(f"meta.contract.partition_column {column!r} is not in the contract's columns; {hint}")
    elif _type_name(columns[column]) != grain.column_type:
        problems.append(
            f"partition column {column!r} is {columns[column]!r}, but {'an' if grain.name == 'hourly' else 'a'} "
            f"{grain.name} pipeline's partition column must be {grain.column_type!r}"
        )
    return problems, columns


def _expectation_problems(where: str, kind: str, kwargs: dict[str, Any], columns: dict[str, str]) -> list[str]:
    problems = []
    named: list[tuple[str, Any]] = [(key, kwargs[key]) for key in _COLUMN_KWARGS if key in kwargs]
    for key in _COLUMN_LIST_KWARGS:
        if key not in kwargs:
            continue
        if isinstance(kwargs[key], list) and kwargs[key]:
            named += [(f"{key}[{n}]", value) for n, value in enumerate(kwargs[key])]
        else:
            problems.append(f"{where}: kwargs.{key} must be a non-empty list of column names")
    for key in _required_column_kwargs(kind):
        if key not in kwargs:
            problems.append(f"{where}: kwargs.{key} is missing: name the column(s) it checks")
    needs = COLUMN_TYPE_RULES.get(kind)
    for key, column in named:
        if not isinstance(column, str):
            problems.append(f"{where}: {key} must be a column name, not {column!r}")
        elif column not in columns:
            hint = _did_you_mean(column, columns) or f"the contract's columns are: {', '.join(columns)}"
            problems.append(f"{where}: {key} {column!r} is not a column of the contract; {hint}")
        elif needs is not None and (found := type_class(columns[column])) is not None and found not in needs:
            problems.append(
                f"{where}: column {column!r} is {columns[column]}, but this expectation needs {_NEEDS[needs]}"
            )
    return problems


def suite_problems(
    suite: Any, *, grain: Grain | None = None, partitioned: bool = True, named: dict[str, str] | None = None
) -> list[str]:
    """Everything wrong with a suite whatever the data, checked against its own contract.

    Each expectation: a GX 1.x type, every column it names in the contract, of a type it
    can check (`COLUMN_TYPE_RULES`), `meta.severity` blocking or warning. The contract:
    columns, version, added-column policy, and (given the pipeline's `grain`) a partition
    column of the grain's type, absent only for a pipeline whose publish mode is not
    `partitioned` (`wap.publish.Merge`). `named`: more columns
    the pipeline names, by what names them (e.g. a merge key).
    """
    if not isinstance(suite, dict):
        return ["a suite must be a JSON object with meta.contract and expectations"]
    meta: dict[str, Any] = suite["meta"] if isinstance(suite.get("meta"), dict) else {}
    problems, columns = contract_problems(meta.get("contract"), grain, partitioned)
    for what, column in (named or {}).items():
        if columns is not None and column not in columns:
            hint = _did_you_mean(column, columns) or f"the contract's columns are: {', '.join(columns)}"
            problems.append(f"{what} {column!r} is not a column of the contract; {hint}")
    volume = meta.get("volume")
    if isinstance(volume, dict) and volume.get("severity", BLOCKING) not in SEVERITIES:
        problems.append(f"meta.volume.severity {volume['severity']!r} must be 'blocking' or 'warning'")
    expectations = suite.get("expectations")
    if not isinstance(expectations, list):
        return [*problems, "expectations must be a list (it may be empty)"]
    for n, expectation in enumerate(expectations):
        kind = expectation.get("type") if isinstance(expectation, dict) else None
        where = f"expectations[{n}] {kind}"
        if not isinstance(kind, str):
            problems.append(f'expectations[{n}] has no type: each expectation is {{"type": ..., "kwargs": {{...}}}}')
            continue
        if kind not in GX_TYPES:
            hint = _did_you_mean(kind, GX_TYPES) or "see https://greatexpectations.io/expectations/"
            problems.append(f"expectations[{n}]: unknown expectation type {kind!r} (not a GX 1.x type); {hint}")
            continue
        kwargs, own = expectation.get("kwargs", {}), expectation.get("meta", {})
        if not isinstance(kwargs, dict) or not isinstance(own, dict):
            problems.append(f"{where}: kwargs and meta must be JSON objects")
            continue
        if columns is not None:
            problems += _expectation_problems(where, kind, kwargs, columns)
        severity = own.get("severity", BLOCKING)
        if severity not in SEVERITIES:
            hint = _did_you_mean(str(severity), SEVERITIES) or "the default is 'blocking'"
            problems.append(f"{where}: meta.severity {severity!r} must be 'blocking' or 'warning'; {hint}")
    return problems


def check_suite(
    name: str,
    *,
    grain: Grain | None = None,
    partitioned: bool = True,
    named: dict[str, str] | None = None,
    pipeline: str | None = None,
    directory: str | Path | None = None,
) -> Contract:
    """Read the suite `name` and check it (`suite_problems`); its contract, or `SuiteError` naming every problem."""
    path = Path(directory or load_settings().expectations_dir) / name
    shown = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
    try:
        suite = load_suite(name, directory)
    except FileNotFoundError:
        raise SuiteError(shown, ["no such file (suites are read from WAP_EXPECTATIONS_DIR)"], pipeline) from None
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise SuiteError(shown, [f"cannot be read as JSON: {exc}"], pipeline) from None
    problems = suite_problems(suite, grain=grain, partitioned=partitioned, named=named)
    if problems:
        raise SuiteError(shown, problems, pipeline)
    return load_contract(suite)


def check_contract(df: DataFrame, contract: Contract) -> list[Finding]:
    """Schema drift against the contract, before any expectation runs.

    A missing column or a changed type blocks; an added column blocks or, if the contract
    allows added columns, is recorded as a warning (and left out of the published data).
    """
    found = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    added = {column: kind for column, kind in found.items() if column not in contract.columns}
    findings = []
    for column, expected in contract.columns.items():
        if column not in found:
            renamed = [other for other, kind in added.items() if kind == _type_name(expected)]
            hint = f"; renamed to {' or '.join(map(repr, renamed))}?" if renamed else ""
            message = f"missing column {column!r} (expected {expected}){hint}"
            findings.append(Finding(PRESENT, column, BLOCKING, message=message))
        elif found[column] != _type_name(expected):
            message = f"column {column!r}: expected {expected}, found {found[column]}"
            findings.append(Finding(TYPED, column, BLOCKING, observed=found[column], message=message))
    for column, kind in added.items():
        if contract.on_added_column == "allow":
            message = (
                f"added column {column!r} ({kind}) not published: declare it in the contract, "
                "with a version bump, to publish it"
            )
            findings.append(Finding(ADDED, column, WARNING, observed=kind, message=message))
        else:
            message = f"added column {column!r} ({kind}): the contract blocks added columns"
            findings.append(Finding(ADDED, column, BLOCKING, observed=kind, message=message))
    return findings


def _type_name(spark_type: str) -> str:
    return spark_type.replace(" ", "").lower()


def assertions(suite: dict[str, Any], findings: list[Finding], staged: bool = True) -> list[dict[str, Any]]:
    """Every check the gate ran, passed or not (`check`, `column`, `success`, `severity`):
    the source rejects; if the run `staged` its data, the contract per column; if the
    contract held, each expectation and the volume (they do not run on a broken schema)."""
    found = {(f.check, f.column): f for f in findings}
    contract = load_contract(suite)
    checks: list[tuple[str, str | None, str]] = [(REJECTS, None, BLOCKING)]
    if staged:
        checks += [(TYPED, c, BLOCKING) for c in contract.columns]
        checks.append((ADDED, None, WARNING if contract.on_added_column == "allow" else BLOCKING))
    if staged and not any(f.check in (PRESENT, TYPED, ADDED) and f.severity == BLOCKING for f in findings):
        for e in suite["expectations"]:
            kwargs, meta = e.get("kwargs") or {}, e.get("meta") or {}
            checks.append((e["type"], kwargs.get("column"), meta.get("severity", BLOCKING)))
        if suite.get("meta", {}).get("volume"):
            checks.append((VOLUME, None, suite["meta"]["volume"].get("severity", BLOCKING)))
    failed_columns = {f.column for f in findings if f.check in (PRESENT, TYPED)}
    added = [f for f in findings if f.check == ADDED]
    out = []
    for check, column, severity in checks:
        if check == TYPED:
            success = column not in failed_columns
        elif check == ADDED:
            success = not added
        else:
            success = (check, column) not in found
        out.append({"check": check, "column": column, "success": success, "severity": severity})
    return out


def merged_assertions(by_partition: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Several partitions' `assertions`, each check once: passed if it passed in every partition
    it ran on, with `params` naming how many partitions ran it and those where it failed (a
    range run's lineage: each partition's list one after another said each check once a day
    without saying which day, 750 entries for 30 days of the example suite)."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, checks in by_partition.items():
        seen: dict[tuple[Any, ...], int] = {}
        for check in checks:
            what = (check["check"], check.get("column"), check.get("severity"))
            seen[what] = seen.get(what, 0) + 1  # a suite may hold the same check twice
            entry = merged.setdefault(
                (*what, seen[what]), {**check, "success": True, "params": {"partitions": 0, "failed": []}}
            )
            entry["params"]["partitions"] += 1
            if not check["success"]:
                entry["success"] = False
                entry["params"]["failed"].append(key)
    for entry in merged.values():
        if not entry["params"]["failed"]:
            del entry["params"]["failed"]
    return list(merged.values())


def check_volume(rows: int, recent: list[int], rule: dict[str, Any] | None) -> list[Finding]:
    """The partition's row count against the median of `recent` partitions' counts."""
    if not rule or len(recent) < int(rule.get("min_history", 3)):
        return []
    median = statistics.median(recent)
    low = float(rule.get("min_share_of_median", 0)) * median
    high = rule.get("max_share_of_median")
    if low <= rows and (high is None or rows <= float(high) * median):
        return []
    bounds = f"at least {low:g}" + ("" if high is None else f" and at most {float(high) * median:g}")
    return [
        Finding(
            VOLUME,
            None,
            rule.get("severity", BLOCKING),
            observed={"rows": rows, "recent_median": median, "recent_partitions": len(recent)},
            message=f"{rows} rows; the median of the last {len(recent)} partitions is {median:g}, so {bounds}",
        )
    ]


def rejects_finding(intake: Intake, kept_in: str) -> Finding:
    """A source's rejected records as a gate finding: blocking above its allowed share."""
    reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(intake.rejected.items()))
    return Finding(
        REJECTS,
        None,
        BLOCKING if intake.too_many else WARNING,
        observed={
            "source": intake.source,
            "records": intake.own_records,
            "rejected": intake.rejected_total,
            "by_reason": intake.rejected,
            "allowed_share": intake.max_rejected_share,
            "kept_in": kept_in,
        },
        unexpected_count=intake.rejected_total,
        unexpected_percent=round(100 * intake.share, 4),
        sample=intake.sample,
        message=(
            f"{intake.rejected_total} of {intake.own_records} landed records of {intake.source} cannot be used "
            f"({reasons}); {intake.share:.2%} rejected, {intake.max_rejected_share:.2%} allowed; kept in {kept_in}"
        ),
    )


def run_suite(df: DataFrame, expectations: list[dict[str, Any]], *, known_failed: bool = False) -> list[Finding]:
    """Validate `df` with GX; a finding for every expectation not met.

    Two passes, the second only when needed: GX's cheapest result format (pass/fail),
    then the failed expectations again for their counts and samples. `known_failed`
    skips the first pass (the caller already knows they fail).
    """
    if not expectations:
        return []
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    # GX's info lines (closures it skips documenting, its temporary docs site) bury the run's
    # own in a task log or `wap preview`; a level set by the deployment is kept.
    if (gx_log := logging.getLogger("great_expectations")).level == logging.NOTSET:
        gx_log.setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batches = (
        context.data_sources.add_spark("staged")
        .add_dataframe_asset("staged")
        .add_batch_definition_whole_dataframe("all")
    )

    def validate(checks: list[dict[str, Any]], result_format: dict[str, Any]) -> list[Any]:
        batch = batches.get_batch(batch_parameters={"dataframe": df})
        return batch.validate(
            gx.ExpectationSuite(name="gate", expectations=checks), result_format=result_format
        ).results

    from pyspark.storagelevel import StorageLevel

    cached = df.storageLevel != StorageLevel.NONE
    try:
        if not known_failed:
            first = validate(expectations, {"result_format": "BOOLEAN_ONLY"})
            failed = [o for o in first if not o.success or _raised(o.exception_info)]
            if not failed:
                return []
            # GX may order results differently from the suite: take the configurations back.
            expectations = [o.expectation_config.to_json_dict() for o in failed]
        details = validate(expectations, {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_VALUES})
    finally:
        # GX caches the frame it validates and leaves it cached: on a shared Spark Connect
        # server that would outlive the task (a task process's own session dies with it).
        if not cached:
            df.unpersist()

    findings = []
    for outcome in details:
        config = outcome.expectation_config
        error = _raised(outcome.exception_info)
        if outcome.success and not error:
            # Only a single-pass verdict can be overturned here (a hash collision in the
            # uniqueness check): GX's exact evaluation is the reference.
            continue
        result = outcome.result or {}
        findings.append(
            Finding(
                check=config.type,
                column=config.kwargs.get("column"),
                severity=(config.meta or {}).get("severity", BLOCKING),
                observed=result.get("observed_value"),
                unexpected_count=result.get("unexpected_count"),
                unexpected_percent=result.get("unexpected_percent"),
                sample=[bounded(v) for v in list(result.get("partial_unexpected_list") or [])[:SAMPLE_VALUES]],
                message=f"expectation raised: {error}" if error else "",
            )
        )
    return findings


# ------------------------------------------------------------------ single-pass evaluation
# The compiled checks are aggregates: one pass computes them all, and that pass can be the
# staging write itself (`Gate.observe`: Spark's observed metrics of the write), so a passing
# partition's gate reads nothing again. Uniqueness is not an aggregate Spark can observe
# (no DISTINCT in observed metrics): it is a pass of its own over the key columns alone.
_NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double")


@dataclass(frozen=True)
class Duplicates:
    """A pass of its own: the rows whose `columns` values occur more than once, exactly.

    `skip`: rows left out when `any` or `all` of the columns are null (GX's ignore rule).
    Values: `<key>_n` rows considered, `<key>_u` rows in a group of two or more."""

    key: str
    columns: tuple[str, ...]
    skip: str


# (aggregate columns for the shared pass, built when measuring: a verdict needs no Spark;
# a duplicates pass or None; the verdict on the measured values)
Aggregates = Callable[[], dict[str, Any]]
Check = tuple[Aggregates, Duplicates | None, Callable[[dict[str, Any]], bool]]


def _share_ok(key: str, mostly: float) -> Callable[[dict[str, Any]], bool]:
    def ok(values: dict[str, Any]) -> bool:
        # GX: success when (1 - unexpected / considered) >= mostly; vacuous when none considered.
        considered, unexpected = values[f"{key}_n"] or 0, values[f"{key}_u"] or 0
        return considered == 0 or (1 - unexpected / considered) >= mostly

    return ok


def _compile(expectation: dict[str, Any], key: str, types: dict[str, str]) -> Check | None:
    """Aggregate columns and a verdict for one expectation, or None to leave it to GX.

    Only plain forms are compiled (no row_condition or other options); anything else,
    and any column the data does not have, goes to GX. Nothing here touches Spark: the
    aggregates are built when called.
    """
    kind, kwargs = expectation.get("type"), dict(expectation.get("kwargs") or {})
    mostly = float(kwargs.pop("mostly", 1.0))
    column = kwargs.pop("column", None)
    named = [column] if column else [*(kwargs.get(k) for k in ("column_A", "column_B") if k in kwargs)]
    named += list(kwargs.get("column_list") or [])
    if any(not isinstance(c, str) or c not in types for c in named):
        return None
    share_ok = _share_ok(key, mostly)

    def unexpected(considered: Callable[[Any], Any], bad: Callable[[Any], Any]) -> Check:
        """A check of the share of rows `considered` that are not `bad` (each given `F`, and
        `column`'s Spark column)."""

        def aggregates() -> dict[str, Any]:
            from pyspark.sql import functions as F

            col = F.col(f"`{column}`") if column else None
            return {f"{key}_n": F.count_if(considered(col)), f"{key}_u": F.count_if(considered(col) & bad(col))}

        return aggregates, None, share_ok

    def not_null(col: Any) -> Any:
        return col.isNotNull()

    if kind == "expect_table_row_count_to_be_between" and set(kwargs) <= {"min_value", "max_value"}:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if low is None and high is None:
            return None  # GX rejects this form; let it say so
        return (
            lambda: {},  # the gate's own row count
            None,
            lambda v: (low is None or v["_gate_rows"] >= low) and (high is None or v["_gate_rows"] <= high),
        )
    if kind == "expect_column_values_to_not_be_null" and not kwargs:
        from pyspark.sql import functions as F

        return unexpected(lambda col: F.lit(True), lambda col: col.isNull())
    if kind == "expect_column_values_to_be_unique" and not kwargs:
        return lambda: {}, Duplicates(key, (column,), "any"), share_ok
    if kind == "expect_compound_columns_to_be_unique" and set(kwargs) <= {"column_list", "ignore_row_if"}:
        skip = {"all_values_are_missing": "all", "any_value_is_missing": "any"}.get(
            kwargs.get("ignore_row_if", "all_values_are_missing")
        )
        return None if skip is None else (lambda: {}, Duplicates(key, tuple(kwargs["column_list"]), skip), share_ok)
    if kind == "expect_column_values_to_be_between" and set(kwargs) <= {
        "min_value",
        "max_value",
        "strict_min",
        "strict_max",
    }:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        numeric = (types[column] in _NUMERIC or types[column].startswith("decimal(")) and all(
            isinstance(b, int | float) for b in (low, high) if b is not None
        )
        if not numeric or (low is None and high is None):
            return None

        def outside(col: Any) -> Any:
            inside = col.isNotNull()
            if low is not None:
                inside = inside & ((col > low) if kwargs.get("strict_min") else (col >= low))
            if high is not None:
                inside = inside & ((col < high) if kwargs.get("strict_max") else (col <= high))
            return ~inside

        return unexpected(not_null, outside)
    if kind == "expect_column_value_lengths_to_be_between" and set(kwargs) <= {"min_value", "max_value"}:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if types[column] != "string" or (low is None and high is None):
            return None

        def wrong_length(col: Any) -> Any:
            from pyspark.sql import functions as F

            length, inside = F.length(col), col.isNotNull()
            if low is not None:
                inside = inside & (length >= low)
            if high is not None:
                inside = inside & (length <= high)
            return ~inside

        return unexpected(not_null, wrong_length)
    if kind == "expect_column_values_to_be_in_set" and set(kwargs) == {"value_set"}:
        values = list(kwargs["value_set"])
        if not values or not all(isinstance(x, str) for x in values) or types[column] != "string":
            return None
        return unexpected(not_null, lambda col: ~col.isin(values))
    if kind in _REGEX and set(kwargs) == {"regex"} and isinstance(kwargs["regex"], str):
        if types[column] != "string":
            return None
        # GX on Spark: `rlike` (Java regex, a match anywhere in the value), nulls not considered.
        regex, must = kwargs["regex"], _REGEX[kind]
        return unexpected(not_null, lambda col: ~col.rlike(regex) if must else col.rlike(regex))
    if kind in _PAIRS and set(kwargs) <= {"column_A", "column_B", *_PAIRS[kind]} and len(named) == 2:
        if kwargs.get("ignore_row_if", "both_values_are_missing") != "both_values_are_missing":
            return None
        first, second, or_equal = kwargs["column_A"], kwargs["column_B"], bool(kwargs.get("or_equal"))

        def pair() -> tuple[Any, Any]:
            from pyspark.sql import functions as F

            return F.col(f"`{first}`"), F.col(f"`{second}`")

        def unpaired(_: Any) -> Any:
            a, b = pair()
            return a.isNotNull() | b.isNotNull()

        def wrong(_: Any) -> Any:
            # A row with one value missing is considered. GX on Spark: a pair with one null is
            # unequal, but neither greater nor not greater (its condition is null: not unexpected).
            from pyspark.sql import functions as F

            a, b = pair()
            if kind == "expect_column_pair_values_to_be_equal":
                return ~F.coalesce(a == b, F.lit(False))
            return F.coalesce(~((a >= b) if or_equal else (a > b)), F.lit(False))

        return unexpected(unpaired, wrong)
    return None


# Regex types: True when a value must match. Pair types: the options compiled.
_REGEX = {"expect_column_values_to_match_regex": True, "expect_column_values_to_not_match_regex": False}
_PAIRS = {
    "expect_column_pair_values_to_be_equal": {"ignore_row_if"},
    "expect_column_pair_values_a_to_be_greater_than_b": {"or_equal", "ignore_row_if"},
}


def _rows(df: DataFrame, aggregates: dict[str, Any]) -> dict[str, Any]:
    row = df.agg(*[column.alias(name) for name, column in aggregates.items()]).first()
    assert row is not None  # an aggregation without grouping has exactly one row
    return row.asDict()


def _grouped(df: DataFrame, by: str | None, aggregates: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    """The aggregates over `df`, for each value of the column `by` (None: over all rows, key None)."""
    if by is None:
        return {None: _rows(df, aggregates)}
    found = df.groupBy(by).agg(*[column.alias(name) for name, column in aggregates.items()]).collect()
    return {row[by]: {name: row[name] for name in aggregates} for row in found}


# Uniqueness over at most this many rows (of a partition, or of a range's partitions together)
# is counted where the task runs: one read of each check's 64-bit key hash, 8 bytes a row and
# check, sorted by numpy. At 5M rows on 2 cores 0.7 s, against 4.2 s for Spark's GROUP BY of
# the hashes (a shuffle). Above it, the GROUP BY, whose memory is the executors'.
LOCAL_DUPLICATES_MAX_ROWS = 10_000_000


def _key_hash(check: Duplicates) -> Any:
    """A 64-bit hash of the key columns and of which of them are null (so `(a, null)` and
    `(null, a)` differ); null for a row GX skips (`ignore_row_if`)."""
    from functools import reduce

    from pyspark.sql import functions as F

    columns = [F.col(f"`{c}`") for c in check.columns]
    missing = [c.isNull() for c in columns]
    skipped = reduce((lambda x, y: x | y) if check.skip == "any" else (lambda x, y: x & y), missing)
    return F.when(~skipped, F.xxhash64(*columns, *missing))


def count_duplicates(df: DataFrame, check: Duplicates, by: str | None = None) -> dict[Any, dict[str, Any]]:
    """A `Duplicates` pass over `df` (its values for each value of `by`): one shuffle of the
    rows' key hashes (`_key_hash`). It counts GX's unexpected rows (those in a group of two
    or more), so `mostly` holds as GX's does. A hash collision can only join two groups, so
    it can only turn a pass into a failure, never a failure into a pass; a failure is
    re-checked by GX, whose exact answer is final (`Gate.findings`). Grouping by the hash
    costs ~20% less than by the values (5M string keys, 2 cores)."""
    from pyspark.sql import functions as F

    keys = [by] if by else []
    key = _key_hash(check).alias("_wap_key")
    counts = (
        df.select(*keys, key)
        .where(F.col("_wap_key").isNotNull())
        .groupBy(*keys, "_wap_key")
        .agg(F.count(F.lit(1)).alias("_wap_n"))
    )
    n = F.col("_wap_n")
    return _grouped(counts, by, {f"{check.key}_n": F.sum(n), f"{check.key}_u": F.sum(F.when(n > 1, n).otherwise(0))})


def count_duplicates_locally(
    df: DataFrame, checks: list[Duplicates], by: str | None = None
) -> dict[Any, dict[str, int]]:
    """The same counts as `count_duplicates`, for every check in one read of `df`: the key
    hashes (and the value of `by`) brought here over Arrow, put in order by value of `by`, and
    each value's hashes sorted; a run of equal hashes is a group. (`np.sort` of one array, not
    `np.lexsort` of two keys: ~10x faster at 5M rows.)"""
    import numpy as np
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    read = df.select(*([F.col(by).alias("_wap_by")] if by else []), *[_key_hash(c).alias(c.key) for c in checks])
    table = read.toArrow()
    if by:  # each value of `by` a small integer (its position in `values`); a null is one value too
        encoded = pc.dictionary_encode(table.column("_wap_by")).combine_chunks()
        values: list[Any] = [*encoded.dictionary.to_pylist(), None]
        codes = pc.fill_null(encoded.indices, len(values) - 1).to_numpy(zero_copy_only=False)
    else:
        values, codes = [None], None
    counted: dict[Any, dict[str, int]] = {}
    for check in checks:
        column = table.column(check.key).combine_chunks()
        hashes, groups = column.fill_null(0).to_numpy(zero_copy_only=False), codes
        if column.null_count:  # rows GX skips
            kept = column.is_valid().to_numpy(zero_copy_only=False)
            hashes, groups = hashes[kept], None if groups is None else groups[kept]
        if groups is None:
            rows = np.array([hashes.size])
        else:  # a stable sort of small integers: each value's rows together, in one pass
            hashes = hashes[np.argsort(groups, kind="stable")]
            rows = np.bincount(groups, minlength=len(values))
        start = 0
        for value, n in zip(values, rows.tolist(), strict=True):
            if n:
                unexpected = _in_a_group(np.sort(hashes[start : start + n]))
                counted.setdefault(value, {}).update({f"{check.key}_n": n, f"{check.key}_u": unexpected})
            start += n
    return counted  # values of `by` without rows are left out, as by `count_duplicates`


def _in_a_group(ordered: Any) -> int:
    """How many of the sorted hashes `ordered` are in a run of two or more equal ones."""
    import numpy as np

    same = ordered[1:] == ordered[:-1]
    grouped = np.zeros(ordered.size, dtype=bool)
    grouped[1:] |= same
    grouped[:-1] |= same
    return int(np.count_nonzero(grouped))


@dataclass
class Gate:
    """One suite's checks planned for frames of one shape: what to measure, and the verdicts.

    `aggregates` are one pass (with the caller's `also`); `passes` are the duplicates passes.
    Both can be measured over a frame at any time (`measure`), or the aggregates observed
    while the frame is written (`observe`) and the passes run on the written key columns.
    """

    expectations: list[dict[str, Any]]
    types: dict[str, str]  # the frame's column types it was planned for
    compiled: dict[int, Check]
    also: dict[str, Any]  # the caller's aggregates, by name (values None: judging only)
    passes: list[Duplicates]

    # The expectations (by position) left to GX although they compile: see `plan_for`.
    left: frozenset[int] = frozenset()

    @classmethod
    def plan(
        cls,
        expectations: list[dict[str, Any]],
        types: dict[str, str],
        also: dict[str, Any] | None = None,
        left: frozenset[int] = frozenset(),
    ) -> Gate:
        compiled: dict[int, Check] = {}
        for i, expectation in enumerate(expectations):
            check = None if i in left else _compile(expectation, f"e{i}", types)
            if check is not None:
                compiled[i] = check
        passes = [own for _, own, _ in compiled.values() if own is not None]
        return cls(expectations, dict(types), compiled, dict(also or {}), passes, frozenset(left))

    @property
    def aggregates(self) -> dict[str, Any]:
        """The aggregate columns of the shared pass (built now: this needs Spark)."""
        from pyspark.sql import functions as F

        aggregates = {"_gate_rows": F.count(F.lit(1)), **self.also}
        for parts, _, _ in self.compiled.values():
            aggregates.update(parts())
        return aggregates

    @property
    def key_columns(self) -> list[str]:
        """The columns the duplicates passes read."""
        return sorted({c for check in self.passes for c in check.columns})

    def observe(self, df: DataFrame) -> tuple[DataFrame, Callable[[], dict[str, Any]]]:
        """`df` with the aggregates observed: write it, then call the second value for them."""
        from pyspark.sql import Observation

        observation = Observation("wap_gate")
        observed = df.observe(observation, *[column.alias(name) for name, column in self.aggregates.items()])
        return observed, lambda: dict(observation.get)

    def measure(self, df: DataFrame, by: str | None = None) -> dict[Any, dict[str, Any]]:
        """The aggregates and the passes over `df` (for each value of `by`), read from it."""
        values = _grouped(df, by, self.aggregates)
        return self.count(df, values, by)

    def count(
        self, df: DataFrame | None, values: dict[Any, dict[str, Any]], by: str | None = None
    ) -> dict[Any, dict[str, Any]]:
        """`values` with the duplicates passes over `df` added (None, or a group without rows: none found)."""
        counted: dict[Any, dict[str, Any]] = {}
        if df is not None and self.passes:
            if sum(int(v["_gate_rows"] or 0) for v in values.values()) <= LOCAL_DUPLICATES_MAX_ROWS:
                counted = count_duplicates_locally(df, self.passes, by)
            else:
                for check in self.passes:
                    for key, found in count_duplicates(df, check, by).items():
                        counted.setdefault(key, {}).update(found)
        none_found = {f"{c.key}_{v}": 0 for c in self.passes for v in "nu"}
        for key in values:
            values[key].update(none_found | counted.get(key, {}))
        return values

    def findings(self, values: dict[str, Any], frame: Callable[[], DataFrame]) -> list[Finding]:
        """The findings, given the measured values: compiled checks that failed are confirmed
        (with samples) by GX, which also runs every expectation not compiled. `frame` gives
        the data for GX, and is called only when GX has something to run."""
        failed = [self.expectations[i] for i, (_, _, verdict) in self.compiled.items() if not verdict(values)]
        others = [e for i, e in enumerate(self.expectations) if i not in self.compiled]
        if not failed and not others:
            return []
        df = frame()
        return run_suite(df, failed, known_failed=True) + run_suite(df, others)


def _types(df: DataFrame) -> dict[str, str]:
    return {f.name: f.dataType.simpleString() for f in df.schema.fields}


def _raised(exception_info: Any) -> str | None:
    """GX records errors instead of raising; find one in either of its two shapes."""
    if not exception_info:
        return None
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            message = str(info.get("exception_message") or "error")
            # A Spark error puts its cause last (a Python worker's traceback): keep both ends.
            return message if len(message) <= 500 else f"{message[:150]} … {message[-350:]}"
    return None


def suite_digest(suite: dict[str, Any]) -> str:
    """What a measurement was planned from: the suite's expectations and contract."""
    meta = suite.get("meta", {})
    planned = {"expectations": suite.get("expectations"), "contract": meta.get("contract")}
    return hashlib.sha256(json.dumps(planned, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_for(df: DataFrame, suite: dict[str, Any], also: dict[str, Any] | None = None) -> tuple[list[Finding], Gate]:
    """The contract's findings on `df`'s schema (no data read) and the gate's plan for `df`:
    with a blocking contract finding the expectations are meaningless, and only `also` is measured."""
    contract = check_contract(df, load_contract(suite))
    broken = any(f.severity == BLOCKING for f in contract)
    gate = Gate.plan([] if broken else suite["expectations"], _types(df), also)
    if refused := _patterns_java_refuses(df, gate):
        # Compiled, a regex Java refuses would fail the staging write itself; left to GX, it is
        # an expectation that raised, a failed check like any other (the run is quarantined).
        gate = Gate.plan(gate.expectations, gate.types, also, frozenset(refused))
    return contract, gate


def measurement(suite: dict[str, Any], contract: list[Finding], gate: Gate, values: dict[str, Any]) -> dict[str, Any]:
    """What a stage records of its measure (XCom-safe): enough for `remeasured` to judge it later."""
    return {
        "suite": suite_digest(suite),
        "types": gate.types,
        "left_to_gx": sorted(gate.left),
        "contract": [asdict(f) for f in contract],
        "values": values,
    }


def remeasured(
    suite: dict[str, Any], measured: dict[str, Any] | None
) -> tuple[list[Finding], Gate, dict[str, Any]] | None:
    """The contract's findings, the gate's plan and the values of a recorded `measurement`,
    planned as the stage planned them (no Spark); None if there is none, or it was measured
    under another suite than `suite` (the files must then be measured again)."""
    if measured is None or measured["suite"] != suite_digest(suite):
        return None
    contract = [Finding(**f) for f in measured["contract"]]
    broken = any(f.severity == BLOCKING for f in contract)
    left = frozenset(measured.get("left_to_gx", ()))
    gate = Gate.plan([] if broken else suite["expectations"], measured["types"], left=left)
    return contract, gate, measured["values"]


def _patterns_java_refuses(df: DataFrame, gate: Gate) -> set[int]:
    """The compiled regex expectations whose pattern Spark (Java's regex) refuses, found by
    one query of a one-row frame (a query per pattern only when one is refused)."""
    from pyspark.sql import functions as F

    patterns = {
        i: gate.expectations[i]["kwargs"]["regex"] for i in gate.compiled if gate.expectations[i].get("type") in _REGEX
    }

    def refused(some: list[str]) -> bool:
        try:
            df.sparkSession.range(1).select(*[F.lit("").rlike(p) for p in some]).collect()
        except Exception:  # Spark's error for a bad pattern differs by version and by Connect
            return True
        return False

    if not patterns or not refused(list(patterns.values())):
        return set()
    return {i for i, pattern in patterns.items() if refused([pattern])}


def judge(
    suite: dict[str, Any],
    contract: list[Finding],
    gate: Gate,
    values: dict[str, Any],
    frame: Callable[[], DataFrame],
    recent_rows: list[int] | None = None,
) -> tuple[AuditReport, dict[str, Any]]:
    """The gate's report from measured `values` (`Gate.measure` or `Gate.observe`): the
    contract's findings, the suite's, then the volume against `recent_rows` (the table's
    recent partitions' counts). Returns it with the values of the caller's `also`."""
    findings = list(contract) + gate.findings(values, frame)
    rows = int(values["_gate_rows"])
    findings += check_volume(rows, recent_rows or [], suite.get("meta", {}).get("volume"))
    return AuditReport(rows=rows, findings=findings), {name: values[name] for name in gate.also}


def audit(
    df: DataFrame,
    suite: dict[str, Any],
    also: dict[str, Any] | None = None,
    recent_rows: list[int] | None = None,
) -> tuple[AuditReport, dict[str, Any]]:
    """The gate over `df`, read once for the aggregates (plus once per duplicates pass):
    contract first (a broken schema makes expectations meaningless), then the suite, then
    the volume. `also`: more aggregate columns to compute in the same pass (returned by name).
    """
    contract, gate = plan_for(df, suite, also)
    return judge(suite, contract, gate, gate.measure(df)[None], lambda: df, recent_rows)


def audit_by(
    df: DataFrame,
    by: str,
    keys: list[str],
    suite: dict[str, Any],
    also: dict[str, Any] | None = None,
    live_rows: dict[str, int] | None = None,
) -> dict[str, tuple[AuditReport, dict[str, Any]]]:
    """`audit` for each partition of a range run, `df`'s rows being the partition named by
    the column `by`: the compiled checks of every partition in one grouped aggregation (and
    one per duplicates pass); GX only for a partition whose compiled checks failed, or for
    expectations it cannot compile, on that partition's rows alone. Each partition is
    judged as a run of it alone would be.

    `live_rows`: the row count of each live partition of the table. The volume of partition
    K is checked against the partitions live before K, as if the range's partitions before K
    had been run one by one first: those that pass count, with their new row counts.
    """
    from pyspark.sql import functions as F

    rows = df.drop(by)
    contract, gate = plan_for(rows, suite, also)
    measured = gate.measure(df, by)
    if missing := [k for k in keys if k not in measured]:  # a partition without rows: an empty frame's values
        empty = gate.measure(rows.where(F.lit(False)))[None]
        measured |= {k: dict(empty) for k in missing}

    def rows_of(key: str) -> DataFrame:
        return df.where(F.col(by) == key).drop(by)

    rule = suite.get("meta", {}).get("volume")
    live = dict(live_rows or {})
    reports = {}
    for key in keys:  # keys in order: the volume of each depends on the ones before
        recent = [n for _, n in sorted(((k, n) for k, n in live.items() if k < key), reverse=True)]
        if rule:
            recent = recent[: int(rule.get("recent_partitions", 7))]
        report, values = judge(suite, contract, gate, measured[key], functools.partial(rows_of, key), recent)
        if report.passed:
            live[key] = report.rows or 0
        reports[key] = (report, values)
    return reports
