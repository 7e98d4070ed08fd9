"""OpenLineage helpers: name the live datasets (never staging) and report them to Airflow.

The `apache-airflow-providers-openlineage` provider emits the events; tasks report the
datasets they read and wrote through Airflow's hook-lineage collector, which the
provider turns into the events' inputs and outputs. Transport is configured by the
environment only (`AIRFLOW__OPENLINEAGE__TRANSPORT`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import Asset


def table_asset(identifier: str) -> Asset:
    """The Airflow asset of a live table; its events carry the partition key."""
    from airflow.sdk import Asset

    namespace, name = identifier.rsplit(".", 1)
    return Asset(name=identifier, uri=f"iceberg://wap/{namespace}/{name}", group="iceberg")


class _Reporter:
    """Hook-lineage needs an object to attribute the datasets to."""


def report(inputs: list[str], outputs: list[str]) -> None:
    """Tell the OpenLineage provider which live locations this task read and wrote.

    Call once per task. Airflow's collector is one per process and never emptied: a
    worker runs one task per process, but `dag.test()` runs every task in one, so the
    collector is started afresh here or each task would inherit its predecessors' lineage.
    """
    try:
        from airflow.sdk import lineage as airflow_lineage
    except ImportError:  # lineage is optional, never fatal
        return
    airflow_lineage.get_hook_lineage_collector.cache_clear()
    collector = airflow_lineage.get_hook_lineage_collector()
    for uri in inputs:
        collector.add_input_asset(context=_Reporter(), uri=uri)
    for uri in outputs:
        collector.add_output_asset(context=_Reporter(), uri=uri)
