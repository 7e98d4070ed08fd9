"""A pipeline's declaration: what a DAG says about its table, and nothing that runs.

The steps of a run are in `steps`; this module stays light, since DAG files import it.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from wap.errors import UnknownPipelineError
from wap.partition import DAILY, MAX_RANGE, Grain
from wap.publish import REPLACE_PARTITION, PublishMode
from wap.settings import load_settings

if TYPE_CHECKING:
    from airflow.sdk import Asset

    from wap.contract import Contract
    from wap.sources import Source


PER_PARTITION, ALL_OR_NOTHING, PER_RANGE = "per-partition", "all-or-nothing", "per-range"
RANGE_POLICIES = (PER_PARTITION, ALL_OR_NOTHING)

# The SQL's parameters: `:first` and `:last` (the first and last partitions of the run, both
# included; a run of one partition binds both to it), or `:partition` (one partition: a range
# run then runs the SQL once per partition). See docs/adr/0016.
RANGE_PARAMETERS, PARTITION_PARAMETER = ("first", "last"), "partition"
# Off while `wap check` loads DAG files: it lists a suite's problems with the rest, instead of
# the first refusal stopping the load (`suites_unchecked`).
_CHECK_SUITES = contextvars.ContextVar("wap_check_suites", default=True)
# What may hide a `:name` that is not a parameter: comments, string literals, quoted names.
_NOT_CODE = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`", re.DOTALL)
_PARAMETER = re.compile(r"(?<![\w:]):([A-Za-z_]\w*)")


def sql_parameters(text: str) -> frozenset[str]:
    """The named parameters (`:name`) a Spark SQL text uses, outside comments and quotes."""
    return frozenset(_PARAMETER.findall(_NOT_CODE.sub(" ", text)))


@dataclass(frozen=True)
class Pipeline:
    """Everything a DAG declares about its table: what it reads, its SQL, its gate."""

    name: str
    table: str  # Iceberg identifier, "namespace.table"
    sql: str  # file in include/sql/
    suite: str  # file in expectations/ (GX suite + schema contract)
    sources: tuple[Source, ...]
    grain: Grain = DAILY  # one partition = a UTC day, or an hour (wap.partition.HOURLY)
    publish: PublishMode = REPLACE_PARTITION  # how a run's result is published (`wap.publish`)
    # A range run (`wap.ranges`): a partition that fails its gate is quarantined alone and
    # the others publish (PER_PARTITION), or any failing partition stops the whole range
    # (ALL_OR_NOTHING). `batch_size`: the most partitions `wap run` and `wap plan` put in one run.
    range_policy: str = "per-partition"
    batch_size: int = 31
    # The table's asset events after a range run: one per published partition (PER_PARTITION:
    # a partition-aware consumer runs once per partition), or one per stretch of consecutive
    # published partitions keyed FIRST/LAST (PER_RANGE: a consumer built from these templates
    # runs one range run per stretch, not one run per partition).
    asset_events: str = "per-partition"

    def __post_init__(self) -> None:
        if self.range_policy not in RANGE_POLICIES:
            raise ValueError(
                f"{self.name}: range_policy must be one of {', '.join(RANGE_POLICIES)}, got {self.range_policy!r}"
            )
        if self.asset_events not in (PER_PARTITION, PER_RANGE):
            raise ValueError(
                f"{self.name}: asset_events must be {PER_PARTITION} or {PER_RANGE}, got {self.asset_events!r}"
            )
        if not 1 <= self.batch_size <= MAX_RANGE:
            raise ValueError(f"{self.name}: batch_size must be from 1 to {MAX_RANGE}, got {self.batch_size!r}")
        # Check the suite against its contract now, at DAG import (JSON only, no GX, no Spark):
        # a column typo is then an import error in Airflow, not a day staged and quarantined.
        if _CHECK_SUITES.get():
            self.contract  # noqa: B018

    @cached_property
    def contract(self) -> Contract:
        """The suite's contract, once the suite is checked against it and this pipeline (`check`)."""
        return self.check()

    def check(self) -> Contract:
        """Check the suite against its contract and this pipeline now (`audit.check_suite`): its
        contract, or `wap.errors.SuiteError` listing every problem."""
        from wap import audit

        return audit.check_suite(
            self.suite,
            grain=self.grain,
            partitioned=self.publish.partitioned,
            named=self.publish.named_columns(),
            pipeline=self.name,
        )

    @property
    def partition_column(self) -> str | None:
        """The table's partition column (None: a merged table, which is not partitioned)."""
        return self.contract.partition_column

    @property
    def asset(self) -> Asset:
        return table_asset(self.table)

    @property
    def review_asset(self) -> Asset:
        """Requests for a person's review: an event per quarantined partition (its key), which
        starts a run of the pipeline's review DAG (`wap.tasks.quarantine_review`)."""
        from airflow.sdk import Asset

        namespace, name = self.table.rsplit(".", 1)
        return Asset(name=f"{self.table}.review", uri=f"wap-review://{namespace}/{name}", group="review")

    def sql_text(self) -> str:
        return (load_settings().sql_dir / self.sql).read_text(encoding="utf-8")

    @property
    def sql_spans(self) -> bool:
        """Whether the SQL takes a span (`:first`, `:last`): one query gives every partition of
        a range run, each row's partition in the partition column (False: `:partition`)."""
        used = sql_parameters(self.sql_text())
        return PARTITION_PARAMETER not in used and bool(used & set(RANGE_PARAMETERS))

    def code_version(self) -> str:
        """Hash of what decides the output: the SQL, the suite and contract."""
        suite = (load_settings().expectations_dir / self.suite).read_bytes()
        return hashlib.sha256(self.sql_text().encode() + b"\0" + suite).hexdigest()[:12]


