"""Partition resolution: one resolver, every way a run can be started, and bad values rejected."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from conftest import run_dag, utc_midnight

from wap.partition import PartitionError, parse_partition, resolve_partition

DAY = dt.date(2024, 3, 5)


def test_scheduled_run_uses_the_logical_date():
    assert resolve_partition({"logical_date": utc_midnight(DAY), "params": {"partition": None}}) == DAY


def test_logical_date_is_read_as_a_utc_day():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    # 01:00 at UTC+2 is 23:00 the day before in UTC.
    moment = dt.datetime(2024, 3, 6, 1, 0, tzinfo=plus_two)
    assert resolve_partition({"logical_date": moment}) == DAY


def test_param_override_wins_over_partition_key_and_logical_date():
    context = {
        "params": {"partition": "2024-02-29"},
        "dag_run": SimpleNamespace(partition_key="2024-01-01"),
        "logical_date": utc_midnight(DAY),
    }
    assert resolve_partition(context) == dt.date(2024, 2, 29)


def test_partition_key_wins_over_logical_date():
    context = {"params": {}, "dag_run": SimpleNamespace(partition_key="2024-01-02"), "logical_date": utc_midnight(DAY)}
    assert resolve_partition(context) == dt.date(2024, 1, 2)


def test_partition_key_may_be_a_midnight_timestamp():
    context = {"dag_run": SimpleNamespace(partition_key="2024-01-02T00:00:00"), "logical_date": None}
    assert resolve_partition(context) == dt.date(2024, 1, 2)


def test_no_partition_at_all_fails_and_says_how_to_pass_one():
    with pytest.raises(PartitionError, match=r"no partition.*\"partition\": \"YYYY-MM-DD\""):
        resolve_partition(
            {"params": {"partition": None}, "dag_run": SimpleNamespace(partition_key=None), "logical_date": None}
        )


@pytest.mark.parametrize(
    "value",
    [
        "2024-13-01",  # no such month
        "2024-02-30",  # no such day
        "20240101",
        "2024-01-01 ",
        " 2024-01-01",
        "2024-01-01/../../etc",
        "../2024-01-01",
        "2024-01-01'; DROP TABLE silver.orders; --",
        "2024-01-01 OR 1=1",
        "2024-01-01T10:00:00",  # a time is not a day
        "",
        "yesterday",
        12345,
    ],
)
def test_bad_values_are_rejected_with_the_value_named(value):
    with pytest.raises(PartitionError, match=r"YYYY-MM-DD|real calendar date"):
        parse_partition(value)


@pytest.mark.parametrize("key", ["2024-01-01/../x", "2024-01-01T10:00:00", "2024-01-01T00:00:00; DROP"])
def test_bad_partition_keys_are_rejected(key):
    with pytest.raises(PartitionError, match="partition_key"):
        resolve_partition({"dag_run": SimpleNamespace(partition_key=key), "logical_date": utc_midnight(DAY)})


# Through Airflow: the silver DAG's own resolve task, other tasks marked success unrun.
ONLY_RESOLVE = "wait_for_.*|stage|audit|publish|verdict|late_partitions|reprocess_late"


def _resolved(dags, **kwargs) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    states = run_dag(dags["silver_orders"], mark_success_pattern=ONLY_RESOLVE, **kwargs)
    assert states["resolve_partition"] == "success", states
    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id="silver_orders", run_id=states["run_id"], task_id="resolve_partition")
            .one()
        )
        return XComModel.deserialize_value(row)


def test_dag_test_with_a_logical_date(dags):
    assert _resolved(dags, day=DAY) == "2024-03-05"


def test_dag_test_with_a_partition_param(dags):
    assert _resolved(dags, conf={"partition": "2024-02-29"}, logical_date=utc_midnight(DAY)) == "2024-02-29"


def test_run_without_logical_date_or_param_fails_before_any_work(dags):
    states = run_dag(dags["silver_orders"], logical_date=None)
    assert states["resolve_partition"] == "failed"
    assert states["stage"] != "success"
    assert states["dag"] == "failed"
    # AirflowFailException: no retry was attempted.
    assert states["_tries"]["resolve_partition"] == 1


def test_hostile_partition_param_is_rejected_before_any_work(dags):
    from airflow.sdk.definitions.param import ParamValidationError

    try:
        states = run_dag(dags["silver_orders"], conf={"partition": "../../etc/passwd"}, logical_date=utc_midnight(DAY))
    except ParamValidationError as exc:  # Airflow's own Param check caught it first
        assert "partition" in str(exc)
    else:
        assert states["resolve_partition"] == "failed"
        assert states["stage"] != "success"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("２０２４-０１-０５", "ASCII digits"),  # fullwidth digits
        ("٢٠٢٤-٠١-٠٥", "ASCII digits"),  # Arabic-Indic digits
        ("2024-01-05;DROP TABLE x", "must be a daily partition written YYYY-MM-DD"),
        ("0001-01-01", "outside the supported calendar: partitions are from 1900-01-01 to 2999-12-31"),
        ("9999-12-31", "outside the supported calendar"),
        ("1899-12-31", "outside the supported calendar"),
        ("3000-01-01", "outside the supported calendar"),
        ("2023-02-29", "is not a real calendar date (written YYYY-MM-DD, UTC)"),
    ],
)
def test_the_calendar_is_bounded_and_digits_are_ascii(value, said):
    with pytest.raises(PartitionError) as caught:
        parse_partition(value)
    assert said in str(caught.value)


def test_the_calendar_edges_work_through_a_partition_s_window_and_lineage():
    """The first and last partitions of the calendar: their windows (the lineage facet's) compute."""
    from wap import lineage
    from wap.partition import DAILY, HOURLY

    for grain, first, last in ((DAILY, "1900-01-01", "2999-12-31"), (HOURLY, "1900-01-01T00", "2999-12-31T23")):
        for key in (first, last):
            start, end = grain.window(grain.parse(key))
            assert end - start == grain.step
            assert lineage.partition_facet("silver.orders", "order_date", grain.parse(key)) is not None
    with pytest.raises(PartitionError, match="outside the supported calendar"):
        resolve_partition({"logical_date": dt.datetime(9999, 12, 31, tzinfo=dt.UTC)})
