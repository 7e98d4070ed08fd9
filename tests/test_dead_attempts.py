"""A crash must not hide a partition from the planner (I4). Real task processes
(`crash_task.py` on a Spark Connect server, as in the crash harness), real SIGKILLs:

- a stage killed mid-way is dead at once to its own host: the planner says `failed` and the
  backfill re-runs it, and a new run (a new run id, as `wap.cli run` and manual triggers make)
  publishes the partition and leaves no attempt `running`;
- an attempt held on another host is alive while its lease is renewed and dead once it ends;
- two live attempts of one partition (legal: the first to publish wins) are neither dead.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import START, session_runtime
from crash_harness import TaskProcess, task_env

from wap import planner, steps, tables
from wap.ledger import Ledger, as_utc, dead_reason

KILLED, ELSEWHERE, TWICE = (START + dt.timedelta(days=n) for n in (1, 2, 3))
LEASE = 2  # WAP_LEASE_SECONDS of the task processes that must not be taken for dead


@pytest.fixture(scope="module")
def orders(landed, spark):
    from silver_orders import ORDERS

    return ORDERS


@pytest.fixture(scope="module")
def start_task(orders, tmp_path_factory):
    """Start a task process (`crash_task.py`) with extra environment; all are stopped at the end."""
    from wap.spark import ConnectServer

    folder = tmp_path_factory.mktemp("tasks")
    started: list[TaskProcess] = []
    with ConnectServer() as server:

        def start(**env: str) -> TaskProcess:
            started.append(TaskProcess(task_env(server.remote, **env), folder, len(started) + 1))
            return started[-1]

        yield start
        for process in started:
            process.stop()


def rows(day: dt.date) -> list[dict]:
    return Ledger().rows("silver_orders", day.isoformat())


def state_of(orders, day: dt.date) -> planner.PartitionState:
    (state,) = planner.plan(session_runtime(), orders, day, day)
    return state


def cli_plan(day: dt.date) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "wap.cli", "plan", "silver_orders", "--from", str(day), "--to", str(day)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def test_a_stage_killed_mid_way_needs_a_run_at_once_and_a_new_run_publishes_it(orders, start_task):
    task = start_task()
    args = {"partition": str(KILLED), "run_id": "manual__killed", "try_number": 1}
    code, marks = task.run({"task": "stage", "args": args, "phase": "transform", "delay": 0})
    assert code == -signal.SIGKILL and marks[-1]["event"] == "enter", marks  # killed while reading its input
    (killed,) = rows(KILLED)
    assert killed["status"] == "running" and killed["holder"].split(":")[1] == str(task.process.pid)

    # Right away, before any other run: the partition needs a run, and the backfill re-runs it.
    state = state_of(orders, KILLED)
    assert state.state == "failed", state
    assert (
        state.detail.startswith(f"attempt died: process gone: {killed['holder']}") and "manual__killed" in state.detail
    )
    out = cli_plan(KILLED)
    assert "failed" in out and "nothing to do" not in out, out
    assert (
        f"airflow backfill create --dag-id silver_orders --from-date {KILLED} --to-date {KILLED} "
        "--reprocess-behavior failed" in out
    ), out
    assert rows(KILLED)[0]["status"] == "running", "the planner only reads"

    # A new run (new run id) records the death, then publishes the partition.
    staged = steps.stage(session_runtime(), orders, KILLED, "manual__after-the-kill", 1)
    (dead,) = [r for r in rows(KILLED) if r["run_token"] == killed["run_token"]]
    assert dead["status"] == "failed" and dead["error"].startswith("attempt died: process gone: "), dead
    assert (
        steps.publish(session_runtime(), orders, steps.audit(session_runtime(), orders, staged))["status"]
        == "published"
    )
    assert [r["status"] for r in rows(KILLED)] == ["failed", "published"]
    assert state_of(orders, KILLED).state == "ok"


def test_an_attempt_held_on_another_host_is_alive_until_its_lease_ends(orders):
    """This host cannot see the other host's processes: only the lease says whether it lives."""
    token = "run-manual__elsewhere-try1"
    Ledger().start(
        pipeline=orders.name,
        table=orders.table,
        partition=str(ELSEWHERE),
        run_id="manual__elsewhere",
        try_number=1,
        run_token=token,
        code_version=orders.code_version(),
    )
    holder = "worker-7.elsewhere.invalid/4026531836:4242:123456"
    stop = threading.Event()

    def other_host() -> None:  # its step runs: it renews its lease every quarter of it
        while True:
            Ledger().update(
                orders.name, token, holder=holder, lease_until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LEASE)
            )
            if stop.wait(LEASE / 4):
                return

    renewing = threading.Thread(target=other_host)
    renewing.start()
    try:
        time.sleep(0.2)
        until = time.monotonic() + 2 * LEASE  # past the first lease: alive because it is renewed
        while time.monotonic() < until:
            assert state_of(orders, ELSEWHERE).state == "running"
            assert Ledger().reconcile(orders.name, str(ELSEWHERE), "manual__third", lambda t: None) == 0
            time.sleep(0.3)
    finally:
        stop.set()
        renewing.join()
    stopped = dt.datetime.now(dt.UTC)  # the other host died: nobody renews

    (row,) = rows(ELSEWHERE)
    lease = as_utc(row["lease_until"])
    assert stopped < lease <= stopped + dt.timedelta(seconds=LEASE)
    assert dead_reason(row) is None, "alive until its lease ends"
    time.sleep(max(0.0, (lease - dt.datetime.now(dt.UTC)).total_seconds()) + 0.1)
    state = state_of(orders, ELSEWHERE)
    expired = f"lease expired at {lease:%Y-%m-%d %H:%M:%S} UTC (held by {holder})"
    assert (state.state, state.detail) == ("failed", f"attempt died: {expired} (run manual__elsewhere)")
    assert Ledger().reconcile(orders.name, str(ELSEWHERE), "manual__third", lambda t: None) == 1
    (row,) = rows(ELSEWHERE)
    assert (row["status"], row["error"]) == ("failed", f"attempt died: {expired}")


