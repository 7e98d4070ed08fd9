"""`new` (wap.template) in a copy of the repository: a daily pipeline on landed JSON files, an
hourly one on landed CSV files, a daily one on a PostgreSQL table, an hourly one merging a
PostgreSQL table into a table keyed by id, and an hourly one keeping landed Parquet events as
they land (`--shape events --format parquet`), and a daily events one whose days are New York's
(`--zone America/New_York`). Each writes exactly its four files, a second `new` of a taken name
writes nothing, the files pass ruff, and the generated tests and the repository's DAG checks
pass on them (one pytest run in the copy: Spark and Airflow start once).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wap import template
from wap.settings import REPO_ROOT

# name -> the command's options
CASES = {
    "web_sessions": ["--grain", "daily", "--source", "files"],
    "bronze_clicks": ["--grain", "hourly", "--source", "files:click_events", "--format", "csv"],
    "customer_changes": ["--grain", "daily", "--source", "postgres:public.customers", "--conn-id", "shop_db"],
    "dim_accounts": ["--grain", "hourly", "--source", "postgres:public.accounts", "--merge"],
    "page_views": ["--grain", "hourly", "--shape", "events", "--format", "parquet"],
    "flights": ["--zone", "America/New_York", "--shape", "events"],
}
FOUR = {
    "web_sessions": [
        "dags/web_sessions.py",
        "include/sql/web_sessions.sql",
        "expectations/silver.web_sessions.json",
        "tests/test_web_sessions.py",
    ],
    "bronze_clicks": [
        "dags/bronze_clicks.py",
        "include/sql/bronze_clicks.sql",
        "expectations/bronze.clicks.json",
        "tests/test_bronze_clicks.py",
    ],
    "customer_changes": [
        "dags/customer_changes.py",
        "include/sql/customer_changes.sql",
        "expectations/silver.customer_changes.json",
        "tests/test_customer_changes.py",
    ],
    "dim_accounts": [
        "dags/dim_accounts.py",
        "include/sql/dim_accounts.sql",
        "expectations/silver.dim_accounts.json",
        "tests/test_dim_accounts.py",
    ],
    "page_views": [
        "dags/page_views.py",
        "include/sql/page_views.sql",
        "expectations/silver.page_views.json",
        "tests/test_page_views.py",
    ],
    "flights": [
        "dags/flights.py",
        "include/sql/flights.sql",
        "expectations/silver.flights.json",
        "tests/test_flights.py",
    ],
}
GIT = ["git", "-c", "user.name=wap-tests", "-c", "user.email=wap-tests@localhost", "-c", "commit.gpgsign=false"]


def _git(root: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _env(root: Path) -> dict[str, str]:
    # The copy on its own: none of this session's data folder, DAG folder or Airflow home.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAP_", "AIRFLOW", "PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(root / "plugins")
    return env


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree's files that git would see (tracked, and new ones not ignored) in a
    fresh git repository, with this virtualenv linked in as its `.venv`."""
    root = tmp_path_factory.mktemp("repo")
    listed = _git(REPO_ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for relative in filter(None, listed):
        source = REPO_ROOT / relative
        if source.is_file():  # a tracked file deleted in the working tree is not there
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / relative)
    (root / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)  # settings find the JDBC jar there
    _git(root, "init", "-q")
    (root / ".git" / "info" / "exclude").write_text(".venv\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "copy")
    return root


def python(root: Path) -> str:
    return str(root / ".venv" / "bin" / Path(sys.executable).name)


def new(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python(root), "-m", "wap.cli", "new", *args], cwd=root, env=_env(root), capture_output=True, text=True
    )


def untracked(root: Path) -> list[str]:
    lines = _git(root, "status", "--porcelain", "--untracked-files=all").splitlines()
    return sorted(line[3:] for line in lines)


@pytest.fixture(scope="module")
def generated(repo: Path) -> dict[str, tuple[subprocess.CompletedProcess[str], list[str]]]:
    """Each case's `new`, and the repository's changes after it."""
    done = {}
    for name, options in CASES.items():
        result = new(repo, name, *options)
        assert result.returncode == 0, result.stderr
        done[name] = (result, untracked(repo))
    return done


def test_each_new_writes_exactly_its_four_files(generated):
    so_far: list[str] = []
    for name, (result, changes) in generated.items():
        so_far += FOUR[name]
        assert changes == sorted(so_far), name  # nothing modified, nothing else added
        for path in FOUR[name]:
            assert path in result.stdout
        assert f"pytest tests/test_{name}.py" in result.stdout


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["web_sessions"], "dags/web_sessions.py exists"),
        (["web_sessions", "--grain", "hourly", "--source", "postgres"], "a pipeline named 'web_sessions'"),
        (["sessions_v2", "--table", "silver.web_sessions"], "table silver.web_sessions is declared"),
        (["orders_again", "--table", "silver.orders"], "table silver.orders is declared"),
        (["silver_orders"], "a DAG with id 'silver_orders' is declared"),
        (["Web_Sessions"], "must be lower snake case"),
        (["web-sessions"], "must be lower snake case"),
        (["class"], "not a Python keyword"),
        (["json"], "standard library"),
        (["conftest"], "would shadow"),
        (["clicks", "--source", "ftp"], "use files[:<dataset>] or postgres[:<schema.table>]"),
        (["clicks", "--table", "clicks"], "namespace.table"),
        (["clicks", "--merge"], "--shape merged: a files source's shapes are latest, events"),
        (["clicks", "--source", "postgres", "--shape", "events"], "--shape events needs --source files"),
        (["clicks", "--source", "postgres", "--merge", "--shape", "changes"], "--merge is --shape merged"),
        (["clicks", "--source", "postgres", "--format", "csv"], "a database has none"),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value),
)
def test_a_taken_or_bad_name_is_refused_and_nothing_is_written(repo, generated, args, reason):
    before = untracked(repo)
    result = new(repo, *args)
    assert result.returncode == 1, result.stdout
    assert reason in result.stderr
    assert untracked(repo) == before


