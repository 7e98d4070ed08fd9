"""What a pipeline's SQL reads: each source becomes a temporary view bound to the partition.

Paths are built from the validated partition date only, never from free text.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wap.settings import load_settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class SourceMissingError(RuntimeError):
    """An upstream input the partition needs is not there."""


@dataclass(frozen=True)
class LandedFiles:
    """Raw files landed per day under `<landing>/<dataset>/dt=<day>/`.

    Records can land late: the run for day D also reads the folders of the next
    `late_days` days and the SQL keeps the records that belong to D.
    """

    dataset: str
    schema: str  # Spark DDL, e.g. "order_id STRING, amount DECIMAL(12,2)"
    format: str = "json"
    late_days: int = 1

    @property
    def view(self) -> str:
        return f"landed_{self.dataset}"

    def location(self) -> str:
        """Where this dataset lands (what lineage names; never a single day's folder)."""
        return (load_settings().landing_dir / self.dataset).as_uri()

    def folders(self, partition: dt.date) -> list[str]:
        root = load_settings().landing_dir / self.dataset
        days = (partition + dt.timedelta(days=n) for n in range(self.late_days + 1))
        return [str(root / f"dt={day.isoformat()}") for day in days]

    def read(self, spark: SparkSession, partition: dt.date) -> DataFrame:
        from pathlib import Path

        present = [folder for folder in self.folders(partition) if Path(folder).is_dir()]
        if not present:
            return spark.createDataFrame([], self.schema)
        reader = spark.read.schema(self.schema)
        if self.format == "csv":
            reader = reader.option("header", "true")
        return reader.format(self.format).load(present)


@dataclass(frozen=True)
class PublishedTable:
    """The live partition of another pipeline's table (read through its Iceberg metadata)."""

    table: str
    partition_column: str

    @property
    def view(self) -> str:
        return self.table.replace(".", "_")

    def location(self) -> str:
        from wap import tables

        return tables.load_table(self.table).location()

    def read(self, spark: SparkSession, partition: dt.date) -> DataFrame:
        from wap import tables

        files = tables.partition_files(tables.load_table(self.table), self.partition_column, partition)
        if not files:
            raise SourceMissingError(
                f"{self.table} has no published partition {self.partition_column}={partition}; run its pipeline first"
            )
        return spark.read.parquet(*files)


Source = LandedFiles | PublishedTable
