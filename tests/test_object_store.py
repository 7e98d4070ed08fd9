"""Object storage: the publish path against an S3-compatible server on loopback (moto's server mode).

The warehouse is `s3://<bucket>/warehouse`, configured only through the environment
(`WAP_WAREHOUSE`, `WAP_S3_ENDPOINT`, `WAP_S3_PATH_STYLE`, `AWS_*`); the SQL catalog stays on
SQLite. Table metadata, staged runs, quarantine and published data all live in the bucket,
and every step is the project's own code: `tables.ensure_table`, `steps.audit`,
`steps.publish` (the real swap, with its ledger rows), `rollback.rollback_partition`,
`quarantine.release`, `maintenance.maintain_table`, and `staging`'s listing, moves and
deletes. Reads go through pyiceberg from the bucket.

What stands in for a cluster: Spark cannot write or read `s3a://` here (no hadoop-aws jars),
so each run's Parquet is written by the real `staging.write_staged` to a local folder and
uploaded, whole (`_SUCCESS` included), to the run's staging folder in the bucket, where
Spark's S3A writer would have put it; and the audit's Spark reads that local copy (the same
bytes) while the run's staged folder and files are the bucket's. What this cannot prove:
that a cluster's S3A settings are right (see the deployment notes), nor how a real store
behaves under load or partial failure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import session_runtime
from pg import free_port

from wap import maintenance, rollback, staging, steps, tables
from wap.ledger import Ledger

BUCKET = "wap-test"
DAY = dt.date(2024, 6, 1)


@pytest.fixture(scope="module")
def store(data_dir: Path):
    """moto's S3 server on a free loopback port, a bucket, and the settings pointed at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "WAP_WAREHOUSE": f"s3://{BUCKET}/warehouse",
        "WAP_S3_ENDPOINT": endpoint,
        "WAP_S3_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": "moto-key",
        "AWS_SECRET_ACCESS_KEY": "moto-secret",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no credential lookups off this machine
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="moto-key",
            aws_secret_access_key="moto-secret",
        )
        s3.create_bucket(Bucket=BUCKET)
        yield SimpleNamespace(endpoint=endpoint, s3=s3)
    server.stop()


@pytest.fixture(scope="module")
def orders(store):
    from silver_orders import ORDERS

    return ORDERS


def keys(store, prefix: str) -> list[str]:
    """The keys of the objects under `prefix`, asked of the server directly (not pyarrow's folder markers)."""
    pages = store.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []) if not item["Key"].endswith("/"))


def key(uri: str) -> str:
    """The object key of an `s3://<bucket>/<key>` URI."""
    return uri.removeprefix(f"s3://{BUCKET}/")


def exists(uri: str) -> bool:
    from pyarrow import fs

    filesystem, path = staging.file_system(uri)
    return filesystem.get_file_info(path).type == fs.FileType.File


def order_rows(tag: str, count: int, amount: str = "10.00") -> list[tuple]:
    placed = dt.datetime.combine(DAY, dt.time(9), tzinfo=dt.UTC)
    return [
        (
            f"O-{tag}-{n}",
            DAY,
            f"C-{n % 3}",
            "placed",
            decimal.Decimal(amount) + n,
            "EUR",
            "web",
            placed,
            placed + dt.timedelta(minutes=n),
            1,
        )
        for n in range(count)
    ]


def upload(local: Path, staged_dir: str) -> None:
    """Copy Spark's local output folder into the run's staging folder in the bucket."""
    from pyarrow import fs

    filesystem, target = staging.file_system(staged_dir)
    fs.copy_files(str(local), target, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem)


def staged_run(spark, orders, tmp: Path, run_id: str, rows: list[tuple]) -> staging.StagedRun:
    """A run staged in the bucket as `steps.stage` records one (ledger row, base version)."""
    table = tables.ensure_table(orders.table, orders.contract)
    token = staging.run_token(run_id, 1)
    staged_dir = staging.partition_dir(table.location(), "data", orders.partition_column, DAY, token)
    schema = ", ".join(f"`{c}` {t}" for c, t in orders.contract.columns.items())
    local = tmp / token
    # Spark writes where it can here; on a cluster write_staged gets staged_dir itself (s3a://).
    local_files = staging.write_staged(spark.createDataFrame(rows, schema), f"file://{local}")
    upload(local, staged_dir)
    attempt = {
        "pipeline": orders.name,
        "table": orders.table,
        "partition": DAY.isoformat(),
        "run_id": run_id,
        "try_number": 1,
        "run_token": token,
        "code_version": orders.code_version(),
        "contract_version": orders.contract.version,
    }
    Ledger().start(**attempt)
    base = tables.live_version(table, DAY)
    return staging.StagedRun(
        **attempt,
        staged_dir=staged_dir,
        files=local_files,  # what the audit's Spark reads: the same bytes as the bucket's copy
        rows_in=len(rows),
        base_snapshot=base and base.snapshot_id,
    )