def test_the_generated_files_pass_ruff(repo, generated):
    files = [path for paths in FOUR.values() for path in paths if path.endswith(".py")]
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [python(repo), "-m", "ruff", *command, *files], cwd=repo, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_generated_tests_pass(repo, generated):
    """The generated tests (`wap check` among them), and the repository's DAG checks (I6: light to
    parse) on the generated DAGs."""
    tests = [f"tests/test_{name}.py" for name in CASES]
    checks = ("test_dag_imports_and_declares_owner_retries_tags", "test_dag_file_is_light_to_parse")
    tests += [f"tests/test_dag_integrity.py::{check}[{name}.py]" for name in CASES for check in checks]
    done = subprocess.run(
        [python(repo), "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q", *tests],
        cwd=repo,
        env=_env(repo),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    summary = re.search(r"^=*\s*(\d+ passed.*?) in [\d.]+s", output, re.MULTILINE)  # nothing skipped or deselected
    per_file = 4  # each generated test file: the run, the ledger, the re-run, `wap check`
    assert summary and summary.group(1) == f"{len(tests) - len(CASES) + per_file * len(CASES)} passed", output[-3000:]


# ------------------------------------------------------------------- the generator on its own
def test_names_and_defaults():
    request = template.spec("web_sessions")
    assert (request.table, request.dataset, request.grain, request.sql, request.suite) == (
        "silver.web_sessions",
        "web_sessions",
        "daily",
        "web_sessions.sql",
        "silver.web_sessions.json",
    )
    assert template.spec("gold_daily_visits").table == "gold.daily_visits"  # a layer prefix is the namespace
    db = template.spec("crm_accounts", source="postgres", grain="hourly")
    assert (db.table, db.dataset, db.view) == ("silver.crm_accounts", "public.crm_accounts", "db_crm_accounts")
    assert db.partition_column == "updated_hour"
    assert template.spec("a", source="postgres:crm.people").view == "db_people"


def test_the_repository_declarations_are_found():
    found = template.declared(REPO_ROOT)
    assert {"silver_orders", "gold_daily_sales", "table_maintenance"} <= found.dag_ids
    assert {"silver_orders", "gold_daily_sales"} <= found.pipelines
    assert {"silver.orders", "gold.daily_sales"} <= found.tables


def test_the_longest_names_still_give_files_ruff_accepts(tmp_path):
    """Names are capped so the generated code fits 120 columns as written, with no reformatting."""
    longest = "n" * template.MAX_LENGTH
    requests = [
        template.spec(longest, grain=grain, source=source, table=f"{longest}.{longest}", conn_id=longest)
        for grain in template.GRAINS
        for source in ("files:" + longest, f"postgres:{longest}.{longest}")
    ]
    with pytest.raises(template.TemplateError, match="at most"):
        template.spec(longest + "n")
    for n, request in enumerate(requests):
        for relative, text in template.render(request).items():
            if relative.endswith(".py"):
                (tmp_path / f"{n}_{Path(relative).name}").write_text(text, encoding="utf-8")
    config = ["--config", str(REPO_ROOT / "pyproject.toml")]
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *config, str(tmp_path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_template_is_used_and_renders(tmp_path, monkeypatch):
    """Each file in templates/ is read for some request, and every grain, source, shape and format renders
    complete files (no Jinja left in them, the suite valid JSON) in the order they are written."""
    import jinja2

    read: set[str] = set()

    class Recording(jinja2.FileSystemLoader):
        def get_source(self, environment, name):
            read.add(name)
            return super().get_source(environment, name)

    environment = template.environment(Recording(template.TEMPLATES))
    monkeypatch.setattr(template, "environment", lambda: environment)
    for grain in template.GRAINS:
        shapes = [(source, shape) for source, shapes in template.SHAPES.items() for shape in shapes]
        formats = [("files", "events", file_format) for file_format in template.FORMATS]
        for source, shape, *file_format in [*shapes, *formats]:
            request = template.spec(
                "a_pipeline", grain=grain, source=source, shape=shape, format=next(iter(file_format), None)
            )
            texts = template.render(request)
            assert list(texts) == [str(path) for path in request.paths(Path())]
            for text in [*texts.values(), template.next_steps(request, request.paths(tmp_path), tmp_path)]:
                assert text.strip() and not re.search(r"\{[{%#]|[%#]\}", text), text
            assert json.loads(texts[f"expectations/{request.suite}"]) == template.suite(request)
    on_disk = {
        path.relative_to(template.TEMPLATES).as_posix() for path in template.TEMPLATES.rglob("*") if path.is_file()
    }
    assert on_disk == read
