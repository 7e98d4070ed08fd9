"""The quality gate: a table's schema contract, then its Great Expectations suite.

Both live in one file per table, `expectations/<table>.json`: a GX 1.x suite whose
`meta.contract` holds the contract (columns and types, partition column, version,
policy for added columns). Each expectation may set `meta.severity` to `warning`
(recorded, published anyway); the default is `blocking`.

An expectation that raises inside GX counts as failed, never as passed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wap.settings import load_settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

BLOCKING, WARNING = "blocking", "warning"
SAMPLE_VALUES = 5


@dataclass(frozen=True)
class Contract:
    version: int
    partition_column: str
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
    rows: int
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
        lines = [f"quality gate {'PASSED with warnings' if self.passed else 'FAILED'} on {self.rows} rows:"]
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
        partition_column=raw["partition_column"],
        columns=dict(raw["columns"]),
        on_added_column=raw.get("on_added_column", "block"),
    )


def check_contract(df: DataFrame, contract: Contract) -> list[Finding]:
    """Schema drift against the contract, before any expectation runs."""
    found = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    findings = []
    for column, expected in contract.columns.items():
        if column not in found:
            findings.append(
                Finding("contract: column present", column, BLOCKING, message=f"missing column {column!r} ({expected})")
            )
        elif found[column] != expected.replace(" ", "").lower():
            findings.append(
                Finding(
                    "contract: column type",
                    column,
                    BLOCKING,
                    observed=found[column],
                    message=f"column {column!r}: expected {expected}, found {found[column]}",
                )
            )
    for column in found.keys() - contract.columns.keys():
        severity = WARNING if contract.on_added_column == "allow" else BLOCKING
        findings.append(
            Finding(
                "contract: no added columns",
                column,
                severity,
                observed=found[column],
                message=f"added column {column!r}",
            )
        )
    return findings


def run_suite(df: DataFrame, suite: dict[str, Any]) -> list[Finding]:
    """Validate `df` with the suite; a finding for every expectation not met.

    Two passes, the second only when needed: every expectation with GX's cheapest result
    format (pass/fail), then the ones that failed again for their counts and samples.
    """
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

    def validate(expectations: list[dict[str, Any]], result_format: dict[str, Any]) -> list[Any]:
        batch = batches.get_batch(batch_parameters={"dataframe": df})
        checks = gx.ExpectationSuite(name=suite["name"], expectations=expectations)
        return batch.validate(checks, result_format=result_format).results

    first = validate(suite["expectations"], {"result_format": "BOOLEAN_ONLY"})
    failed = [i for i, outcome in enumerate(first) if not outcome.success or _raised(outcome.exception_info)]
    if not failed:
        return []
    # GX may order results differently from the suite: match them back by configuration.
    wanted = [first[i].expectation_config.to_json_dict() for i in failed]
    details = validate(wanted, {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_VALUES})

    findings = []
    for outcome in details:
        config = outcome.expectation_config
        error = _raised(outcome.exception_info)
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
                message=f"expectation raised: {error}"
                if error
                # Same data, same check: cannot normally happen; the first verdict stands.
                else ("" if not outcome.success else "failed, then passed when rechecked for details"),
            )
        )
    return findings


def _raised(exception_info: Any) -> str | None:
    """GX records errors instead of raising; find one in either of its two shapes."""
    if not exception_info:
        return None
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            return str(info.get("exception_message") or "error")[:500]
    return None


def audit(df: DataFrame, suite: dict[str, Any], rows: int) -> AuditReport:
    """The gate: contract first (a broken schema makes expectations meaningless), then the suite."""
    findings = check_contract(df, load_contract(suite))
    if not any(f.severity == BLOCKING for f in findings):
        findings += run_suite(df, suite)
    return AuditReport(rows=rows, findings=findings)
