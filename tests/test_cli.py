"""The `wap` command itself: the installed console script, `--output json` on every listing
command (the same rows as the text's), and the exit codes of `wap.cli`'s one error translation.

The listings run in-process (`cli.main`, as the console script calls it) against runs the
real silver DAG published and quarantined; the exit codes run the console script in a
subprocess, as a user or a scheduler does. A transient error and a setup problem cannot be
made cheaply for a command (a commit conflict needs racing writers; a missing Java fails the
DAG's task, which `run` reports as a failed run), so those two are raised by a patched
callable under the real command.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import START, publish_then_quarantine

from wap import cli
from wap.errors import (
    DataError,
    JavaMissingError,
    PublishConflictError,
    QuarantineError,
    SetupError,
    SourceMissingError,
    TransientError,
    WapError,
)
from wap.settings import REPO_ROOT

DAYS = [START + dt.timedelta(days=n) for n in range(3)]  # published, published, quarantined
WAP = Path(sys.executable).with_name("wap")  # the console script `make install` puts in .venv/bin
RETRY_HINT = "trying the same command again may succeed"


def wap(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed `wap` command, in a subprocess."""
    return subprocess.run([str(WAP), *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`wap <args>` in this process; what it printed (it returns normally on success)."""
    cli.main(list(args))
    return capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *args: str):
    return json.loads(run(capsys, *args, "--output", "json"))


def fails(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`wap <args>` in this process, expected to fail: its exit code and stderr."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(args))
    return exited.value.code, capsys.readouterr().err


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of one of `render`'s tables (its first lines: header, rule, rows; then anything)."""
    header, rule, *body = text.splitlines()
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]
    names = [header[a:b].strip() for a, b in spans]
    rows = []
    for line in body:
        if not line.strip() or line in ("(no rows)",) or line.startswith("(errors cut"):
            break
        cells = [line[a : (b if n < len(spans) - 1 else None)].strip() for n, (a, b) in enumerate(spans)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def text_of(value) -> str:
    return "" if value is None else str(value)


@pytest.fixture(scope="module")
def history(dags, landed, spark):
    """Days 1-2 published, day 3 quarantined (a negative amount)."""
    publish_then_quarantine(dags["silver_orders"], landed, DAYS[:2], DAYS[2])
    return landed


# --- the console script ----------------------------------------------------------------------


def test_make_install_puts_the_wap_command_in_the_venv_and_python_m_is_the_same_command():
    assert WAP.is_file(), f"{WAP} missing: run `make install`"
    done = wap("--help")
    assert done.returncode == 0, done.stderr
    for command in ("ledger", "partitions", "tables", "quarantine", "plan", "versions", "rollback", "maintain"):
        assert re.search(rf"^\s+{command}\s", done.stdout, re.MULTILINE), done.stdout
    assert "new" in done.stdout and "run" in done.stdout
    module = subprocess.run([sys.executable, "-m", "wap.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert module.returncode == 0 and module.stdout == done.stdout


def test_wap_airflow_env_prints_the_local_airflow_s_environment_as_shell_exports(tmp_path):
    """What a second shell evals to reach the Airflow `wap airflow` runs: the same home, DAGs,
    port and execution API, as exports a shell reads back exactly (quoted JSON included)."""
    done = subprocess.run(
        [sys.executable, "-m", "wap.cli", "airflow", "--env", "--port", "8123"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WAP_DATA_DIR": str(tmp_path / "my data")},
    )
    assert done.returncode == 0, done.stderr
    shell = subprocess.run(
        ["bash", "-c", f"{done.stdout}\nenv -0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    seen = dict(item.split("=", 1) for item in shell.stdout.split("\0") if "=" in item)
    assert seen["AIRFLOW_HOME"] == str(tmp_path / "my data" / "airflow")
    assert seen["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / "dags")
    assert seen["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:8123/execution/"
    assert json.loads(seen["AIRFLOW__OPENLINEAGE__TRANSPORT"])["type"] == "file"
    assert not (tmp_path / "my data").exists(), "--env starts nothing and writes nothing"


def test_wap_airflow_refuses_a_port_in_use_before_starting_anything(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "wap.cli", "airflow", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "WAP_DATA_DIR": str(tmp_path / "data")},
        )
    assert done.returncode == 1, done.stderr
    assert f"error: port {port} is in use" in done.stderr and "--port" in done.stderr
    assert not (tmp_path / "data").exists(), "nothing started, nothing written"


@pytest.mark.parametrize(
    "command",
    [
        ["ledger"],
        ["partitions"],
        ["tables"],
        ["quarantine", "list"],
        ["quarantine", "show"],
        ["plan"],
        ["versions"],
        ["maintain"],
    ],
)
def test_every_listing_command_takes_output_json(command, capsys):
    out = run_help(capsys, *command)
    assert "-o, --output [text|json]" in out, out


def run_help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    cli.main([*command, "--help"])  # --help returns like any success
    return capsys.readouterr().out


# --- --output json: the text's rows, as objects --------------------------------------------------


def test_ledger_json_is_the_text_s_rows_whole(history, capsys):
    text = parse_table(run(capsys, "ledger", "--pipeline", "silver_orders"))
    rows = run_json(capsys, "ledger", "--pipeline", "silver_orders")
    assert len(rows) == len(text) >= 3
    for shown, row in zip(text, rows, strict=True):
        for column in cli.LEDGER_COLUMNS:
            if column == "finished_at" and row[column] is not None:
                finished = dt.datetime.fromisoformat(row[column]).strftime("%Y-%m-%d %H:%M:%S")
                assert shown[column] == finished
            elif column == "error":  # the text cuts it to a line; the JSON has it whole
                assert (row["error"] or "").startswith(shown["error"])
            else:
                assert shown[column] == text_of(row[column]), column
    assert {row["status"] for row in rows} >= {"published", "quarantined"}
    (quarantined,) = [row for row in rows if row["status"] == "quarantined"]
    assert "\n" in quarantined["error"] or len(quarantined["error"]) > 60  # whole, not cut
    assert isinstance(quarantined["details"], dict) and "audit" in quarantined["details"]  # parsed
    assert quarantined["run_token"] and quarantined["partition"] == str(DAYS[2])
    # --details is the text's business: the JSON is always in full
    assert run_json(capsys, "ledger", "--pipeline", "silver_orders", "--details") == rows


def test_partitions_json_is_the_text_s_rows(history, capsys):
    text = run(capsys, "partitions")
    blocks = [block for block in text.split("\n\n") if block.strip()]
    shown = {}
    for block in blocks:
        title, table = block.split("\n", 1)
        shown[title.split()[0]] = parse_table(table)
    rows = run_json(capsys, "partitions")
    assert {row["table"] for row in rows} == {name for name, listed in shown.items() if listed} >= {"silver.orders"}
    for name, table_rows in shown.items():
        listed = [row for row in rows if row["table"] == name]
        assert [{c: text_of(row[c]) for c in cli.PARTITION_COLUMNS} for row in listed] == table_rows
    assert [row["partition"] for row in rows if row["table"] == "silver.orders"] == [str(d) for d in DAYS[:2]]
    assert all(isinstance(row["rows"], int) and isinstance(row["snapshot_id"], int) for row in rows)
    one = run_json(capsys, "partitions", "silver.orders", "-o", "json")
    assert one == [row for row in rows if row["table"] == "silver.orders"]


def test_tables_json_is_the_text_s_tables(history, capsys):
    text = run(capsys, "tables").splitlines()
    assert text[0].startswith("catalog ") and text[1].startswith("warehouse: ")
    shown = [line.split() for line in text[2:]]
    rows = run_json(capsys, "tables")
    assert [[row["table"], row["location"]] for row in rows] == shown
    assert "silver.orders" in [row["table"] for row in rows]


def test_quarantine_list_and_show_json(history, capsys):
    text = parse_table(run(capsys, "quarantine", "list"))
    rows = run_json(capsys, "quarantine", "list")
    assert len(rows) == len(text) == 1
    (shown,), (row,) = text, rows
    for column in ("pipeline", "partition", "run_id", "try_number"):
        assert shown[column] == text_of(row[column])
    assert dt.datetime.fromisoformat(shown["finished_at"]) == dt.datetime.fromisoformat(row["finished_at"])
    assert row["error"].removeprefix("quality gate failed: ").startswith(shown["error"])
    assert "expect_column_values_to_be_between(amount)" in shown["error"]

    described = run(capsys, "quarantine", "show", "silver_orders", str(DAYS[2]))
    found = run_json(capsys, "quarantine", "show", "silver_orders", str(DAYS[2]))
    assert found["run_token"] == row["run_token"] and found["status"] == "quarantined"
    failed = [f for f in found["findings"] if f["check"] == "expect_column_values_to_be_between"]
    assert failed and failed[0]["column"] == "amount" and failed[0]["severity"] == "blocking"
    data_files = [line.split()[-1] for line in described.splitlines() if line.strip().startswith("data ")]
    assert found["files"]["data"] == data_files and data_files


def test_plan_json_is_the_text_s_states_and_backfill(history, capsys):
    args = ("plan", "silver_orders", "--from", str(DAYS[0]), "--to", str(DAYS[2] + dt.timedelta(days=1)))
    text = run(capsys, *args)
    table, todo = text.split("\n\n", 1)
    planned = run_json(capsys, *args)
    assert [{c: text_of(s[c]) for c in cli.PLAN_COLUMNS} for s in planned["partitions"]] == parse_table(table)
    assert [s["state"] for s in planned["partitions"]] == ["ok", "ok", "quarantined", "missing"]
    lines = todo.strip().splitlines()
    assert planned["ranges"] == lines[: len(planned["ranges"])] and planned["ranges"]
    assert [f"  {command}" for command in planned["backfill"]] == lines[-len(planned["backfill"]) :]
    assert planned["rest"] in todo and "/api/v2/dags/silver_orders/dagRuns" in planned["rest"]
    assert f"--from-date {DAYS[2]}" in planned["backfill"][0]
    assert planned["ranges"] == [
        f"""airflow dags trigger silver_orders --conf '{{"partition": "{DAYS[2]}/{DAYS[2] + dt.timedelta(days=1)}"}}'"""
    ]
    assert planned["running"] == []


def test_versions_json_is_the_text_s_versions(history, capsys):
    text = parse_table(run(capsys, "versions", "silver_orders", str(DAYS[0])))
    rows = run_json(capsys, "versions", "silver_orders", str(DAYS[0]))
    assert len(rows) == len(text) == 1
    for shown, row in zip(text, rows, strict=True):
        for column in cli.VERSION_COLUMNS:
            if column == "committed_at":
                assert dt.datetime.fromisoformat(shown[column]) == dt.datetime.fromisoformat(row[column])
            else:
                assert shown[column] == text_of(row[column]), column


def test_maintain_json_is_the_text_s_counts_and_what_would_go(history, capsys):
    text = run(capsys, "maintain", "--dry-run")
    rows = run_json(capsys, "maintain", "--dry-run")
    table = parse_table("\n".join(text.splitlines()[: 2 + len(rows)]))  # then the lines of what would go
    assert [{c: text_of(row[c]) for c in cli.UPKEEP_COLUMNS} for row in rows] == table
    assert all(row["dry_run"] is True for row in rows)
    for row in rows:
        assert row["snapshots_expired"] == len(row["expired_snapshots"])
        assert row["files_removed"] == len(row["removed_files"])
        assert row["runs_removed"] == len(row["removed_runs"])
        assert row["quarantined_runs_held"] == len(row["held_runs"])
        for snapshot in row["expired_snapshots"]:
            assert f"{row['table']}: would expire snapshot {snapshot}" in text
        for path in row["removed_runs"]:
            assert f"{row['table']}: would remove {path}" in text
    (orders,) = [row for row in rows if row["table"] == "silver.orders"]
    assert orders["quarantined_runs_held"] == 1  # the quarantined day's run, awaiting a decision


# --- exit codes: one translation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (QuarantineError("x"), cli.EXIT_FAILED),
        (DataError("x"), 1),
        (ValueError("x"), 1),
        (LookupError("x"), 1),
        (WapError("x"), 1),
        (SetupError("x"), 3),
        (JavaMissingError("x"), 3),
        (TransientError("x"), 75),
        (SourceMissingError("x"), 75),
        (PublishConflictError("x"), cli.EXIT_TEMPFAIL),
    ],
)
def test_each_kind_of_error_has_its_exit_code(error, code):
    assert cli.exit_code(error) == code


def test_a_data_error_exits_1_with_one_error_line(history):
    done = wap("quarantine", "show", "silver_orders", str(DAYS[0]))  # day 1 published: nothing quarantined
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr == f"error: no quarantined run of silver_orders for partition {DAYS[0]}\n"
    assert done.stdout == ""
    refused = wap("quarantine", "release", "silver_orders", str(DAYS[2]), "--reason", "  ")
    assert refused.returncode == 1 and refused.stderr.startswith("error: ") and RETRY_HINT not in refused.stderr
    unknown = wap("plan", "no_such_pipeline", "--from", "2024-01-01", "--to", "2024-01-02")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: ") and "silver_orders" in unknown.stderr
    bad_key = wap("versions", "silver_orders", "2024-02-30")
    assert bad_key.returncode == 1 and "not a real calendar date" in bad_key.stderr
    assert "Traceback" not in done.stderr + refused.stderr + unknown.stderr + bad_key.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("plan", "silver_orders", "--from", "2024-01-01"), "Missing option '--to'"),
        (("rollback", "silver_orders", "--to-snapshot", "abc", "--reason", "x"), "'abc' is not a valid integer"),
        (("quarantine", "release", "silver_orders", "2024-01-01"), "Missing option '--reason'"),
        (("ledger", "--output", "yaml"), "'yaml' is not one of 'text', 'json'"),
        (("no_such_command",), "No such command 'no_such_command'"),
        (("new",), "Missing argument 'NAME'"),
    ],
)
def test_a_usage_error_exits_2(args, said):
    done = wap(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert said in done.stderr and "Usage: wap" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("error", [SourceMissingError, PublishConflictError])
def test_a_transient_error_exits_75_and_says_a_retry_may_succeed(error, monkeypatch, capsys):
    """Patched: the real `quarantine list` command, its listing raising a transient error."""

    def transient(*args, **kwargs):
        raise error("silver.orders has not published 2024-01-01 yet")

    monkeypatch.setattr(cli.quarantine, "quarantined", transient)
    code, err = fails(capsys, "quarantine", "list", "-o", "json")
    assert code == 75
    first, hint = err.splitlines()
    assert first == "error: silver.orders has not published 2024-01-01 yet"
    assert RETRY_HINT in hint


def test_a_setup_problem_exits_3(monkeypatch, capsys):
    """Patched: the real `run` command (its range checked for real), Airflow's preparation
    finding no Java."""
    from wap import embedded

    def no_java(*args, **kwargs):
        raise JavaMissingError("Java 17 is needed by PySpark and `java` is not on PATH")

    monkeypatch.setattr(embedded, "prepare_airflow", no_java)
    code, err = fails(capsys, "run", "silver_orders", "--from", "2024-01-01")
    assert code == 3
    assert err == "error: Java 17 is needed by PySpark and `java` is not on PATH\n"


def test_a_bug_is_not_dressed_as_an_error_line(monkeypatch):
    """A bare KeyError is a bug, not a message for the user: its traceback shows."""

    def buggy(*args, **kwargs):
        return [{}][0]["error"]

    monkeypatch.setattr(cli.quarantine, "quarantined", buggy)
    with pytest.raises(KeyError):
        cli.main(["quarantine", "list"])