def audited(orders, staged: staging.StagedRun) -> staging.StagedRun:
    """The real gate; then the run's files are the bucket's, as write_staged lists them on a cluster."""
    checked = steps.audit(session_runtime(), orders, staged)
    return dataclasses.replace(checked, files=staging.list_files(staged.staged_dir))


def live(orders):
    from pyiceberg.expressions import EqualTo

    table = tables.load_table(orders.table)  # metadata read from the bucket anew
    rows = table.scan(row_filter=EqualTo(orders.partition_column, DAY.isoformat())).to_arrow()
    return table, rows


def checksum(spark, rows) -> str:
    """The rows' checksum by the same aggregates the audit uses."""
    frame = spark.createDataFrame(rows)
    values = frame.agg(*[column.alias(name) for name, column in staging.checksum_aggregates(frame).items()])
    return staging.format_checksum(values.first().asDict())[1]


def ledger_row(orders, staged: staging.StagedRun) -> dict:
    (row,) = [r for r in Ledger().rows(orders.name, DAY.isoformat()) if r["run_token"] == staged.run_token]
    return row


def test_settings_reach_the_catalog_and_every_filesystem(store, monkeypatch):
    from pyarrow import fs

    from wap.settings import load_settings

    properties = load_settings().catalog_properties
    assert properties["warehouse"] == f"s3://{BUCKET}/warehouse"
    assert properties["s3.endpoint"] == store.endpoint
    assert properties["s3.force-virtual-addressing"] == "false"  # path style
    assert (properties["s3.access-key-id"], properties["s3.secret-access-key"]) == ("moto-key", "moto-secret")
    assert properties["s3.region"] == "us-east-1"
    assert "moto-secret" not in repr(load_settings()), "secrets stay out of logged settings"

    filesystem, path = staging.file_system(f"s3://{BUCKET}/warehouse/x")
    assert (filesystem.type_name, path) == ("s3", f"{BUCKET}/warehouse/x")
    assert staging.file_system(f"s3a://{BUCKET}/warehouse/x")[1] == path
    assert staging.spark_uri(f"s3://{BUCKET}/w/d=1") == f"s3a://{BUCKET}/w/d=1"
    assert staging.table_uri(f"s3a://{BUCKET}/w/d=1") == f"s3://{BUCKET}/w/d=1"
    # Local locations are exactly as before.
    assert staging.spark_uri("file:///tmp/w/d=1") == staging.table_uri("file:///tmp/w/d=1") == "file:///tmp/w/d=1"
    assert isinstance(staging.file_system("file:///tmp/w")[0], fs.LocalFileSystem)

    for name in ("WAP_S3_ENDPOINT", "WAP_S3_PATH_STYLE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("WAP_WAREHOUSE")
    assert set(load_settings().catalog_properties) == {"type", "uri", "pool_pre_ping", "warehouse"}, (
        "the embedded default"
    )
    monkeypatch.setenv("WAP_S3_PATH_STYLE", "maybe")
    with pytest.raises(ValueError, match="WAP_S3_PATH_STYLE"):
        load_settings()


def test_spark_is_asked_to_write_s3a(store, spark, orders):
    """Spark gets the s3a:// name of the staging folder: Hadoop looks for S3A (hadoop-aws, absent here)."""
    table = tables.ensure_table(orders.table, orders.contract)
    staged_dir = staging.partition_dir(table.location(), "data", orders.partition_column, DAY, "run-s3a-probe")
    assert staged_dir.startswith(f"s3://{BUCKET}/warehouse/")
    with pytest.raises(Exception, match=r"fs\.s3a\.S3AFileSystem not found"):
        staging.write_staged(spark.range(1), staged_dir)


def test_publish_replace_and_roll_back_in_the_bucket(store, spark, orders, tmp_path):
    table = tables.ensure_table(orders.table, orders.contract)
    assert table.location().startswith(f"s3://{BUCKET}/warehouse/")
    assert table.metadata_location.startswith(f"s3://{BUCKET}/warehouse/")
    assert any(k.endswith(".metadata.json") for k in keys(store, f"{key(table.location())}/metadata/"))

    a = audited(orders, staged_run(spark, orders, tmp_path, "s3-version-a", order_rows("A", 5)))
    assert a.files and all(f.startswith(f"{a.staged_dir}/") for f in a.files)
    assert steps.publish(session_runtime(), orders, a)["status"] == "published"
    current, rows = live(orders)
    a_snapshot = tables.live_version(current, DAY).snapshot_id
    # The table references the staged objects where they are: the commit copied nothing.
    assert tables.partition_files(current, orders.partition_column, DAY) == a.files
    assert rows.num_rows == 5 and checksum(spark, rows) == a.checksum
    row = ledger_row(orders, a)
    assert (row["status"], row["snapshot_id"], row["checksum"]) == ("published", a_snapshot, a.checksum)

    b = audited(orders, staged_run(spark, orders, tmp_path, "s3-version-b", order_rows("B", 7, "20.00")))
    assert b.checksum != a.checksum
    assert steps.publish(session_runtime(), orders, b)["status"] == "published"
    current, rows = live(orders)
    assert set(rows.column("order_id").to_pylist()) == {f"O-B-{n}" for n in range(7)}, "only the new version"
    assert checksum(spark, rows) == b.checksum
    assert tables.partition_files(current, orders.partition_column, DAY) == b.files
    assert all(exists(f) for f in a.files), "the replaced version's files stay, for rollback"
    assert [v.run_id for v in tables.versions(current, DAY)] == ["s3-version-b", "s3-version-a"]

    result = rollback.rollback_partition(session_runtime(), orders, DAY, a_snapshot, reason="test: back to A")
    assert result["status"] == "rolled_back"
    current, rows = live(orders)
    assert checksum(spark, rows) == a.checksum and rows.num_rows == 5
    assert tables.partition_files(current, orders.partition_column, DAY) == a.files
    assert Ledger().rows(orders.name, DAY.isoformat())[-1]["status"] == "rolled_back"

    # A re-run with the rows now live publishes nothing and deletes its staged objects.
    again = audited(orders, staged_run(spark, orders, tmp_path, "s3-version-a-again", order_rows("A", 5)))
    assert again.checksum == a.checksum
    assert steps.publish(session_runtime(), orders, again)["status"] == "skipped"
    assert staging.list_files(again.staged_dir) == [] and not keys(store, f"{key(again.staged_dir)}/")
    assert ledger_row(orders, again)["status"] == "skipped"


def test_a_blocked_run_is_quarantined_and_released_in_the_bucket(store, spark, orders, tmp_path):
    from wap import quarantine

    bad = staged_run(spark, orders, tmp_path, "s3-bad", [*order_rows("D", 3), *order_rows("NEG", 1, "-5.00")])
    staged_files = staging.list_files(bad.staged_dir)
    with pytest.raises(steps.GateFailedError, match="quarantined in s3://"):
        steps.audit(session_runtime(), orders, bad)
    row = ledger_row(orders, bad)
    assert row["status"] == "quarantined"
    # The move: every object copied to quarantine, then the staged ones deleted.
    held = quarantine.files(row)["data"]
    assert staging.list_files(bad.staged_dir) == []
    assert [f.rsplit("/", 1)[1] for f in held] == [f.rsplit("/", 1)[1] for f in staged_files]
    assert all(f.startswith(f"{row['staged_path']}/data/") for f in held)
    assert tables.live_version(tables.load_table(orders.table), DAY).run_id == "s3-version-a", "nothing published"

    result = quarantine.release(session_runtime(), orders.name, DAY.isoformat(), reason="test: the refund is real")
    assert result["status"] == "published"
    assert quarantine.files(row)["data"] == [], "moved back out of quarantine"
    current, rows = live(orders)
    assert checksum(spark, rows) == row["checksum"] and rows.num_rows == 4
    assert tables.partition_files(current, orders.partition_column, DAY) == staging.list_files(bad.staged_dir)


def test_upkeep_lists_and_deletes_in_the_bucket(store, spark, orders, tmp_path):
    orphan = staged_run(spark, orders, tmp_path, "s3-never-published", order_rows("X", 2))
    orphan_keys = keys(store, f"{key(orphan.staged_dir)}/")
    assert any(k.endswith("_SUCCESS") for k in orphan_keys) and any(k.endswith(".parquet") for k in orphan_keys)
    table = tables.load_table(orders.table)
    referenced = maintenance.referenced_files(table)
    assert referenced and all(p.startswith(f"{BUCKET}/") for p in referenced)
    before = {s.snapshot_id for s in table.snapshots()}
    # Past the margin for every file, within the window for every snapshot.
    retention = maintenance.Retention(margin=dt.timedelta(hours=1), quarantine=dt.timedelta(hours=1))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)

    dry = maintenance.maintain_table(session_runtime(), orders.table, retention, now=later, dry_run=True)
    assert sorted(dry.removed) == [f"s3://{BUCKET}/{k}" for k in orphan_keys]
    assert keys(store, f"{key(orphan.staged_dir)}/") == orphan_keys, "a dry run deletes nothing"

    done = maintenance.maintain_table(session_runtime(), orders.table, retention, now=later)
    assert (done.expired, sorted(done.removed), done.runs_removed) == ([], dry.removed, [orphan.staged_dir])
    assert keys(store, f"{key(orphan.staged_dir)}/") == []
    table = tables.load_table(orders.table)
    assert {s.snapshot_id for s in table.snapshots()} == before
    assert all(exists(f"s3://{p}") for p in maintenance.referenced_files(table)), "every referenced file is kept"
