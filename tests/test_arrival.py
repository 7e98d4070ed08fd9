"""The data-arrival sensor: it passes at once when the day's files are there, and otherwise
defers to `ArrivalTrigger`, which ends the wait by its own deadline (also where no
scheduler enforces timeouts: `airflow dags test` runs triggers inline). The same sensor
against a real triggerer: `test_cluster.py`."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

from wap.sources import LandedFiles
from wap.tasks import ArrivalTrigger, LandedDataSensor

ORDERS = LandedFiles(dataset="orders", schema="order_id STRING")
DAY = dt.date(2031, 1, 2)


def first_event(trigger: ArrivalTrigger) -> dict:
    async def take():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(take())


@pytest.fixture
def landing(tmp_path, monkeypatch):
    monkeypatch.setenv("WAP_LANDING_DIR", str(tmp_path))
    return tmp_path / "orders" / f"dt={DAY}"


def sensor(timeout: float = 0.5) -> LandedDataSensor:
    return LandedDataSensor(task_id="wait_for_orders", source=ORDERS, partition=DAY.isoformat(), timeout=timeout)


def test_files_already_there_pass_without_deferring(landing):
    landing.mkdir(parents=True)
    (landing / "part-1.jsonl").write_text("{}\n")
    assert sensor().execute({}) is None


def test_markers_are_not_data(landing):
    landing.mkdir(parents=True)
    (landing / "_SUCCESS").write_text("")
    with pytest.raises(TaskDeferred):
        sensor().execute({})


def test_a_day_that_never_lands_times_out_with_a_clear_error(landing):
    with pytest.raises(TaskDeferred) as deferred:
        sensor(timeout=0.5).execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, ArrivalTrigger) and trigger.serialize()[0] == "wap.tasks.ArrivalTrigger"
    event = first_event(trigger)
    assert event == {"arrived": False}
    with pytest.raises(AirflowSensorTimeout, match=r"no landed files matching .*dt=2031-01-02.*nothing was staged"):
        sensor().arrived({}, event)


def test_files_landing_while_deferred_end_the_wait(landing):
    with pytest.raises(TaskDeferred) as deferred:
        sensor(timeout=30).execute({})
    landing.mkdir(parents=True)
    (landing / "late-file.jsonl").write_text("{}\n")
    assert first_event(deferred.value.trigger) == {"arrived": True}
    assert sensor().arrived({}, {"arrived": True}) is None
