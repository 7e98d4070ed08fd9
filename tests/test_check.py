"""`wap check` (wap.check): a pipeline's problems found without data, all of them in one run.

Each case copies silver_orders (or gold_daily_sales with its producer) into a folder of its
own, breaks it in one or more ways, and checks that every break is named, with its part and
its fix, and nothing else. One case runs the command as a user does, in a fresh process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from wap.settings import REPO_ROOT

SILVER_SUITE = "silver.orders.json"


def copy_of(root: Path, *pipelines: str) -> Path:
    """A folder holding these pipelines' DAG files, SQL and suites, as the repository has them."""
    for folder in ("dags", "sql", "expectations"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in pipelines:
        shutil.copy(REPO_ROOT / "dags" / f"{name}.py", root / "dags")
        shutil.copy(REPO_ROOT / "include" / "sql" / f"{name}.sql", root / "sql")
    for suite in (REPO_ROOT / "expectations").glob("*.json"):
        shutil.copy(suite, root / "expectations")
    return root


def edit(path: Path, change: Callable[[str], str]) -> None:
    before = path.read_text()
    after = change(before)
    assert after != before, f"the edit changed nothing in {path.name}"
    path.write_text(after)


def edit_suite(path: Path, change: Callable[[dict], None]) -> None:
    suite = json.loads(path.read_text())
    change(suite)
    path.write_text(json.dumps(suite, indent=2))


def settings_for(root: Path) -> dict[str, str]:
    return {
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "WAP_SQL_DIR": str(root / "sql"),
        "WAP_EXPECTATIONS_DIR": str(root / "expectations"),
    }


@pytest.fixture
def checked(spark, monkeypatch):
    """check(root, name): what `wap.check` finds for the pipeline `name` declared under `root`."""
    from wap.check import check
    from wap.pipeline import find_pipeline

    def run(root: Path, name: str):
        for key, value in settings_for(root).items():
            monkeypatch.setenv(key, value)
        return check(spark, find_pipeline(name, checked=False))

    return run


def misspell_type_and_suite(root: Path) -> None:
    """The issue's three problems: a misspelled column in the SQL, a contract type the SQL does
    not give, an expectation on a column the contract does not have."""
    edit(root / "sql" / "silver_orders.sql", lambda s: s.replace("max(amount)", "max(amout)"))

    def change(suite: dict) -> None:
        suite["meta"]["contract"]["columns"]["event_count"] = "int"
        expectation = next(e for e in suite["expectations"] if e["kwargs"].get("column") == "customer_id")
        expectation["kwargs"]["column"] = "cusomer_id"

    edit_suite(root / "expectations" / SILVER_SUITE, change)


def test_three_kinds_of_problem_are_reported_in_one_run(checked, tmp_path):
    root = copy_of(tmp_path, "silver_orders")
    misspell_type_and_suite(root)
    found = checked(root, "silver_orders")
    by_part = {p.part: p.message for p in found.problems}
    assert len(found.problems) == 3, found.problems
    assert "cusomer_id" in by_part["suite"] and "did you mean 'customer_id'" in by_part["suite"]
    assert "`amout` cannot be resolved" in by_part["sql"] and "`amount`" in by_part["sql"]
    assert "'event_count': expected int, found bigint" in by_part["result"]
    assert "CAST it in the SQL" in by_part["result"]


def test_every_unresolved_name_is_reported_not_only_the_first(checked, tmp_path):
    root = copy_of(tmp_path, "silver_orders")
    sql = root / "sql" / "silver_orders.sql"
    edit(sql, lambda s: s.replace("max(currency)", "max(curency)").replace("min(event_ts)  ", "mn(event_ts)  ", 1))
    edit(sql, lambda s: s.replace("SELECT DISTINCT event_id, order_id,", "SELECT DISTINCT event_id, ordr_id,"))
    found = checked(root, "silver_orders")
    said = [p.message for p in found.problems if p.part == "sql"]
    for name in ("`ordr_id`", "`curency`", "`mn`"):
        assert sum(name in message for message in said) == 1, (name, said)
    # The result was still analysed: the columns it gives with NULL in their place are not judged.
    assert found.columns and not [p for p in found.problems if p.part == "result"], found.problems


def test_a_column_the_contract_lacks_and_one_it_does_not_get(checked, tmp_path):
    root = copy_of(tmp_path, "silver_orders")
    edit(
        root / "sql" / "silver_orders.sql",
        lambda s: s.replace("max(currency)                                      AS currency", "1 AS currency_code"),
    )
    found = checked(root, "silver_orders")
    messages = sorted(p.message for p in found.problems)
    assert len(messages) == 2, messages
    assert messages[0].startswith("added column 'currency_code' (int): the contract blocks added columns")
    assert messages[1].startswith("missing column 'currency' (expected string)")


def test_a_source_schema_that_is_not_ddl(checked, tmp_path):
    root = copy_of(tmp_path, "silver_orders")
    edit(root / "dags" / "silver_orders.py", lambda s: s.replace("amount DECIMAL(12,2)", "amount DECIMAL(12,2"))
    found = checked(root, "silver_orders")
    assert [p.part for p in found.problems] == ["source"], found.problems
    assert "landed_orders: its schema is not Spark DDL" in found.problems[0].message


def test_a_published_source_is_analysed_with_its_producers_contract(checked, tmp_path):
    """gold reads silver.orders: its SQL is analysed against silver's contract, no table needed."""
    root = copy_of(tmp_path, "silver_orders", "gold_daily_sales")
    edit(root / "sql" / "gold_daily_sales.sql", lambda s: s.replace("amount", "amount_eur", 1))
    found = checked(root, "gold_daily_sales")
    assert [p.part for p in found.problems] == ["sql"], found.problems
    assert "`amount_eur` cannot be resolved" in found.problems[0].message


def test_a_syntax_error_is_named_with_its_place(checked, tmp_path):
    root = copy_of(tmp_path, "silver_orders")
    edit(root / "sql" / "silver_orders.sql", lambda s: s.replace("SELECT DISTINCT", "SELEC DISTINCT"))
    found = checked(root, "silver_orders")
    assert [p.part for p in found.problems] == ["sql"], found.problems
    assert "[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'" in found.problems[0].message
    assert "(line 9, pos 4)" in found.problems[0].message


def test_a_missing_sql_file(checked, tmp_path):
    root = copy_of(tmp_path, "silver_orders")
    (root / "sql" / "silver_orders.sql").unlink()
    found = checked(root, "silver_orders")
    assert [(p.part, p.message) for p in found.problems] == [
        ("sql", "include/sql/silver_orders.sql: no such file (WAP_SQL_DIR)")
    ]


def wap(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wap.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_lists_every_problem_and_fails(tmp_path):
    """As a user (or CI) runs it: a fresh process, exit 1 on problems, 0 on none, JSON for programs.
    At INFO, Airflow's logging writes Spark's log lines to stdout: none may reach the output."""
    broken = copy_of(tmp_path / "broken", "silver_orders")
    misspell_type_and_suite(broken)
    done = wap("check", "silver_orders", env={**settings_for(broken), "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"})
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout.startswith("silver_orders:\n  [suite]") and done.stdout.endswith("3 problems\n"), done.stdout
    fine = copy_of(tmp_path / "fine", "silver_orders")
    done = wap("check", "-o", "json", env={**settings_for(fine), "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"})
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert [(r["pipeline"], r["ok"], r["problems"]) for r in json.loads(done.stdout)] == [("silver_orders", True, [])]
