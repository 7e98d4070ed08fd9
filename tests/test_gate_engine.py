"""The gate's single-pass evaluation agrees with Great Expectations, case by case.

The common expectation types are evaluated by the gate in one Spark aggregation instead
of by GX (one pass instead of one per expectation). These tests run every compiled form
through both and require the same verdict, and the same unexpected count where GX gives one.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from wap.audit import _compile, evaluate, run_suite

ROWS = [
    # id, amount, status, n
    ("a", Decimal("10.00"), "paid", 1),
    ("b", Decimal("0.00"), "placed", 2),
    ("b", Decimal("-5.00"), "shipped", 3),  # duplicate id, negative amount
    (None, Decimal("100.00"), "lost", 4),  # null id, value outside the set
    ("c", None, None, 5),  # null amount and status
    ("d", Decimal("250.50"), "paid", 6),
]
SCHEMA = "id STRING, amount DECIMAL(12,2), status STRING, n BIGINT"
STATUSES = ["placed", "paid", "shipped", "cancelled"]


def e(kind: str, **kwargs) -> dict:
    return {"type": kind, "kwargs": kwargs}


CASES = [
    e("expect_table_row_count_to_be_between", min_value=1),
    e("expect_table_row_count_to_be_between", min_value=7),
    e("expect_table_row_count_to_be_between", min_value=1, max_value=5),
    e("expect_table_row_count_to_be_between", max_value=6),
    e("expect_column_values_to_not_be_null", column="id"),
    e("expect_column_values_to_not_be_null", column="n"),
    e("expect_column_values_to_not_be_null", column="id", mostly=0.8),
    e("expect_column_values_to_not_be_null", column="id", mostly=0.9),
    e("expect_column_values_to_be_unique", column="id"),
    e("expect_column_values_to_be_unique", column="n"),
    e("expect_column_values_to_be_between", column="amount", min_value=0, max_value=1000),
    e("expect_column_values_to_be_between", column="amount", min_value=-10, max_value=1000),
    e("expect_column_values_to_be_between", column="amount", min_value=0, max_value=250.5),
    e("expect_column_values_to_be_between", column="amount", min_value=0, max_value=250.5, strict_max=True),
    e("expect_column_values_to_be_between", column="amount", min_value=0, strict_min=True),
    e("expect_column_values_to_be_between", column="amount", max_value=100),
    e("expect_column_values_to_be_between", column="n", min_value=1, max_value=6),
    e("expect_column_values_to_be_between", column="amount", min_value=0, mostly=0.75),
    e("expect_column_values_to_be_in_set", column="status", value_set=STATUSES),
    e("expect_column_values_to_be_in_set", column="status", value_set=[*STATUSES, "lost"]),
    e("expect_column_values_to_be_in_set", column="status", value_set=STATUSES, mostly=0.75),
    e("expect_column_value_lengths_to_be_between", column="status", min_value=1, max_value=7),
    e("expect_column_value_lengths_to_be_between", column="status", max_value=4),
    e("expect_column_value_lengths_to_be_between", column="status", min_value=5),
    e("expect_column_value_lengths_to_be_between", column="status", min_value=4, max_value=6),
    e("expect_column_value_lengths_to_be_between", column="id", max_value=1),
    e("expect_column_value_lengths_to_be_between", column="status", max_value=4, mostly=0.6),
]


@pytest.fixture(scope="module")
def frame(spark):
    return spark.createDataFrame(ROWS, SCHEMA)


@pytest.mark.parametrize("expectation", CASES, ids=lambda x: f"{x['type'][7:]}{sorted(x['kwargs'].items())}")
def test_single_pass_verdict_equals_great_expectations(frame, expectation):
    types = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    compiled = _compile(expectation, "e0", types)
    assert compiled is not None, "this form is meant to be evaluated in the single pass"
    shared, own, verdict = compiled
    values = frame.agg(*[c.alias(n) for n, c in {**shared, **own}.items()]).first().asDict()

    findings = run_suite(frame, [expectation])
    assert verdict(values) == (not findings), (values, findings)
    if findings and "e0_u" in values and findings[0].unexpected_count is not None:
        assert values["e0_u"] == findings[0].unexpected_count


@pytest.mark.parametrize(
    "expectation",
    [
        e("expect_column_values_to_be_unique", column="id", mostly=0.5),  # needs duplicate counts
        e("expect_table_row_count_to_be_between"),  # no bounds: GX's to judge
        e("expect_column_values_to_be_between", column="status", min_value="a"),  # not numeric
        e("expect_column_values_to_not_be_null", column="missing"),  # no such column
        e("expect_column_values_to_be_in_set", column="n", value_set=[1, 2]),  # not strings
        e("expect_column_value_lengths_to_be_between", column="n", max_value=1),  # not a string column
        e("expect_column_pair_values_a_to_be_greater_than_b", column_A="n", column_B="n"),
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id", "row_condition": "n > 1"}},
    ],
)
def test_other_forms_are_left_to_great_expectations(frame, expectation):
    types = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    assert _compile(expectation, "e0", types) is None


def test_a_suite_of_only_great_expectations_forms_is_evaluated(frame):
    """Nothing compiled and nothing else asked for: no aggregation at all, GX judges alone."""
    passing = e("expect_column_pair_values_a_to_be_greater_than_b", column_A="n", column_B="n", or_equal=True)
    failing = e("expect_column_pair_values_a_to_be_greater_than_b", column_A="n", column_B="n")
    assert evaluate(frame, [passing]) == ([], {})
    findings, _ = evaluate(frame, [failing])
    assert [f.check for f in findings] == ["expect_column_pair_values_a_to_be_greater_than_b"]