def table_asset(identifier: str) -> Asset:
    """The Airflow asset of a live table; its events carry the partition key."""
    from airflow.sdk import Asset

    namespace, name = identifier.rsplit(".", 1)
    return Asset(name=identifier, uri=f"iceberg://wap/{namespace}/{name}", group="iceberg")


@contextmanager
def suites_unchecked() -> Iterator[None]:
    """Pipelines declared inside this block do not check their suites (`Pipeline.check` still
    can): for tools that report a suite's problems along with others, such as `wap check`."""
    token = _CHECK_SUITES.set(False)
    try:
        yield
    finally:
        _CHECK_SUITES.reset(token)


def find_pipeline(name: str, *, checked: bool = True) -> Pipeline:
    """The pipeline called `name`, as declared by a DAG file (for command-line tools).

    A DAG file whose pipeline's suite is refused (`wap.errors.SuiteError`) does not load: its
    error is raised if it is the pipeline asked for, else named if `name` is not found.
    `checked=False`: suites are not checked (`suites_unchecked`), so every DAG file loads.
    """
    from wap.errors import SuiteError

    folder = load_settings().dags_dir
    known, refused = [], []
    for path in sorted(folder.glob("*.py")):
        try:
            with nullcontext() if checked else suites_unchecked():
                pipelines = declared_in(path)
        except SuiteError as exc:
            if exc.pipeline == name:
                raise
            refused.append(f"{path.name} (pipeline {exc.pipeline}: its suite {exc.suite} is refused)")
            continue
        for value in pipelines:
            if value.name == name:
                return value
            known.append(value.name)
    unloaded = f"; not loaded: {', '.join(refused)}" if refused else ""
    raise UnknownPipelineError(
        f"no pipeline {name!r} is declared in {folder}; known: {', '.join(sorted(known)) or 'none'}{unloaded}"
    )


def declared_pipelines() -> list[Pipeline]:
    """Every pipeline the DAG files declare, their suites unchecked (`suites_unchecked`)."""
    with suites_unchecked():
        return [p for path in sorted(load_settings().dags_dir.glob("*.py")) for p in declared_in(path)]


def declared_in(path: Path) -> list[Pipeline]:
    """The pipelines a DAG file declares at module level (the file is imported anew)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"wap_dag_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [value for value in vars(module).values() if isinstance(value, Pipeline)]
