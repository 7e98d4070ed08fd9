"""A suite is checked against its contract when its pipeline loads (`audit.check_suite`), before
any work: a column the contract lacks, an expectation its column's type cannot satisfy, an
unknown expectation type, a bad severity or a partition column unfit for the grain is one
`SuiteError` listing every problem, and a DAG file with such a suite does not import.

JSON only: no Spark session and no Great Expectations (checked in a fresh process).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wap import audit, template
from wap.audit import SuiteError
from wap.partition import DAILY, GRAINS, HOURLY
from wap.pipeline import Pipeline, declared_in, find_pipeline
from wap.publish import Merge
from wap.settings import REPO_ROOT

SUITE_FILE = "silver.flights.json"
FLIGHTS: dict[str, Any] = {
    "name": "silver.flights",
    "meta": {
        "contract": {
            "version": 1,
            "partition_column": "flight_date",
            "columns": {
                "flight_id": "string",
                "flight_date": "date",
                "carrier": "string",
                "dep_delay": "int",
                "fare": "decimal(10,2)",
                "cancelled": "boolean",
                "departed_at": "timestamp",
            },
        }
    },
    "expectations": [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "flight_id"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "dep_delay", "min_value": -60}},
    ],
}


def e(kind: str, meta: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, **({"meta": meta} if meta else {})}


def flights(*more: dict[str, Any], **contract: Any) -> dict[str, Any]:
    """FLIGHTS with `more` expectations appended (positions 3, 4, ...) and contract fields replaced."""
    suite = copy.deepcopy(FLIGHTS)
    suite["expectations"] += list(more)
    suite["meta"]["contract"].update(contract)
    return suite


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A suite folder of the test's own (WAP_EXPECTATIONS_DIR)."""
    monkeypatch.setenv("WAP_EXPECTATIONS_DIR", str(tmp_path))
    return tmp_path


def load(folder: Path, suite: dict[str, Any], **pipeline: Any) -> Pipeline:
    """Declare a pipeline on `suite`, as a DAG file does (the check runs here)."""
    (folder / SUITE_FILE).write_text(json.dumps(suite), encoding="utf-8")
    return Pipeline(name="flights", table="silver.flights", sql="flights.sql", suite=SUITE_FILE, sources=(), **pipeline)


def refused(folder: Path, suite: dict[str, Any], **pipeline: Any) -> SuiteError:
    with pytest.raises(SuiteError) as caught:
        load(folder, suite, **pipeline)
    return caught.value


# ---------------------------------------------------------------------------- each problem
def test_a_valid_suite_loads_and_gives_its_contract(folder):
    pipeline = load(folder, flights())
    assert pipeline.contract.columns["dep_delay"] == "int" and pipeline.partition_column == "flight_date"


def test_a_typo_in_a_column_names_the_suite_the_expectation_the_column_and_the_right_name(folder):
    error = refused(folder, flights(e("expect_column_values_to_be_between", column="dep_delay_minutes", max_value=9)))
    assert isinstance(error, ValueError)
    (problem,) = error.problems
    assert "expectations[3] expect_column_values_to_be_between" in problem
    assert "'dep_delay_minutes' is not a column of the contract" in problem
    assert "did you mean 'dep_delay'?" in problem
    message = str(error)
    assert SUITE_FILE in message and "pipeline flights" in message and problem in message


def test_a_column_with_no_close_name_is_answered_with_the_contracts_columns(folder):
    (problem,) = refused(folder, flights(e("expect_column_values_to_not_be_null", column="xyz"))).problems
    assert "'xyz' is not a column of the contract" in problem
    assert (
        "the contract's columns are: flight_id, flight_date, carrier, dep_delay, fare, cancelled, departed_at"
        in problem
    )


def test_a_column_list_with_one_missing_column_names_that_column(folder):
    unique = e("expect_compound_columns_to_be_unique", column_list=["flight_date", "flight_id", "carier"])
    (problem,) = refused(folder, flights(unique)).problems
    assert "expectations[3] expect_compound_columns_to_be_unique: column_list[2] 'carier'" in problem
    assert "did you mean 'carrier'?" in problem


def test_column_a_and_b_and_a_column_set_are_columns_too(folder):
    pair = e("expect_column_pair_values_a_to_be_greater_than_b", column_A="dep_delay", column_B="arr_delay")
    shape = e("expect_table_columns_to_match_set", column_set=["flight_id", "fare_eur"], exact_match=False)
    problems = refused(folder, flights(pair, shape)).problems
    assert [p.split(":")[0] for p in problems] == [
        "expectations[3] expect_column_pair_values_a_to_be_greater_than_b",
        "expectations[4] expect_table_columns_to_match_set",
    ]
    assert "column_B 'arr_delay'" in problems[0] and "column_set[1] 'fare_eur'" in problems[1]


