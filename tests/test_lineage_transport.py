"""Lineage is never lost in silence: the file transport's folder is made where the DAGs load,
and a transport that cannot deliver says so in the task log."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import START


def file_transport(path: Path) -> str:
    return json.dumps({"type": "file", "log_file_path": str(path), "append": True})


def test_the_transport_folder_is_made_and_an_impossible_one_is_named(tmp_path, monkeypatch):
    from wap import lineage

    target = tmp_path / "fresh" / "lineage" / "events.jsonl"
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", file_transport(target))
    assert lineage.transport_problem() is None
    assert target.parent.is_dir()

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", file_transport(blocker / "lineage" / "events.jsonl"))
    problem = lineage.transport_problem()
    assert problem and "OpenLineage events cannot be written to" in problem and "lineage is lost" in problem

    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", '{"type": "file", ')
    assert "is not JSON" in lineage.transport_problem()
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "http", "url": "http://x"}))
    assert lineage.transport_problem() is None  # not a file: nothing to make


def test_a_run_with_a_fresh_lineage_folder_writes_every_event(landed, data_dir):
    """As under `airflow standalone` with a fresh data folder: the folder does not exist yet."""
    events = data_dir / "never-made" / "lineage" / "events.jsonl"
    assert not events.parent.exists()
    env = {**os.environ, "AIRFLOW__OPENLINEAGE__TRANSPORT": file_transport(events)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("lineage_run.py")), (START + dt.timedelta(days=1)).isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"state": "success"' in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    written = [json.loads(line) for line in events.read_text().splitlines()]
    seen = {(e["job"]["name"].rsplit(".", 1)[-1], e["eventType"]) for e in written}
    for task in ("resolve_partition", "stage", "audit", "publish"):
        assert {(task, "START"), (task, "COMPLETE")} <= seen, sorted(seen)
