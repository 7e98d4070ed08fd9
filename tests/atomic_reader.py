"""A reader in its own process: reads one partition in a loop while another process publishes.

Usage: python atomic_reader.py TABLE DAY STOP_FILE OUT_FILE
DAY may be a range FIRST/LAST: every read of it must then see one version in every day, each
day whole (a range run's publish switches them all at once).
Writes {"reads": n, "seen": {version: count}, "violations": [...], "errors": [...]} to OUT_FILE,
and its progress so far ({"reads", "seen"}) to OUT_FILE.progress after every read.
"""

import collections
import datetime as dt
import json
import os
import sys
import time

from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThanOrEqual

from wap import tables

table_name, day, stop_file, out_file = sys.argv[1:5]
expected_rows = json.loads(os.environ["EXPECTED_ROWS"])  # {version: rows}
seen: collections.Counter = collections.Counter()
violations, errors = [], []
reads = 0
first, _, last = day.partition("/")
days = 1 + (dt.date.fromisoformat(last) - dt.date.fromisoformat(first)).days if last else 1
selected = And(GreaterThanOrEqual("d", first), LessThanOrEqual("d", last)) if last else EqualTo("d", day)
deadline = time.monotonic() + 120
while not os.path.exists(stop_file) and time.monotonic() < deadline:
    try:
        rows = tables.load_table(table_name).scan(row_filter=selected).to_arrow()
    except Exception as exc:
        errors.append(repr(exc)[:200])
        continue
    reads += 1
    versions = set(rows.column("version").to_pylist())
    if len(versions) != 1:
        violations.append(f"read {reads}: {len(rows)} rows of versions {sorted(versions)}")
        continue
    (version,) = versions
    per_day = collections.Counter(str(d) for d in rows.column("d").to_pylist())
    if len(per_day) != days or set(per_day.values()) != {expected_rows[version]}:
        violations.append(f"read {reads}: version {version} with rows per day {dict(per_day)}")
    seen[version] += 1
    # Progress for the publisher, which publishes until this reader has overlapped enough.
    with open(out_file + ".part", "w") as handle:
        json.dump({"reads": reads, "seen": seen}, handle)
    os.replace(out_file + ".part", out_file + ".progress")
with open(out_file, "w") as handle:
    json.dump({"reads": reads, "seen": seen, "violations": violations[:20], "errors": errors[:20]}, handle)
