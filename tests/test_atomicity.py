"""Atomic publish (I1): a reader in another process sees, for a partition, the old or the
new version, complete — never a mix, never an empty gap — while publishes happen. The same
for a merged (unpartitioned) table, whose every publish replaces the whole table."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DAY = dt.date(2024, 5, 1)
VERSIONS = {"A": (300, 3), "B": (500, 2)}  # version: (rows, files)
PUBLISHES = 24


def write_version(location: str, version: str, n: int, day: dt.date = DAY) -> list[str]:
    rows, files = VERSIONS[version]
    folder = Path(location.removeprefix("file://")) / "data" / f"d={day}" / f"run-atomic-{n}"
    folder.mkdir(parents=True)
    paths = []
    for i in range(files):
        count = rows // files
        table = pa.table(
            {
                "id": [f"{version}-{n}-{i}-{k}" for k in range(count)],
                "version": [version] * count,
                "d": pa.array([day] * count, pa.date32()),
            }
        )
        path = folder / f"part-{i}.parquet"
        pq.write_table(table, path)
        paths.append(f"file://{path}")  # not as_uri(): it percent-encodes the "=" of d=...
    return paths


def overlapped(progress: Path) -> bool:
    """Whether the reader has read at least 10 times, both versions among them."""
    try:
        done = json.loads(progress.read_text())
    except (OSError, ValueError):
        return False
    return done["reads"] >= 10 and all(done["seen"].get(v, 0) > 0 for v in VERSIONS)


@pytest.mark.parametrize("partition_column", ["d", None], ids=["partition", "whole-table"])
def test_readers_never_see_a_mix_or_a_gap(data_dir, tmp_path, partition_column):
    from wap import tables
    from wap.contract import Contract

    name = f"test.atomic_{partition_column or 'whole'}"
    columns = {"id": "string", "version": "string", "d": "date"}
    table = tables.ensure_table(name, Contract(version=1, partition_column=partition_column, columns=columns))
    # Publishes carry a partition in their summary, as a run's do (a merged table's: the run's hour).
    recorded = {tables.PARTITION: str(DAY)}
    tables.swap_partition(name, partition_column, DAY, write_version(table.location(), "A", 0), recorded)

    stop, out = tmp_path / "stop", tmp_path / "reads.json"
    env = {**os.environ, "EXPECTED_ROWS": json.dumps({v: r for v, (r, _) in VERSIONS.items()})}
    reader = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("atomic_reader.py")),
            name,
            str(DAY),
            str(stop),
            str(out),
        ],
        env=env,
    )
    progress = Path(f"{out}.progress")
    try:
        deadline = time.monotonic() + 120
        while not progress.exists() and time.monotonic() < deadline:  # the reader has started and read once
            time.sleep(0.2)
        # At least PUBLISHES publishes, and on until the reader has read both versions enough
        # times to mean something, however slow this machine is today.
        n = 0
        while n < PUBLISHES or (not overlapped(progress) and n < 20 * PUBLISHES):
            n += 1
            version = "B" if n % 2 else "A"
            tables.swap_partition(name, partition_column, DAY, write_version(table.location(), version, n), recorded)
            time.sleep(0.05)
        if n % 2:  # end on version A, as the checks below expect
            tables.swap_partition(name, partition_column, DAY, write_version(table.location(), "A", n + 1), recorded)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    result = json.loads(out.read_text())

    assert result["violations"] == []
    assert result["errors"] == []
    # The test only means something if the reader really overlapped both versions.
    assert result["seen"].get("A", 0) > 0 and result["seen"].get("B", 0) > 0, result
    assert result["reads"] >= 10, result
    # And the table ends with exactly the last version published.
    final = tables.load_table(name).scan().to_arrow()
    assert set(final.column("version").to_pylist()) == {"A"} and final.num_rows == VERSIONS["A"][0]


def test_a_range_publish_switches_every_day_at_once(data_dir, tmp_path):
    """A range run's commit (`tables.swap_partitions`): a reader of the range in another process
    sees every day old or new, whole, and all of them from the same publish."""
    from wap import tables
    from wap.contract import Contract

    name, days = "test.atomic_range", [DAY + dt.timedelta(days=n) for n in range(3)]
    span = f"{days[0]}/{days[-1]}"
    columns = {"id": "string", "version": "string", "d": "date"}
    table = tables.ensure_table(name, Contract(version=1, partition_column="d", columns=columns))

    def publish(version: str, n: int) -> None:
        changes = {day: (write_version(table.location(), version, n, day), tables.ANY_VERSION) for day in days}
        summary = tables.range_summary({str(day): (f"t-{n}-{day}", VERSIONS[version][0], version) for day in days})
        tables.swap_partitions(name, "d", changes, {tables.PARTITION: span, **summary})

    publish("A", 0)
    stop, out = tmp_path / "stop", tmp_path / "reads.json"
    env = {**os.environ, "EXPECTED_ROWS": json.dumps({v: r for v, (r, _) in VERSIONS.items()})}
    reader = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("atomic_reader.py")), name, span, str(stop), str(out)], env=env
    )
    progress = Path(f"{out}.progress")
    try:
        deadline = time.monotonic() + 120
        while not progress.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        n = 0
        while n < PUBLISHES or (not overlapped(progress) and n < 20 * PUBLISHES):
            n += 1
            publish("B" if n % 2 else "A", n)
            time.sleep(0.05)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    result = json.loads(out.read_text())

    assert result["violations"] == [] and result["errors"] == []
    assert result["seen"].get("A", 0) > 0 and result["seen"].get("B", 0) > 0 and result["reads"] >= 10, result
    # Each day's version names the range commit that made it, with the day's own token.
    last = tables.load_table(name)
    for day in days:
        version = tables.live_version(last, day)
        assert (
            version.run_token == f"t-{n}-{day}" and tables.find_publish(last, version.run_token) == version.snapshot_id
        )
