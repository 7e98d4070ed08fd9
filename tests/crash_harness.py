"""Crash safety (I1, I2, I4): kill a task process with SIGKILL at random moments of a run of
silver_orders, retry as Airflow would, and check the table and the ledger after each kill.

Each trial puts the live partition back to an old version, then runs a new run of it whose
landed data has more orders. One of its tasks runs in a task process (`crash_task.py`, a
client of a shared Spark Connect server, like a worker's task) that dies by SIGKILL at a
random moment of one phase: transform, staging, audit, the publish commit or the ledger
write. Then:
- I1: the live partition is the old or the new version, complete — never a mix or a gap;
- the killed task is retried with the next try number and the same upstream result (what
  Airflow does), and the run's remaining tasks run to completion;
- I2: the live partition is exactly the rows of a clean run, with its checksum;
- I4: no attempt of the run is left `running`, and the ledger's published attempt is the
  one the table's live version names.

    python tests/crash_harness.py --trials 300        # a soak; figures in data/crash_soak.json
    python tests/crash_harness.py --trials 300 --range-days 2   # the same for range runs

With `range_days` > 1 the run is a range run of that many days (`wap.ranges`) and each
check holds for every day of it; I1 also asks that the days switch together (one commit).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import session_runtime

HERE = Path(__file__).resolve().parent
PHASES = ("transform", "staging", "audit", "commit", "ledger")
TASK_OF = {"transform": "stage", "staging": "stage", "audit": "audit", "commit": "publish", "ledger": "publish"}
DAY = dt.date(2024, 1, 2)
EXTRA_ORDERS = 5


def task_env(remote: str, **extra: str) -> dict[str, str]:
    """The environment of a task process: this one's, on the Spark Connect server `remote`."""
    return {
        **os.environ,
        "WAP_SPARK_REMOTE": remote,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent / "plugins"), str(HERE.parent / "dags"), str(HERE)]),
        **extra,
    }


class TaskProcess:
    """A started `crash_task.py`, ready (imports done) before it is given its task."""

    def __init__(self, env: dict[str, str], folder: Path, n: int) -> None:
        self.progress = folder / f"progress-{n}.jsonl"
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "crash_task.py"), str(self.progress)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def run(self, command: dict[str, Any], timeout: float = 300) -> tuple[int, list[dict]]:
        """Give it its task; wait for it to end; return its exit code and its phase marks."""
        self.send(command)
        return self.wait(timeout)

    def send(self, command: dict[str, Any]) -> None:
        """Give it its task once it is ready, and return at once (`wait` for the end)."""
        assert self.process.stdout is not None and self.process.stdin is not None
        ready = self.process.stdout.readline()
        if not ready.startswith("READY"):
            raise RuntimeError(f"the task process did not start: {ready!r}")
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def marks(self) -> list[dict]:
        """The phases it entered and left so far."""
        return [json.loads(line) for line in self.progress.read_text().splitlines()] if self.progress.exists() else []

    def wait(self, timeout: float = 300) -> tuple[int, list[dict]]:
        """Wait for it to end; return its exit code and its phase marks."""
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        marks = self.marks()
        self.done = next((json.loads(line[5:]) for line in out.splitlines() if line.startswith("DONE ")), None)
        return self.process.returncode, marks

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a write end to a killed process: nothing to flush
                    pipe.close()


def _rows(identifier: str, day: dt.date = DAY) -> list[tuple]:
    """The live partition's rows, sorted: compared whole, so a mix or a gap cannot pass."""
    from pyiceberg.expressions import EqualTo

    from wap import tables

    rows = tables.load_table(identifier).scan(row_filter=EqualTo("order_date", day.isoformat())).to_arrow()
    return sorted(tuple(str(v) for v in row.values()) for row in rows.to_pylist())


