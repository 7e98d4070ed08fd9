"""Run one write-audit-publish of N synthetic rows in this fresh process; print peak RSS.

Usage: python memory_probe.py N [VARIANT [RUN_ID]]. Prints {"python_mb": .., "jvm_mb": ..,
"status": .., "snapshot_id": ..} as JSON: the peak resident memory of this Python process
and of the Spark JVM it started (local mode: the driver and executor are that one JVM), and
what the publish did (the caller checks it committed: `skipped` would be no publish).
"""

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "plugins"), str(HERE)]
os.environ.setdefault("WAP_DATA_DIR", tempfile.mkdtemp(prefix="wap-mem-"))
os.environ["BENCH_SYNTH_ROWS"] = sys.argv[1]
os.environ["BENCH_SYNTH_VARIANT"] = sys.argv[2] if len(sys.argv) > 2 else "0"
run_id = sys.argv[3] if len(sys.argv) > 3 else "memory-probe"

import datetime as dt  # noqa: E402
import resource  # noqa: E402

from bench_pipeline import bench_pipeline  # noqa: E402

from wap import steps  # noqa: E402
from wap.runtime import Runtime  # noqa: E402

peak_jvm_kb = 0


def children_rss_kb() -> int:
    total = 0
    for child in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split():
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def watch() -> None:
    global peak_jvm_kb
    while True:
        peak_jvm_kb = max(peak_jvm_kb, children_rss_kb())
        time.sleep(0.05)


threading.Thread(target=watch, daemon=True).start()
pipeline = bench_pipeline()
day = dt.date(2024, 1, 1)
staged = steps.stage(Runtime.from_env(), pipeline, day, run_id, 1)
staged = steps.audit(Runtime.from_env(), pipeline, staged)
result = steps.publish(Runtime.from_env(), pipeline, staged)
time.sleep(0.2)
python_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(
    json.dumps(
        {
            "python_mb": python_mb,
            "jvm_mb": peak_jvm_kb / 1024,
            "status": result["status"],
            "snapshot_id": result["snapshot_id"],
        }
    )
)
