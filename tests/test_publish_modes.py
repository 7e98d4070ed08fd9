"""Publish modes are strategy objects (`wap.publish`, docs/adr/0012), and errors carry whether a
retry can help (`wap.errors`, docs/adr/0014). Pure logic: no Spark, no Airflow."""

from __future__ import annotations

import datetime as dt
import pickle
from dataclasses import dataclass

import pytest

from wap import errors
from wap.pipeline import Pipeline
from wap.publish import REPLACE_PARTITION, Merge, PublishMode, ReplacePartition

DAY = dt.date(2024, 1, 3)
EARLY, LATE = dt.datetime(2024, 1, 3, 1, tzinfo=dt.UTC), dt.datetime(2024, 1, 3, 2, tzinfo=dt.UTC)


def test_each_mode_implements_the_protocol():
    for mode in (ReplacePartition(), Merge(key="id", newest="updated_at")):
        assert isinstance(mode, PublishMode)


def test_replace_partition_replaces_its_partition_and_runs_side_by_side():
    mode = REPLACE_PARTITION
    assert mode.replaces(DAY) == DAY
    assert mode.partitioned and mode.max_active_runs > 1
    assert mode.named_columns() == {}
    assert mode.window_column("order_date") == "order_date"
    assert mode.release_refusal("silver.orders", "2024-01-03", "r", LATE, EARLY) is None
    assert mode.rollback_refusal("silver.orders") is None
    changes = object()
    assert mode.staged_result(changes, ["a"], lambda: pytest.fail("the base is never read")) is changes


def test_merge_replaces_the_whole_table_one_run_at_a_time():
    mode = Merge(key="customer_id", newest="updated_at")
    assert mode.replaces(DAY) is None
    assert not mode.partitioned and mode.max_active_runs == 1
    assert mode.named_columns() == {"Merge.key": "customer_id", "Merge.newest": "updated_at"}
    assert mode.window_column(None) == "updated_at"
    assert "cannot roll back alone" in (mode.rollback_refusal("dim.customers") or "")


def test_a_merge_is_not_released_over_a_version_published_after_it_staged():
    mode = Merge(key="customer_id", newest="updated_at")
    refusal = mode.release_refusal("dim.customers", "2024-01-03T05", "later-run", LATE, EARLY)
    assert refusal and "later-run" in refusal and "2024-01-03T05" in refusal
    assert mode.release_refusal("dim.customers", "2024-01-03T05", "older-run", EARLY, LATE) is None


def test_a_new_mode_is_one_class(tmp_path, monkeypatch):
    """A mode written here, outside the package, is accepted by a Pipeline as it stands."""

    @dataclass(frozen=True)
    class AppendOnly(ReplacePartition):
        """Keeps the partition's published rows and adds the run's (a sketch of a third mode)."""

        def staged_result(self, changes, columns, base):
            published = base()
            return changes if published is None else changes.unionByName(published.select(*columns))

    suite = tmp_path / "events.json"
    suite.write_text(
        '{"name": "events", "expectations": [], "meta": {"contract": {"version": 1, '
        '"partition_column": "d", "columns": {"d": "date", "id": "string"}}}}',
        encoding="utf-8",
    )
    monkeypatch.setenv("WAP_EXPECTATIONS_DIR", str(tmp_path))
    pipeline = Pipeline(
        name="events", table="x.events", sql="e.sql", suite="events.json", sources=(), publish=AppendOnly()
    )
    assert isinstance(pipeline.publish, PublishMode) and pipeline.partition_column == "d"


# ---------------------------------------------------------------------------- errors
def every_error_class() -> list[type[errors.WapError]]:
    found, todo = [], [errors.WapError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return [c for c in found if c.__module__ == "wap.errors"]


def test_every_error_says_whether_a_retry_can_help():
    classes = every_error_class()
    assert len(classes) >= 18
    for cls in classes:
        assert isinstance(cls.retryable, bool)
        assert cls.retryable == issubclass(cls, errors.TransientError), cls
    assert not errors.DataError.retryable and not errors.SetupError.retryable
    assert errors.SourceMissingError.retryable and errors.PublishConflictError.retryable


def test_data_errors_stay_value_errors_for_callers_that_catch_those():
    assert issubclass(errors.SuiteError, ValueError) and issubclass(errors.UnknownPipelineError, LookupError)


@pytest.mark.parametrize(
    "error",
    [
        errors.SuiteError("s.json", ["a problem"], "p"),
        errors.GateFailedError("blocked", [{"check": "x", "success": False}]),
        errors.PartitionChangedError("lost", None),
        errors.DataError("plain"),
        errors.PublishConflictError("busy"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_a_trip_between_processes(error):
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert vars(back) == vars(error)


def test_no_module_outside_errors_defines_an_exception_class():
    import ast
    from pathlib import Path

    package = Path(errors.__file__).parent
    defined = []
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases
            ):
                defined.append(f"{path.name}:{node.name}")
    assert all(d.startswith("errors.py:") for d in defined), defined