def _late_orders(folder: Path, day: dt.date = DAY, tag: str = "") -> None:
    events = [
        {
            "event_id": f"E-CRASH{tag}-{day}-{n}",
            "order_id": f"O-CRASH{tag}-{day}-{n}",
            "customer_id": "C-9",
            "event_ts": f"{day.isoformat()}T20:00:0{n}Z",
            "status": "placed",
            "amount": 7 + n,
            "currency": "EUR",
            "channel": "app",
        }
        for n in range(EXTRA_ORDERS)
    ]
    (folder / f"more{tag}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


class Harness:
    """Needs, in this process: WAP_DATA_DIR with landed orders, a Spark session (for the
    retries), and `remote`, a Spark Connect server for the task processes."""

    def __init__(self, remote: str, landing: Path, seed: int = 0, range_days: int = 1) -> None:
        from silver_orders import ORDERS

        from wap.partition import PartitionRange

        self.pipeline = ORDERS
        self.days = [DAY + dt.timedelta(days=n) for n in range(range_days)]
        # What the tasks are given: a day, or a range of days (a range run).
        self.key = str(DAY) if range_days == 1 else PartitionRange(self.days[0], self.days[-1]).key
        self.prefix = "crash" if range_days == 1 else "crash-range"  # run ids of this harness's runs
        self.random = random.Random(seed)
        self.folder = Path(tempfile.mkdtemp(prefix="wap-crash-"))
        self.env = task_env(remote)
        self.landing = landing
        self.spawned = 0
        self.next: TaskProcess | None = None
        self.kills: Counter[str] = Counter()
        self.trials = 0

    def task_process(self) -> TaskProcess:
        """The ready task process, and the next one starting (imports take seconds)."""
        current = self.next or self._spawn()
        self.next = self._spawn()
        return current

    def _spawn(self) -> TaskProcess:
        self.spawned += 1
        return TaskProcess(self.env, self.folder, self.spawned)

    def close(self) -> None:
        if self.next is not None:
            self.next.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ setup
    def prepare(self) -> dict[str, Any]:
        """Publish the old version of the days, then measure a clean run of the new one."""
        from wap import tables

        self._run_all(f"{self.prefix}-old", 1)
        table = tables.load_table(self.pipeline.table)
        self.old = {
            day: {"snapshot": tables.live_version(table, day).snapshot_id, "rows": _rows(self.pipeline.table, day)}
            for day in self.days
        }
        for day in self.days:
            _late_orders(
                self.landing / "orders" / f"dt={day.isoformat()}", day, "" if len(self.days) == 1 else "-range"
            )
        self._run_all(f"{self.prefix}-clean", 1)
        table = tables.load_table(self.pipeline.table)
        self.new = {
            day: {"checksum": tables.live_version(table, day).checksum, "rows": _rows(self.pipeline.table, day)}
            for day in self.days
        }
        assert all(len(self.new[d]["rows"]) == len(self.old[d]["rows"]) + EXTRA_ORDERS for d in self.days)
        # Calibrate: each task in a task process, to draw kill moments within each phase. The
        # stage runs twice: the first warms the Spark Connect server up.
        self._reset()
        durations: dict[str, float] = {}
        staged = None
        for task, try_number in (("stage", 1), ("stage", 2), ("audit", 1), ("publish", 1)):
            args = {"partition": self.key, "run_id": f"{self.prefix}-calibrate", "try_number": try_number}
            process = self.task_process()
            code, marks = process.run({"task": task, "args": {**args, "staged": staged}, "calibrate": True})
            assert code == 0, f"calibration {task} failed ({code})"
            durations.update(_phase_seconds(marks))
            staged = process.done
        self.durations = durations
        return durations

    # ------------------------------------------------------------------ one trial
    def trial(self, n: int) -> dict[str, Any]:
        from wap import tables
        from wap.ledger import Ledger

        phase = PHASES[n % len(PHASES)]
        task = TASK_OF[phase]
        run_id = f"{self.prefix}-{n}"
        self._reset()
        staged = None
        if task in ("audit", "publish"):  # the upstream tasks succeeded in their own processes
            staged = self._stage(run_id, 1)
            if task == "publish":
                staged = self._audit(staged)
        delay = self.random.uniform(0, max(self.durations.get(phase, 0.01), 0.001))
        args = {"partition": self.key, "run_id": run_id, "try_number": 1, "staged": staged and staged.to_dict()}
        code, marks = self.task_process().run({"task": task, "args": args, "phase": phase, "delay": delay})
        assert code == -signal.SIGKILL, f"trial {n}: the task process was not killed (exit {code})"
        died_in = _where(marks)
        self.kills[died_in] += 1

        # I1, before any retry: each day old or new, whole; the days of a range all one or the other.
        seen = {day: _rows(self.pipeline.table, day) for day in self.days}
        versions = {
            "old" if seen[d] == self.old[d]["rows"] else "new" if seen[d] == self.new[d]["rows"] else "mixed"
            for d in self.days
        }
        assert "mixed" not in versions, f"trial {n} ({died_in}): a mixed or empty partition"
        assert len(versions) == 1, f"trial {n} ({died_in}): the range's days did not switch together"

        # Airflow's retry: the killed task again (next try, same upstream result), then the rest.
        if task == "stage":
            staged = self._stage(run_id, 2)
        if task in ("stage", "audit"):
            staged = self._audit(staged)
        result = self._publish(staged)

        table = tables.load_table(self.pipeline.table)
        for day in self.days:
            live = tables.live_version(table, day)
            assert _rows(self.pipeline.table, day) == self.new[day]["rows"], f"trial {n} ({died_in}): not a clean run"
            assert live.checksum == self.new[day]["checksum"]  # I2
            rows = [r for r in Ledger().rows(self.pipeline.name, day.isoformat()) if r["run_id"] == run_id]
            assert all(r["status"] != "running" for r in rows), f"trial {n} ({died_in}): {rows}"  # I4
            (published,) = [r for r in rows if r["status"] == "published"]
            assert (published["run_token"], published["snapshot_id"]) == (live.run_token, live.snapshot_id)
        assert result["snapshot_id"] == tables.live_version(table, self.days[0]).snapshot_id
        self.trials += 1
        return {"trial": n, "phase": phase, "died_in": died_in, "delay": round(delay, 4)}

    def _ranged(self) -> bool:
        return len(self.days) > 1

    def _stage(self, run_id: str, try_number: int) -> Any:
        from wap import ranges, steps

        span = self.pipeline.grain.parse_span(self.key)
        step = ranges.stage if self._ranged() else steps.stage
        return step(session_runtime(), self.pipeline, span, run_id, try_number)  # type: ignore[arg-type]

    def _audit(self, staged: Any) -> Any:
        from wap import ranges, staging, steps

        if isinstance(staged, dict):
            staged = (staging.StagedRange if self._ranged() else staging.StagedRun).from_dict(staged)
        return (ranges.audit if self._ranged() else steps.audit)(session_runtime(), self.pipeline, staged)

    def _publish(self, staged: Any) -> dict[str, Any]:
        from wap import ranges, steps

        return (ranges.publish if self._ranged() else steps.publish)(session_runtime(), self.pipeline, staged)

    def _reset(self) -> None:
        """Make the old version live again (a metadata-only rollback of each day)."""
        from wap import rollback, tables

        for day in self.days:
            live = tables.live_version(tables.load_table(self.pipeline.table), day)
            if (
                live.snapshot_id != self.old[day]["snapshot"]
                and _rows(self.pipeline.table, day) != self.old[day]["rows"]
            ):
                rollback.rollback_partition(
                    session_runtime(), self.pipeline, day, self.old[day]["snapshot"], reason="crash harness: next trial"
                )

    def _run_all(self, run_id: str, try_number: int) -> Any:
        staged = self._audit(self._stage(run_id, try_number))
        self._publish(staged)
        return staged


def _phase_seconds(marks: list[dict]) -> dict[str, float]:
    """How long each phase lasted; the transform runs until the staging write starts (Spark
    is lazy: the SQL runs inside the write, which is the staging phase)."""
    entered = {m["phase"]: m["t"] for m in marks if m["event"] == "enter"}
    left = {m["phase"]: m["t"] for m in marks if m["event"] == "leave"}
    seconds = {phase: left[phase] - entered[phase] for phase in entered if phase in left}
    if "transform" in entered and "staging" in entered:
        seconds["transform"] = entered["staging"] - entered["transform"]
    return seconds


def _where(marks: list[dict]) -> str:
    """The phase the process was in when it died (or after which one)."""
    if not marks:
        return "start"
    last = marks[-1]
    if last["event"] == "enter":
        return last["phase"]
    return f"after {last['phase']}"


def _report(harness: Harness, durations: dict, started: float, seed: int, results: list, out: Path | None = None):
    """The figures so far; written to `out` (also every 10 trials, so a long soak stopped early keeps them)."""
    report = {
        "trials": harness.trials,
        "kills_by_phase": dict(harness.kills),
        "phase_seconds": {k: round(v, 4) for k, v in durations.items()},
        "seconds": round(time.monotonic() - started, 1),
        "seed": seed,
        "results": results,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--range-days", type=int, default=1, help="days per run: 2 or more is a range run")
    parser.add_argument("--out", type=Path, default=HERE.parent / "data" / "crash_soak.json")
    options = parser.parse_args()

    sys.path[:0] = [str(HERE.parent / "plugins"), str(HERE.parent / "dags"), str(HERE)]
    data = Path(tempfile.mkdtemp(prefix="wap-soak-"))
    os.environ["WAP_DATA_DIR"] = str(data)
    os.environ.setdefault("WAP_SPARK_MASTER", "local[1]")
    from sample_data.orders import write_landing
    from wap.spark import ConnectServer, get_spark

    write_landing(data / "landing", DAY - dt.timedelta(days=1), days=2 + options.range_days, orders_per_day=40)
    started = time.monotonic()
    with ConnectServer() as server:
        get_spark()
        harness = Harness(server.remote, data / "landing", seed=options.seed, range_days=options.range_days)
        try:
            durations = harness.prepare()
            results = []
            for n in range(options.trials):
                results.append(harness.trial(n))
                if (n + 1) % 10 == 0:
                    print(f"{n + 1} trials, every check held; kills by phase: {dict(harness.kills)}", flush=True)
                    _report(harness, durations, started, options.seed, results, options.out)
        finally:
            harness.close()
            shutil.rmtree(data, ignore_errors=True)
    report = _report(harness, durations, started, options.seed, results, options.out)
    print(
        f"{harness.trials} trials, each killed once and retried: I1, I2, I4 held every time "
        f"({report['seconds']} s); kills by phase: {dict(harness.kills)}; written to {options.out}"
    )


if __name__ == "__main__":
    main()
