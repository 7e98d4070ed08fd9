"""The quarantine review's operator on its own (the whole review runs in test_local_airflow.py,
answered in a browser): what the form asks, and what no answer by the deadline does."""

from __future__ import annotations

import datetime as dt

import pytest


def review_operator():
    from wap.pipeline import find_pipeline
    from wap.tasks import ReviewOperator

    return ReviewOperator(pipeline=find_pipeline("silver_orders"), response_timeout=dt.timedelta(hours=1))


def test_the_form_asks_for_a_reason_and_offers_release_or_discard():
    review = review_operator()
    assert review.options == ["Release", "Discard"]
    assert review.options_mapping == {"Release": "release", "Discard": "discard"}
    assert list(review.serialized_params) == ["reason"]
    assert review.response_timeout == dt.timedelta(hours=1)


def test_no_answer_by_the_deadline_fails_without_a_retry_and_says_how_to_decide():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=r"stays quarantined.*wap quarantine release"):
        review_operator().process_trigger_event_error({"error": "timed out", "error_type": "timeout"})


def test_each_pipeline_declares_its_review_dag_on_its_review_asset():
    from airflow.dag_processing.dagbag import DagBag

    from wap.settings import load_settings

    bag = DagBag(str(load_settings().dags_dir / "silver_orders.py"))
    review = bag.dags["silver_orders__review"]
    assert set(review.task_ids) == {"review", "release", "discard"}
    assert review.timetable.asset_condition.uri == "wap-review://silver/orders"
    assert [o.uri for o in review.get_task("release").outlets] == ["iceberg://wap/silver/orders"]
    request = bag.dags["silver_orders"].get_task("request_review")
    assert request.trigger_rule == "one_failed" and {"audit", "verdict"} <= request.upstream_task_ids
    assert request.is_teardown, "the run's state stays the verdict's: a failed run is not made a success by it"
