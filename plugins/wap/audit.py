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
in one Spark aggregation over the staged data (plus one per uniqueness check), with GX's
semantics (held to GX case by case by the tests). GX evaluates every other type, and
re-runs the failed ones to report their counts and sample values; its verdict is final.

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

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wap.settings import load_settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from wap.sources import Intake

BLOCKING, WARNING = "blocking", "warning"
SAMPLE_VALUES = 5
# Names of the gate's own checks (GX expectations are named by their type).
PRESENT, TYPED, ADDED = "contract: column present", "contract: column type", "contract: no added columns"
VOLUME, REJECTS = "volume: rows vs recent partitions", "source: rejected records"


@dataclass(frozen=True)
class Contract:
    version: int
    partition_column: str | None  # None: the table is not partitioned (a merged dimension)
    columns: dict[str, str]
    on_added_column: str = "block"


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


@cache
def load_suite(name: str, directory: str | None = None) -> dict[str, Any]:
    """The suite JSON `expectations/<name>`; cached per process (treat as read-only)."""
    path = Path(directory or load_settings().expectations_dir) / name
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
                sample=list(result.get("partial_unexpected_list") or [])[:SAMPLE_VALUES],
                message=f"expectation raised: {error}" if error else "",
            )
        )
    return findings


# ------------------------------------------------------------------ single-pass evaluation
_NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double")
# (aggregates for the shared pass, aggregates for a pass of their own, verdict)
Check = tuple[dict[str, Any], dict[str, Any], Callable[[dict[str, Any]], bool]]


def _compile(expectation: dict[str, Any], key: str, types: dict[str, str]) -> Check | None:
    """Aggregate columns and a verdict for one expectation, or None to leave it to GX.

    Only plain forms are compiled (no row_condition or other options); anything else,
    and any column the data does not have, goes to GX.
    """
    from pyspark.sql import functions as F

    kind, kwargs = expectation.get("type"), dict(expectation.get("kwargs") or {})
    mostly = float(kwargs.pop("mostly", 1.0))
    column = kwargs.pop("column", None)
    if column is not None and column not in types:
        return None
    col = F.col(f"`{column}`") if column else None

    def share_ok(values: dict[str, Any]) -> bool:
        # GX: success when (1 - unexpected / considered) >= mostly; vacuous when none considered.
        considered, unexpected = values[f"{key}_n"], values[f"{key}_u"]
        return considered == 0 or (1 - unexpected / considered) >= mostly

    if kind == "expect_table_row_count_to_be_between" and set(kwargs) <= {"min_value", "max_value"}:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if low is None and high is None:
            return None  # GX rejects this form; let it say so
        aggregates = {f"{key}_rows": F.count(F.lit(1))}
        return (
            aggregates,
            {},
            lambda v: (low is None or v[f"{key}_rows"] >= low) and (high is None or v[f"{key}_rows"] <= high),
        )
    if kind == "expect_column_values_to_not_be_null" and not kwargs:
        return {f"{key}_n": F.count(F.lit(1)), f"{key}_u": F.count_if(col.isNull())}, {}, share_ok
    if kind == "expect_column_values_to_be_unique" and not kwargs and mostly == 1.0:
        # Unique iff non-null values = distinct values (GX ignores nulls). Distinct 64-bit
        # hashes are cheaper to count than the values; a collision can only make a unique
        # column look duplicated, and then GX's recheck of the failure decides. A pass of
        # its own: Spark computes a distinct count by multiplying the rows every other
        # aggregate of the same query would then see.
        # (xxhash64 of a null is not null: keep nulls out explicitly.)
        distinct = {f"{key}_d": F.count_distinct(F.when(col.isNotNull(), F.xxhash64(col)))}
        return {f"{key}_nn": F.count(col)}, distinct, lambda v: v[f"{key}_nn"] == v[f"{key}_d"]
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
        inside = F.lit(True)
        if low is not None:
            inside = inside & ((col > low) if kwargs.get("strict_min") else (col >= low))
        if high is not None:
            inside = inside & ((col < high) if kwargs.get("strict_max") else (col <= high))
        return {f"{key}_n": F.count(col), f"{key}_u": F.count_if(col.isNotNull() & ~inside)}, {}, share_ok
    if kind == "expect_column_value_lengths_to_be_between" and set(kwargs) <= {"min_value", "max_value"}:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if types[column] != "string" or (low is None and high is None):
            return None
        length, inside = F.length(col), F.lit(True)
        if low is not None:
            inside = inside & (length >= low)
        if high is not None:
            inside = inside & (length <= high)
        return {f"{key}_n": F.count(col), f"{key}_u": F.count_if(col.isNotNull() & ~inside)}, {}, share_ok
    if kind == "expect_column_values_to_be_in_set" and set(kwargs) == {"value_set"}:
        values = list(kwargs["value_set"])
        if not values or not all(isinstance(x, str) for x in values) or types[column] != "string":
            return None
        return {f"{key}_n": F.count(col), f"{key}_u": F.count_if(col.isNotNull() & ~col.isin(values))}, {}, share_ok
    return None


def _aggregate(df: DataFrame, aggregates: dict[str, Any]) -> dict[str, Any]:
    return df.agg(*[column.alias(name) for name, column in aggregates.items()]).first().asDict()


def evaluate(
    df: DataFrame, expectations: list[dict[str, Any]], also: dict[str, Any] | None = None
) -> tuple[list[Finding], dict[str, Any]]:
    """All expectations, the compilable ones in one aggregation with `also`'s columns.

    Returns the findings and the values of `also` (e.g. a row count and checksum).
    """
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    compiled: dict[int, Check] = {}
    for i, expectation in enumerate(expectations):
        check = _compile(expectation, f"e{i}", types)
        if check is not None:
            compiled[i] = check
    shared = dict(also or {})
    for parts, _, _ in compiled.values():
        shared.update(parts)
    values = _aggregate(df, shared) if shared else {}
    for _, own, _ in compiled.values():
        if own:
            values.update(_aggregate(df, own))

    failed = [expectations[i] for i, (_, _, verdict) in compiled.items() if not verdict(values)]
    others = [e for i, e in enumerate(expectations) if i not in compiled]
    findings = run_suite(df, failed, known_failed=True) + run_suite(df, others)
    return findings, {name: values[name] for name in also or {}}


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


def audit(
    df: DataFrame,
    suite: dict[str, Any],
    also: dict[str, Any] | None = None,
    recent_rows: list[int] | None = None,
) -> tuple[AuditReport, dict[str, Any]]:
    """The gate: contract first (a broken schema makes expectations meaningless), then the
    suite, then the volume against `recent_rows` (the table's recent partitions' counts).

    `also`: more aggregate columns to compute in the same pass (returned by name).
    """
    from pyspark.sql import functions as F

    aggregates = {"_gate_rows": F.count(F.lit(1)), **(also or {})}
    findings = check_contract(df, load_contract(suite))
    if any(f.severity == BLOCKING for f in findings):
        values = _aggregate(df, aggregates)
    else:
        more, values = evaluate(df, suite["expectations"], aggregates)
        findings += more
    rows = int(values.pop("_gate_rows"))
    findings += check_volume(rows, recent_rows or [], suite.get("meta", {}).get("volume"))
    return AuditReport(rows=rows, findings=findings), values
