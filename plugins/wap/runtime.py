"""The resources a run uses, built once by an edge and passed in: settings, catalog, ledger, Spark.

The Airflow tasks (`wap.tasks`) and the command line (`wap.cli`) build one `Runtime` from the
environment (`Runtime.from_env()`); the steps (`steps`, `quarantine`, `rollback`,
`maintenance`, `planner`) take it as their first argument and fetch nothing themselves.
A test constructs one directly, for a folder of its own:

    runtime = Runtime.from_settings(replace(load_settings(), data_dir=tmp, ...))

Nothing here connects at construction: the catalog is loaded and the Spark session started
on first use, so a step that needs neither (a publish needs no Spark) starts neither.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from wap import tables
from wap.ledger import Ledger
from wap.settings import Settings, load_settings
from wap.sources import Places

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyspark.sql import SparkSession


def _default_spark(settings: Settings) -> Callable[[], SparkSession]:
    def start() -> SparkSession:
        from wap.spark import get_spark

        return get_spark(settings=settings)

    return start


@dataclass
class Runtime:
    """Settings, the Iceberg catalog, the run ledger and a Spark session factory, for the steps."""

    settings: Settings
    ledger: Ledger
    spark_factory: Callable[[], SparkSession]
    _catalog: Catalog | None = field(default=None, repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        spark: Callable[[], SparkSession] | None = None,
        catalog: Catalog | None = None,
    ) -> Runtime:
        """A runtime for these settings; `spark`/`catalog` override how each is made."""
        return cls(
            settings=settings,
            ledger=Ledger(settings.ledger_url, lease=dt.timedelta(seconds=settings.lease_seconds)),
            spark_factory=spark or _default_spark(settings),
            _catalog=catalog,
        )

    @classmethod
    def from_env(cls) -> Runtime:
        """The runtime the environment configures (`wap.settings`): what the edges build."""
        return cls.from_settings(load_settings())

    @cached_property
    def catalog(self) -> Catalog:
        return self._catalog if self._catalog is not None else tables.get_catalog(self.settings)

    @property
    def places(self) -> Places:
        """Where the steps read sources from: this runtime's landing folder and catalog."""
        return Places(self.settings.landing_dir, self.catalog)

    def spark(self) -> SparkSession:
        """The Spark session, started on first use (one per process)."""
        return self.spark_factory()