def test_an_expectation_without_its_column_is_refused(folder):
    (problem,) = refused(folder, flights(e("expect_column_values_to_be_unique", col="flight_id"))).problems
    assert "expectations[3] expect_column_values_to_be_unique: kwargs.column is missing" in problem


def test_value_lengths_on_a_decimal_column_is_refused(folder):
    lengths = e("expect_column_value_lengths_to_be_between", column="fare", max_value=8)
    (problem,) = refused(folder, flights(lengths)).problems
    assert "expectations[3] expect_column_value_lengths_to_be_between: column 'fare' is decimal(10,2)" in problem
    assert "needs a string column" in problem


@pytest.mark.parametrize(
    "expectation",
    [
        e("expect_column_values_to_match_regex", column="dep_delay", regex="^[0-9]+$"),
        e("expect_column_values_to_match_strftime_format", column="flight_date", strftime_format="%Y-%m-%d"),
        e("expect_column_values_to_be_json_parseable", column="cancelled"),
    ],
    ids=lambda x: x["type"],
)
def test_text_checks_on_a_column_that_is_not_a_string_are_refused(folder, expectation):
    (problem,) = refused(folder, flights(expectation)).problems
    assert "needs a string column" in problem


def test_between_on_a_boolean_column_is_refused(folder):
    between = e("expect_column_values_to_be_between", column="cancelled", min_value=0, max_value=1)
    (problem,) = refused(folder, flights(between)).problems
    assert "expectations[3] expect_column_values_to_be_between: column 'cancelled' is boolean" in problem
    assert "needs a numeric, date or timestamp column" in problem


@pytest.mark.parametrize(
    "expectation",
    [
        e("expect_column_max_to_be_between", column="carrier", max_value=10),
        e("expect_column_median_to_be_between", column="cancelled", min_value=0),
        e("expect_column_mean_to_be_between", column="flight_date", min_value=0),
        e("expect_column_sum_to_be_between", column="carrier", min_value=0),
        e("expect_column_stdev_to_be_between", column="cancelled", max_value=1),
        e("expect_column_quantile_values_to_be_between", column="carrier", quantile_ranges={}),
    ],
    ids=lambda x: f"{x['type']}({x['kwargs']['column']})",
)
def test_numeric_checks_on_a_string_boolean_or_date_column_are_refused(folder, expectation):
    (problem,) = refused(folder, flights(expectation)).problems
    assert f"column {expectation['kwargs']['column']!r}" in problem and "this expectation needs a numeric" in problem


@pytest.mark.parametrize(
    "expectation",
    [
        e("expect_column_values_to_be_between", column="flight_date", min_value="2024-01-01"),
        e("expect_column_max_to_be_between", column="departed_at", max_value="2030-01-01T00:00:00"),
        e("expect_column_values_to_be_between", column="fare", min_value=0, max_value=10000),
        e("expect_column_mean_to_be_between", column="dep_delay", max_value=120),
        e("expect_column_values_to_match_regex", column="carrier", regex="^[A-Z0-9]{2}$"),
        e("expect_column_values_to_be_in_set", column="cancelled", value_set=[True, False]),
        e("expect_column_pair_values_a_to_be_greater_than_b", column_A="departed_at", column_B="flight_date"),
        e("expect_column_values_to_not_be_null", column="fare", meta={"severity": "warning"}),
        e("expect_column_values_to_be_unique", column="flight_id", row_condition='carrier=="LH"'),
    ],
    ids=lambda x: f"{x['type']}({x['kwargs'].get('column') or x['kwargs'].get('column_A')})",
)
def test_expectations_that_fit_their_columns_are_accepted(folder, expectation):
    load(folder, flights(expectation))


def test_an_unknown_expectation_type_is_refused_with_the_near_names(folder):
    (problem,) = refused(folder, flights(e("expect_column_values_to_be_not_null", column="flight_id"))).problems
    assert "expectations[3]: unknown expectation type 'expect_column_values_to_be_not_null'" in problem
    assert "'expect_column_values_to_not_be_null'" in problem  # the one meant is among the suggestions


def test_a_severity_other_than_blocking_or_warning_is_refused(folder):
    warn = e("expect_column_values_to_not_be_null", column="carrier", meta={"severity": "warn"})
    (problem,) = refused(folder, flights(warn)).problems
    assert "expectations[3] expect_column_values_to_not_be_null: meta.severity 'warn'" in problem
    assert "did you mean 'warning'?" in problem


def test_a_volume_severity_is_checked_too(folder):
    suite = flights()
    suite["meta"]["volume"] = {"recent_partitions": 7, "min_share_of_median": 0.5, "severity": "fatal"}
    (problem,) = refused(folder, suite).problems
    assert "meta.volume.severity 'fatal'" in problem


