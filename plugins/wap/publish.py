"""How a table is published: one strategy object per mode, chosen by the DAG (`Pipeline(publish=...)`).

Every mode shares the rest of a run: stage outside the table, gate the staged files, publish
them in one atomic commit that replaces what the run was based on (`tables.swap_partition`),
first publish wins (I5). What varies by mode is here and nowhere else:

- `replaces(partition)`: what one run replaces, its partition or (None) the whole table;
- `partitioned`: whether the table is partitioned by the pipeline's grain (the contract then
  names a partition column of the grain's type; `audit.check_suite` checks it);
- `named_columns()`: the columns the mode itself names, checked against the contract;
- `staged_result(...)`: how the staged result is built from the run's changes;
- `max_active_runs`: how many runs of the pipeline may run at once;
- `release_refusal` / `rollback_refusal`: when an older version may not be made live again;
- `window_column(...)`: the column a run's window is over (lineage's partition facet).

`ReplacePartition` is the default and `Merge` the dimension's. A new mode (append-only,
SCD type 2) is one more class implementing `PublishMode`; `Pipeline` and the steps need no
change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from wap.partition import Partition

# Reads the rows of the version a run is based on (None: nothing is published yet).
BaseReader = Callable[[], "DataFrame | None"]


@runtime_checkable
class PublishMode(Protocol):
    """What a publish mode decides; see the module's docstring for each member."""

    @property
    def partitioned(self) -> bool: ...

    @property
    def max_active_runs(self) -> int: ...

    def replaces(self, partition: Partition) -> Partition | None: ...

    def named_columns(self) -> dict[str, str]: ...

    def staged_result(self, changes: DataFrame, columns: list[str], base: BaseReader) -> DataFrame: ...

    def release_refusal(
        self, table: str, partition: str, live_run: str, live_at: dt.datetime, staged_at: dt.datetime
    ) -> str | None: ...

    def rollback_refusal(self, table: str) -> str | None: ...

    def window_column(self, partition_column: str | None) -> str | None: ...


@dataclass(frozen=True)
class ReplacePartition:
    """Each run replaces its own partition of the table with what it staged (the default).

    Runs of different partitions touch different files, so they may run side by side; a
    run's result depends on its partition's inputs only.
    """

    partitioned: bool = True
    max_active_runs: int = 3

    def replaces(self, partition: Partition) -> Partition | None:
        return partition

    def named_columns(self) -> dict[str, str]:
        return {}

    def staged_result(self, changes: DataFrame, columns: list[str], base: BaseReader) -> DataFrame:
        return changes

    def release_refusal(
        self, table: str, partition: str, live_run: str, live_at: dt.datetime, staged_at: dt.datetime
    ) -> str | None:
        return None  # a partition's older run may replace it (the release asks for --force)

    def rollback_refusal(self, table: str) -> str | None:
        return None

    def window_column(self, partition_column: str | None) -> str | None:
        return partition_column


# The default mode, one shared (frozen) instance.
REPLACE_PARTITION = ReplacePartition()


@dataclass(frozen=True)
class Merge:
    """Publish by merging into a table keyed by `key` (a dimension), not by replacing a partition.

    A run's SQL gives the changes of its partition (e.g. the rows updated in that hour); the
    staged result is the whole table with them merged in: for each key, the row with the
    newest `newest` wins (ties: the greatest row). That rule makes a run idempotent and the
    runs of different partitions commutative: re-running an hour, or running hours out of
    order (a backfill), converges on the same table. Rows deleted at the source are not seen
    by an incremental extract; model deletes as a column (e.g. `deleted_at`).

    The table is not partitioned, each publish replaces the whole table, and runs build on
    each other's versions: one runs at a time.
    """

    key: str
    newest: str  # the column that orders versions of a row, e.g. updated_at
    partitioned: bool = False
    max_active_runs: int = 1

    def replaces(self, partition: Partition) -> Partition | None:
        return None

    def named_columns(self) -> dict[str, str]:
        return {"Merge.key": self.key, "Merge.newest": self.newest}

    def staged_result(self, changes: DataFrame, columns: list[str], base: BaseReader) -> DataFrame:
        """The whole table as it will be once `changes` are merged into the base version.

        For each key, the newest row wins; exact ties go to the greatest row, so the result
        does not depend on the order rows arrive in. Changes the contract does not fit are
        staged as they are, for the gate to report.
        """
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        if not set(columns) <= set(changes.columns):
            return changes
        rows = changes.select(*columns)
        if (published := base()) is not None:
            rows = rows.unionByName(published.select(*columns))
        newest_first = [F.col(self.newest).desc_nulls_last()] + [
            F.col(c).desc_nulls_last() for c in columns if c not in (self.key, self.newest)
        ]
        rank = F.row_number().over(Window.partitionBy(self.key).orderBy(*newest_first))
        result: DataFrame = rows.withColumn("_rank", rank).where("_rank = 1").drop("_rank")
        return result

    def release_refusal(
        self, table: str, partition: str, live_run: str, live_at: dt.datetime, staged_at: dt.datetime
    ) -> str | None:
        # Its files are the whole table as merged onto an older version: publishing them
        # would undo every merge since, --force or not.
        if live_at <= staged_at:
            return None
        return (
            f"cannot release: {table} is a merged table and run {live_run} published a new version "
            "after this run staged its merge; releasing would undo that. Fix the source rows (or the suite) "
            f"and run {partition} again."
        )

    def rollback_refusal(self, table: str) -> str | None:
        return (
            f"{table} is a merged table: every version holds every partition's merges, so one "
            "partition cannot roll back alone. Roll the whole table back (no --partition)."
        )

    def window_column(self, partition_column: str | None) -> str | None:
        return self.newest  # the table is not partitioned: a run's window is of the ordering column
