"""Hourly partitions of a partition-replacing pipeline, through the steps themselves: the
landed folders per hour (with late records and rejects), the Iceberg partition spec on the
hour's timestamp, one hour's publish leaving the others as they are, and an idempotent re-run.
(`test_dim_customers.py` proves hourly runs through Airflow, with a merged table.)"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import session_runtime

from wap.partition import HOURLY

H5 = dt.datetime(2024, 1, 1, 5, tzinfo=dt.UTC)
H6 = H5 + dt.timedelta(hours=1)
SQL = """
SELECT event_id, CAST(:partition AS TIMESTAMP) AS event_hour, event_ts, amount
FROM landed_events
WHERE event_ts >= :partition AND event_ts < :partition + INTERVAL 1 HOUR
"""
SUITE = {
    "name": "test.hourly_events",
    "meta": {
        "contract": {
            "version": 1,
            "partition_column": "event_hour",
            "columns": {"event_id": "string", "event_hour": "timestamp", "event_ts": "timestamp", "amount": "double"},
        }
    },
    "expectations": [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "event_id"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "amount"}},
    ],
}


def event(event_id: str, at: str, amount: float = 1.0) -> str:
    return json.dumps({"event_id": event_id, "event_ts": f"2024-01-01T{at}Z", "amount": amount})


@pytest.fixture(scope="module")
def pipeline(data_dir, tmp_path_factory, monkeypatch_module):
    from wap.pipeline import Pipeline
    from wap.sources import LandedFiles

    config = tmp_path_factory.mktemp("hourly")
    (config / "hourly_events.sql").write_text(SQL)
    (config / "test.hourly_events.json").write_text(json.dumps(SUITE))
    monkeypatch_module.setenv("WAP_SQL_DIR", str(config))
    monkeypatch_module.setenv("WAP_EXPECTATIONS_DIR", str(config))
    landing = data_dir / "landing" / "events"
    folders = {
        # Hour 05's folder: three of its own, one late for 04, one from a later hour (a reject).
        "dt=2024-01-01T05": [
            *(event("a", "05:01:00"), event("b", "05:30:00"), event("c", "05:59:59.999")),
            *(event("late-04", "04:50:00"), event("too-early", "06:10:00")),
        ],
        # Hour 06's folder: two of its own and one late for 05.
        "dt=2024-01-01T06": [event("d", "06:00:00"), event("e", "06:20:00"), event("late-05", "05:40:00")],
    }
    for folder, lines in folders.items():
        (landing / folder).mkdir(parents=True)
        (landing / folder / "part-0.json").write_text("\n".join(lines) + "\n")
    return Pipeline(
        name="hourly_events",
        table="test.hourly_events",
        sql="hourly_events.sql",
        suite="test.hourly_events.json",
        sources=(LandedFiles(dataset="events", schema=SUITE_SCHEMA, event_time="event_ts", max_rejected_share=0.5),),
        grain=HOURLY,
    )


SUITE_SCHEMA = "event_id STRING, event_ts TIMESTAMP, amount DOUBLE"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def run(pipeline, hour: dt.datetime, run_id: str):
    from wap import steps

    staged = steps.stage(session_runtime(), pipeline, hour, run_id, 1)
    return staged, steps.publish(session_runtime(), pipeline, steps.audit(session_runtime(), pipeline, staged))


def rows_of(hour: dt.datetime) -> list[str]:
    import pyarrow.parquet as pq

    from wap import tables

    files = tables.partition_files(tables.load_table("test.hourly_events"), "event_hour", hour)
    return sorted(r for f in files for r in pq.read_table(f.removeprefix("file://")).column("event_id").to_pylist())


@pytest.fixture(scope="module")
def published(pipeline, spark):
    first = run(pipeline, H5, "manual__h5")
    files_h5 = rows_of(H5)
    second = run(pipeline, H6, "manual__h6")
    return first, second, files_h5


def test_an_hour_reads_its_folder_and_the_next_and_keeps_its_own_records(published):
    (staged, result), _, _ = published
    assert result["status"] == "published" and result["partition"] == "2024-01-01T05"
    assert rows_of(H5) == ["a", "b", "c", "late-05"]
    assert staged.late_for == ["2024-01-01T04"], "a record of hour 04 landed in 05's folder"


def test_a_record_outside_the_folders_window_is_a_reject(published):
    from wap.ledger import Ledger

    (row,) = Ledger().rows("hourly_events", "2024-01-01T05")
    intake = json.loads(row["details"])["intake"]["landed_events"]
    assert intake["rejected"] == {"event_ts outside the folder's landing window": 1}
    assert intake["own"] == 5 and intake["records"] == 8


def test_the_table_is_partitioned_by_the_hour_and_each_publish_replaces_one_hour(published):
    from pyiceberg.transforms import IdentityTransform

    from wap import tables

    _, (_, result), before = published
    table = tables.load_table("test.hourly_events")
    (field,) = table.spec().fields
    assert field.name == "event_hour" and isinstance(field.transform, IdentityTransform)
    assert str(table.schema().find_field("event_hour").field_type) == "timestamptz"
    assert result["status"] == "published" and rows_of(H6) == ["d", "e"]
    assert rows_of(H5) == before, "publishing 06 left 05 as it was"
    overview = {r["partition"]: r["rows"] for r in tables.partitions_overview(table)}
    assert overview == {"2024-01-01T05": 4, "2024-01-01T06": 2}


def test_rerunning_an_hour_publishes_nothing(published, pipeline):
    from wap import tables

    live = tables.live_version(tables.load_table("test.hourly_events"), H5)
    _, result = run(pipeline, H5, "manual__h5_again")
    assert result["status"] == "skipped" and result["snapshot_id"] == live.snapshot_id
    assert rows_of(H5) == ["a", "b", "c", "late-05"]


def test_a_daily_partition_column_in_an_hourly_pipeline_is_refused(pipeline, tmp_path, monkeypatch):
    """The contract's partition column must be of the grain's type: said when the pipeline
    loads (its DAG file would not import), before any work."""
    import dataclasses

    from wap.audit import SuiteError

    suite = json.loads(json.dumps(SUITE))
    suite["meta"]["contract"]["columns"]["event_hour"] = "date"
    (tmp_path / "wrong_grain.json").write_text(json.dumps(suite))
    monkeypatch.setenv("WAP_EXPECTATIONS_DIR", str(tmp_path))
    with pytest.raises(SuiteError, match="hourly pipeline's partition column must be 'timestamp'"):
        dataclasses.replace(pipeline, suite="wrong_grain.json")
