"""The gate's single-pass evaluation agrees with Great Expectations, case by case.

The common expectation types are evaluated by the gate in one Spark aggregation instead
of by GX (one pass instead of one per expectation), observed while the staged files are
written (`Gate.observe`) or read from a frame (`Gate.measure`); uniqueness is a pass of
its own over the written key columns. These tests run every compiled form through GX and
through both paths, and require the same verdict, and GX's unexpected count where it
gives one.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from wap import audit
from wap.audit import Gate, _compile, plan_for, run_suite

ROWS = [
    # id, amount, status, n, m, code
    ("a", Decimal("10.00"), "paid", 1, 1, "AB-12"),
    ("b", Decimal("0.00"), "placed", 2, 1, "AB-7"),
    ("b", Decimal("-5.00"), "shipped", 3, 4, "ab-12"),  # duplicate id, negative amount, n < m
    (None, Decimal("100.00"), "lost", 4, None, None),  # null id, value outside the set, m missing
    ("c", None, None, 5, 5, "XY-99"),  # null amount and status
    ("d", Decimal("250.50"), "paid", 6, 2, "AB-123"),
    ("d", Decimal("250.50"), None, None, None, "AB-1"),  # (id, amount) repeated; n and m both missing
    (None, None, None, 7, 3, "C"),
]
SCHEMA = "id STRING, amount DECIMAL(12,2), status STRING, n BIGINT, m BIGINT, code STRING"
STATUSES = ["placed", "paid", "shipped", "cancelled"]


def e(kind: str, **kwargs) -> dict:
    return {"type": kind, "kwargs": kwargs}


CASES = [
    e("expect_table_row_count_to_be_between", min_value=1),
    e("expect_table_row_count_to_be_between", min_value=9),
    e("expect_table_row_count_to_be_between", min_value=1, max_value=5),
    e("expect_table_row_count_to_be_between", max_value=8),
    e("expect_column_values_to_not_be_null", column="id"),
    e("expect_column_values_to_not_be_null", column="amount", mostly=0.7),
    e("expect_column_values_to_not_be_null", column="id", mostly=0.7),
    e("expect_column_values_to_not_be_null", column="id", mostly=0.8),
    e("expect_column_values_to_be_unique", column="id"),
    e("expect_column_values_to_be_unique", column="n"),
    e("expect_column_values_to_be_unique", column="code"),
    e("expect_column_values_to_be_unique", column="id", mostly=0.5),
    e("expect_column_values_to_be_unique", column="id", mostly=0.6),
    e("expect_compound_columns_to_be_unique", column_list=["id", "amount"]),
    e("expect_compound_columns_to_be_unique", column_list=["id", "status"]),
    e("expect_compound_columns_to_be_unique", column_list=["amount", "status"]),
    e("expect_compound_columns_to_be_unique", column_list=["amount", "status"], ignore_row_if="any_value_is_missing"),
    e("expect_compound_columns_to_be_unique", column_list=["id", "amount"], mostly=0.7),
    e("expect_column_values_to_be_between", column="amount", min_value=0, max_value=1000),
    e("expect_column_values_to_be_between", column="amount", min_value=-10, max_value=1000),
    e("expect_column_values_to_be_between", column="amount", min_value=0, max_value=250.5),
    e("expect_column_values_to_be_between", column="amount", min_value=0, max_value=250.5, strict_max=True),
    e("expect_column_values_to_be_between", column="amount", min_value=0, strict_min=True),
    e("expect_column_values_to_be_between", column="amount", max_value=100),
    e("expect_column_values_to_be_between", column="n", min_value=1, max_value=7),
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
    e("expect_column_values_to_match_regex", column="code", regex="^[A-Z]{2}-[0-9]+$"),
    e("expect_column_values_to_match_regex", column="code", regex="[0-9]"),
    e("expect_column_values_to_match_regex", column="code", regex="-", mostly=0.8),
    e("expect_column_values_to_match_regex", column="code", regex="^[A-Z]{2}-[0-9]{1,3}$", mostly=0.5),
    e("expect_column_values_to_not_match_regex", column="code", regex="[a-z]"),
    e("expect_column_values_to_not_match_regex", column="code", regex="^[A-Z]+$"),
    e("expect_column_values_to_not_match_regex", column="status", regex="^zzz"),
    e("expect_column_pair_values_to_be_equal", column_A="n", column_B="m"),
    e("expect_column_pair_values_to_be_equal", column_A="n", column_B="n"),
    e("expect_column_pair_values_to_be_equal", column_A="n", column_B="m", mostly=0.2),
    e("expect_column_pair_values_a_to_be_greater_than_b", column_A="n", column_B="m"),
    e("expect_column_pair_values_a_to_be_greater_than_b", column_A="n", column_B="m", or_equal=True),
    e("expect_column_pair_values_a_to_be_greater_than_b", column_A="n", column_B="m", or_equal=True, mostly=0.6),
    e("expect_column_pair_values_a_to_be_greater_than_b", column_A="n", column_B="n"),
    e("expect_column_pair_values_a_to_be_greater_than_b", column_A="n", column_B="n", or_equal=True),
]


@pytest.fixture(scope="module")
def frame(spark):
    return spark.createDataFrame(ROWS, SCHEMA)


def _types(frame) -> dict[str, str]:
    return {f.name: f.dataType.simpleString() for f in frame.schema.fields}


@pytest.mark.parametrize("expectation", CASES, ids=lambda x: f"{x['type'][7:]}{sorted(x['kwargs'].items())}")
def test_single_pass_verdict_equals_great_expectations(spark, frame, expectation, tmp_path):
    assert _compile(expectation, "e0", _types(frame)) is not None, "this form is meant to be compiled"
    gate = Gate.plan([expectation], _types(frame))
    read = gate.measure(frame)[None]

    # As the stage does: the aggregates observed while the frame is written, the passes
    # over the written files' key columns.
    observed, values_of = gate.observe(frame)
    observed.write.parquet(str(tmp_path / "staged"))
    written = spark.read.parquet(str(tmp_path / "staged"))
    staged = gate.count(written.select(*gate.key_columns) if gate.passes else written, {None: values_of()})[None]
    assert staged == read, "observing the write and reading the frame measure the same"

    findings = run_suite(frame, [expectation])
    assert gate.findings(read, lambda: frame) == findings, "the gate's findings are GX's own"
    _, _, verdict = gate.compiled[0]
    assert verdict(read) == (not findings), (read, findings)
    if findings and "e0_u" in read and findings[0].unexpected_count is not None:
        assert read["e0_u"] == findings[0].unexpected_count, (read, findings)


UNIQUENESS = [c for c in CASES if c["type"].endswith("_unique")]


@pytest.mark.parametrize("expectation", UNIQUENESS, ids=lambda x: f"{x['type'][7:]}{sorted(x['kwargs'].items())}")
def test_uniqueness_counted_here_equals_spark_s_group_by(frame, expectation, monkeypatch):
    # Up to LOCAL_DUPLICATES_MAX_ROWS rows are counted in the task; above, by Spark. Also per
    # partition, as a range run's gate counts (a null partition value is a group too).
    from pyspark.sql import functions as F

    gate = Gate.plan([expectation], _types(frame))
    parted = frame.withColumn("part", F.when(F.col("n") % 2 == 0, "even").when(F.col("n") % 2 == 1, "odd"))
    here, here_by = gate.measure(frame)[None], gate.measure(parted, "part")
    monkeypatch.setattr(audit, "LOCAL_DUPLICATES_MAX_ROWS", 0)
    by_spark, by_spark_by = gate.measure(frame)[None], gate.measure(parted, "part")
    assert here == by_spark and here["e0_n"] > 0
    assert here_by == by_spark_by and set(here_by) == {"even", "odd", None}


def test_a_passing_measurement_needs_no_frame(frame):
    """The verdict of compiled checks that pass comes from the values alone: no data is read."""
    gate = Gate.plan([e("expect_column_values_to_not_be_null", column="n", mostly=0.5)], _types(frame))
    values = gate.measure(frame)[None]

    def no_frame():
        raise AssertionError("a passing compiled check read the data")

    assert gate.findings(values, no_frame) == []


@pytest.mark.parametrize(
    "expectation",
    [
        e("expect_compound_columns_to_be_unique", column_list=["id", "n"], ignore_row_if="never"),
        e("expect_column_values_to_match_regex", column="n", regex="1"),  # not a string column
        e("expect_column_pair_values_to_be_equal", column_A="n", column_B="m", ignore_row_if="either_value_is_missing"),
        e("expect_table_row_count_to_be_between"),  # no bounds: GX's to judge
        e("expect_column_values_to_be_between", column="status", min_value="a"),  # not numeric
        e("expect_column_values_to_not_be_null", column="missing"),  # no such column
        e("expect_column_values_to_be_in_set", column="n", value_set=[1, 2]),  # not strings
        e("expect_column_value_lengths_to_be_between", column="n", max_value=1),  # not a string column
        e("expect_column_pair_values_to_be_in_set", column_A="n", column_B="m", value_pairs_set=[[1, 1]]),
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id", "row_condition": "n > 1"}},
    ],
)
def test_other_forms_are_left_to_great_expectations(frame, expectation):
    types = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    assert _compile(expectation, "e0", types) is None


def test_a_suite_of_only_great_expectations_forms_is_evaluated(frame):
    """Nothing compiled: GX judges alone."""
    passing = e("expect_column_max_to_be_between", column="n", min_value=1)
    failing = e("expect_column_max_to_be_between", column="n", max_value=3)
    for expectation, failed in ((passing, []), (failing, ["expect_column_max_to_be_between"])):
        gate = Gate.plan([expectation], _types(frame))
        assert not gate.compiled
        assert [f.check for f in gate.findings(gate.measure(frame)[None], lambda: frame)] == failed


def test_a_pattern_java_refuses_is_left_to_great_expectations(frame, tmp_path):
    """A regex Java cannot compile would fail the staging write it is observed in: it is left
    to GX, where it is an expectation that raised (a failed check), as before it was compiled."""
    bad = e("expect_column_values_to_match_regex", column="code", regex="[A-")
    good = e("expect_column_values_to_match_regex", column="code", regex=".")
    columns = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    suite = {"expectations": [good, bad], "meta": {"contract": {"version": 1, "columns": columns}}}
    _, gate = plan_for(frame, suite)
    assert set(gate.compiled) == {0} and gate.left == {1}
    observed, values_of = gate.observe(frame)
    observed.write.parquet(str(tmp_path / "staged"))  # the write does not fail
    findings = gate.findings(values_of(), lambda: frame)
    assert [(f.check, f.message.startswith("expectation raised")) for f in findings] == [
        ("expect_column_values_to_match_regex", True)
    ]