def test_a_partition_column_missing_from_the_contract_is_refused(folder):
    (problem,) = refused(folder, flights(partition_column="flightdate")).problems
    assert "meta.contract.partition_column 'flightdate' is not in the contract's columns" in problem
    assert "did you mean 'flight_date'?" in problem


def test_no_partition_column_is_refused_unless_the_pipeline_merges(folder):
    (problem,) = refused(folder, flights(partition_column=None)).problems
    assert "no partition_column; only a merged pipeline" in problem
    merged = load(folder, flights(partition_column=None), publish=Merge(key="flight_id", newest="departed_at"))
    assert merged.partition_column is None


@pytest.mark.parametrize(
    ("grain", "column", "needed"), [(HOURLY, "flight_date", "timestamp"), (DAILY, "departed_at", "date")]
)
def test_a_partition_column_of_the_wrong_type_for_the_grain_is_refused(folder, grain, column, needed):
    (problem,) = refused(folder, flights(partition_column=column), grain=grain).problems
    assert f"{grain.name} pipeline's partition column must be {needed!r}" in problem


def test_a_merge_key_must_be_a_column(folder):
    merge = Merge(key="flight", newest="departed_at")
    (problem,) = refused(folder, flights(partition_column=None), publish=merge).problems
    assert "Merge.key 'flight' is not a column of the contract; did you mean 'flight_id'?" in problem


def test_every_problem_is_in_one_error(folder):
    suite = flights(
        e("expect_column_values_to_be_between", column="dep_delay_minutes", min_value=0),
        e("expect_column_value_lengths_to_be_between", column="fare", max_value=8),
        e("expect_column_values_to_be_inset", column="carrier", value_set=["LH"]),
        e("expect_column_values_to_not_be_null", column="carrier", meta={"severity": "fatal"}),
        partition_column="flightdate",
    )
    error = refused(folder, suite)
    assert len(error.problems) == 5
    assert "(5 problems)" in str(error)
    assert all(f"  - {SUITE_FILE}: {p}" in str(error) for p in error.problems)


def test_a_missing_or_unreadable_suite_file_is_a_suite_error(folder):
    with pytest.raises(SuiteError, match="no such file"):
        Pipeline(name="x", table="silver.x", sql="x.sql", suite="nowhere.json", sources=())
    (folder / "broken.json").write_text('{"name": ', encoding="utf-8")
    with pytest.raises(SuiteError, match="cannot be read as JSON"):
        Pipeline(name="x", table="silver.x", sql="x.sql", suite="broken.json", sources=())


def test_a_suite_edited_in_place_is_read_again(folder):
    load(folder, flights())
    with pytest.raises(SuiteError):  # same file name, new content: not a stale cached copy
        load(folder, flights(e("expect_column_values_to_not_be_null", column="nope")))


# ---------------------------------------------------------------------------- what must pass
def test_the_repositorys_suites_pass_with_the_pipelines_that_use_them():
    pipelines = [
        p for folder in ("dags", "tests/dags") for f in (REPO_ROOT / folder).glob("*.py") for p in declared_in(f)
    ]
    by_suite: dict[str, list[Pipeline]] = {}
    for pipeline in pipelines:
        by_suite.setdefault(pipeline.suite, []).append(pipeline)
    suites = sorted(p.name for p in (REPO_ROOT / "expectations").glob("*.json"))
    assert suites and set(suites) <= set(by_suite), f"suites no DAG uses: {set(suites) - set(by_suite)}"
    directory = REPO_ROOT / "expectations"
    for name in suites:
        for pipeline in by_suite[name]:
            partitioned = pipeline.publish.partitioned
            audit.check_suite(name, grain=pipeline.grain, partitioned=partitioned, directory=directory)


@pytest.mark.parametrize(
    "request_args",
    [
        {"name": "web_sessions"},
        {"name": "bronze_clicks", "grain": "hourly", "source": "files:click_events"},
        {"name": "customer_changes", "source": "postgres:public.customers"},
        {"name": "dim_accounts", "grain": "hourly", "source": "postgres:public.accounts", "merge": True},
    ],
    ids=lambda x: x["name"],
)
def test_the_templates_generated_suites_pass(request_args):
    request = template.spec(**request_args)
    suite = json.loads(template.render(request)[f"expectations/{request.suite}"])
    partitioned = request.merge_key is None
    assert audit.suite_problems(suite, grain=GRAINS[request.grain], partitioned=partitioned) == []


def test_the_static_type_names_are_great_expectations_own():
    """GX_TYPES is kept by hand (GX is not imported when DAG files load): it must be GX's list."""
    from great_expectations.expectations.registry import list_registered_expectation_implementations

    assert set(list_registered_expectation_implementations()) == audit.GX_TYPES
    assert set(audit.COLUMN_TYPE_RULES) <= audit.GX_TYPES


