"""A pipeline's declaration: what a DAG says about its table, and nothing that runs.

The steps of a run are in `steps`; this module stays light, since DAG files import it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from wap import lineage
from wap.partition import DAILY, Grain
from wap.settings import load_settings

if TYPE_CHECKING:
    from airflow.sdk import Asset

    from wap.audit import Contract
    from wap.sources import Source


@dataclass(frozen=True)
class Merge:
    """Publish by merging into a table keyed by `key` (a dimension), not by replacing a partition.

    A run's SQL gives the changes of its partition (e.g. the rows updated in that hour); the
    staged result is the whole table with them merged in: for each key, the row with the
    newest `newest` wins (ties: the greatest row). That rule makes a run idempotent and the
    runs of different partitions commutative: re-running an hour, or running hours out of
    order (a backfill), converges on the same table. Rows deleted at the source are not seen
    by an incremental extract; model deletes as a column (e.g. `deleted_at`).
    """

    key: str
    newest: str  # the column that orders versions of a row, e.g. updated_at


@dataclass(frozen=True)
class Pipeline:
    """Everything a DAG declares about its table: what it reads, its SQL, its gate."""

    name: str
    table: str  # Iceberg identifier, "namespace.table"
    sql: str  # file in include/sql/
    suite: str  # file in expectations/ (GX suite + schema contract)
    sources: tuple[Source, ...]
    grain: Grain = DAILY  # one partition = a UTC day, or an hour (wap.partition.HOURLY)
    merge: Merge | None = None  # None: each run replaces its partition of the table

    @cached_property
    def contract(self) -> Contract:
        from wap import audit

        return audit.load_contract(audit.load_suite(self.suite))

    @property
    def partition_column(self) -> str | None:
        """The table's partition column (None: a merged table, which is not partitioned)."""
        return self.contract.partition_column

    @property
    def asset(self) -> Asset:
        return lineage.table_asset(self.table)

    def sql_text(self) -> str:
        return (load_settings().sql_dir / self.sql).read_text(encoding="utf-8")

    def code_version(self) -> str:
        """Hash of what decides the output: the SQL, the suite and contract."""
        suite = (load_settings().expectations_dir / self.suite).read_bytes()
        return hashlib.sha256(self.sql_text().encode() + b"\0" + suite).hexdigest()[:12]


def find_pipeline(name: str) -> Pipeline:
    """The pipeline called `name`, as declared by a DAG file (for command-line tools)."""
    import importlib.util

    folder = load_settings().dags_dir
    known = []
    for path in sorted(folder.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"wap_dag_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in vars(module).values():
            if isinstance(value, Pipeline):
                if value.name == name:
                    return value
                known.append(value.name)
    raise LookupError(f"no pipeline {name!r} is declared in {folder}; known: {', '.join(sorted(known)) or 'none'}")
