"""Write-audit-publish: the mechanism behind every pipeline in `dags/`.

One module per concern, each usable without Airflow running:

- `partition`  resolve and validate the one partition a run is bound to
- `settings`   where data, catalog, ledger and Spark live (environment only)
- `spark`      the Spark session (local, or Spark Connect by configuration)
- `sources`    the inputs a pipeline's SQL reads, bound to the partition
- `staging`    run-and-attempt-unique staging, checksums, quarantine
- `audit`      the quality gate: schema contract + Great Expectations suite
- `tables`     Iceberg: create, atomic partition swap, history, reads
- `ledger`     the run ledger (SQLAlchemy Core)
- `lineage`    OpenLineage dataset names for live tables
- `pipeline`   a pipeline's declaration (light: DAG files import it)
- `steps`      the steps of one run: stage, audit, publish
- `tasks`      the Airflow edge: TaskFlow tasks that call the steps

Heavy libraries (pyspark, great_expectations, pyiceberg) are imported inside
functions, so DAG files that import this package stay light to parse.
"""