# ---------------------------------------------------------------------------- through the DAG paths
def broken_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A DAG folder with copies of silver_orders and gold_daily_sales, and a suite folder in which
    silver.orders.json has a typo (`amout`); gold's suite is the repository's."""
    dags, suites = tmp_path / "dags", tmp_path / "expectations"
    dags.mkdir()
    shutil.copytree(REPO_ROOT / "expectations", suites)
    for name in ("silver_orders.py", "gold_daily_sales.py"):
        shutil.copy(REPO_ROOT / "dags" / name, dags)
    suite = json.loads((suites / "silver.orders.json").read_text())
    (between,) = [x for x in suite["expectations"] if x["type"] == "expect_column_values_to_be_between"]
    between["kwargs"]["column"] = "amout"
    (suites / "silver.orders.json").write_text(json.dumps(suite))
    return dags, suites


def test_a_dag_file_with_a_broken_suite_fails_dagbag_import_with_the_message(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    dags, suites = broken_copy(tmp_path)
    monkeypatch.setenv("WAP_EXPECTATIONS_DIR", str(suites))
    bag = DagBag(str(dags / "silver_orders.py"))
    assert not bag.dags
    (error,) = bag.import_errors.values()
    assert "SuiteError" in error and "pipeline silver_orders" in error
    assert "'amout' is not a column of the contract; did you mean 'amount'?" in error
    assert not DagBag(str(dags / "gold_daily_sales.py")).import_errors


def test_find_pipeline_raises_the_suite_error_of_the_pipeline_asked_for_only(tmp_path, monkeypatch):
    dags, suites = broken_copy(tmp_path)
    monkeypatch.setenv("WAP_EXPECTATIONS_DIR", str(suites))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    with pytest.raises(SuiteError, match="did you mean 'amount'"):
        find_pipeline("silver_orders")
    assert find_pipeline("gold_daily_sales").table == "gold.daily_sales"  # another DAG's typo does not stop it
    with pytest.raises(LookupError, match=r"not loaded: silver_orders\.py \(pipeline silver_orders"):
        find_pipeline("nothing_like_it")


def _env(dags: Path, suites: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAP_", "PYTEST_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT / "plugins"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        WAP_EXPECTATIONS_DIR=str(suites),
        WAP_DATA_DIR=str(data),
    )
    return env


PROBE = """
import json, sys
from wap.audit import SuiteError
from wap.pipeline import Pipeline, find_pipeline
refused = []
for name in json.loads(sys.argv[1]):
    try:
        Pipeline(name="p", table="silver.p", sql="p.sql", suite=name, sources=())
    except SuiteError as exc:
        refused.append(name)
try:
    find_pipeline("silver_orders")
except SuiteError:
    refused.append("silver_orders (find_pipeline)")
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"pyspark", "great_expectations", "pyiceberg"})
print(json.dumps({"refused": refused, "loaded": loaded}))
"""
BROKEN = {
    "typo.json": flights(e("expect_column_values_to_be_between", column="dep_delay_minutes", min_value=0)),
    "list.json": flights(e("expect_compound_columns_to_be_unique", column_list=["flight_id", "carier"])),
    "lengths.json": flights(e("expect_column_value_lengths_to_be_between", column="fare", max_value=8)),
    "between.json": flights(e("expect_column_values_to_be_between", column="cancelled", min_value=0)),
    "unknown.json": flights(e("expect_column_values_to_be_not_null", column="flight_id")),
    "severity.json": flights(e("expect_column_values_to_not_be_null", column="carrier", meta={"severity": "warn"})),
    "no_partition.json": flights(partition_column="flightdate"),
    "wrong_grain.json": flights(partition_column="departed_at"),
}


def test_each_is_refused_before_spark_or_great_expectations_is_even_imported(tmp_path):
    dags, suites = broken_copy(tmp_path)
    for name, suite in BROKEN.items():
        (suites / name).write_text(json.dumps(suite))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(sorted(BROKEN))],
        capture_output=True,
        text=True,
        env=_env(dags, suites, tmp_path / "data"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"refused": [*sorted(BROKEN), "silver_orders (find_pipeline)"], "loaded": []}


def test_the_cli_reports_a_broken_suite_cleanly(tmp_path):
    dags, suites = broken_copy(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "wap.cli", "plan", "silver_orders", "--from", "2024-01-01", "--to", "2024-01-02"],
        capture_output=True,
        text=True,
        env=_env(dags, suites, tmp_path / "data"),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert re.match(r"error: suite .*silver\.orders\.json \(pipeline silver_orders\) does not fit", done.stderr)
    assert "did you mean 'amount'?" in done.stderr