def test_two_live_attempts_of_one_partition_are_neither_dead(orders, start_task):
    """Two runs stage one partition at once, each in its own process with a slow step and a
    short lease; meanwhile this process (a third) plans and reconciles, again and again. Then
    both are killed: both are dead at once."""
    tables.ensure_table(orders.table, orders.contract)  # not two processes creating it at once
    first, second = start_task(WAP_LEASE_SECONDS=str(LEASE)), start_task(WAP_LEASE_SECONDS=str(LEASE))
    pause = {"phase": "transform", "seconds": 300}  # longer than the test: it kills them in it
    for task, run_id in ((first, "manual__first"), (second, "manual__second")):
        args = {"partition": str(TWICE), "run_id": run_id, "try_number": 1}
        task.send({"task": "stage", "args": args, "calibrate": True, "pause": pause})
    entered = {}
    deadline = time.monotonic() + 180
    while len(entered) < 2:  # both hold their attempt, paused in their slow step
        assert time.monotonic() < deadline, "the task processes did not reach their slow step"
        for task in (first, second):
            assert task.process.poll() is None, f"a task process ended ({task.process.returncode})"
            for mark in task.marks():
                if (mark["event"], mark["phase"]) == ("enter", "transform"):
                    entered[task] = mark["t"]
        time.sleep(0.2)
    out = cli_plan(TWICE)
    assert "running" in out and "backfill create" not in out, out
    until = time.monotonic() + 3 * LEASE  # three leases, each renewed in time, or one is taken for dead

    table = tables.load_table(orders.table)
    checks = 0
    while time.monotonic() < until:
        held = rows(TWICE)
        assert [r["status"] for r in held] == ["running", "running"], held
        assert {r["holder"].split(":")[1] for r in held} == {str(first.process.pid), str(second.process.pid)}
        now = dt.datetime.now(dt.UTC)
        for row in held:  # their own short lease, renewed: never more than LEASE ahead, never past
            assert now < as_utc(row["lease_until"]) <= now + dt.timedelta(seconds=LEASE + 0.5), row
            assert dead_reason(row, run_id=row["run_id"]) is None, "a new try of its run would not take it either"
        assert state_of(orders, TWICE).state == "running"
        reconciled = Ledger().reconcile(
            orders.name, str(TWICE), "manual__third", lambda t: tables.find_publish(table, t)
        )
        assert reconciled == 0
        checks += 1
        time.sleep(0.3)
    print(f"{checks} plans and reconciles while two attempts held the partition: neither taken for dead")

    for task in (first, second):
        task.stop()  # SIGKILL, mid-step
        assert task.process.returncode == -signal.SIGKILL
    state = state_of(orders, TWICE)
    assert state.state == "failed" and state.detail.startswith("attempt died: process gone: "), state
    assert Ledger().reconcile(orders.name, str(TWICE), "manual__third", lambda t: None) == 2
    assert [r["status"] for r in rows(TWICE)] == ["failed", "failed"]
