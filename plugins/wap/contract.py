"""A table's schema contract, as its suite declares it (`meta.contract`): plain data.

Its own module so that the table format (`tables`) and the gate (`audit`) both use it
without importing each other. `audit.check_suite` checks a contract; `audit.load_contract`
reads one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Contract:
    version: int
    partition_column: str | None  # None: the table is not partitioned (a merged dimension)
    columns: dict[str, str]
    on_added_column: str = "block"

    def ddl(self) -> str:
        """The columns as Spark DDL (`order_id` string, ...), for a frame of the contract's shape."""
        return ", ".join(f"`{column}` {kind}" for column, kind in self.columns.items())
