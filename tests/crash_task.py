"""A task process for the crash harness: it runs one task of a silver_orders run, as an
Airflow worker's task process would (`steps.stage`, `steps.audit` or `steps.publish` with
the upstream task's XCom; `wap.ranges`' for a range run, `"partition": "FIRST/LAST"`), and
SIGKILLs itself at a chosen moment of a chosen phase.

Protocol: it imports what a task imports, prints READY, reads one JSON command from stdin:
    {"task": "stage"|"audit"|"publish", "args": {...}, "phase": "transform"|..., "delay": s}
The kill timer starts when the process enters `phase`; each phase it enters or leaves is
appended to the progress file (argv[1]), so the harness knows where the process died.
`{"calibrate": true, ...}` runs the task without a kill and reports the phases' timings.
`"pause": {"phase": ..., "seconds": s}` makes the task wait that long on entering the phase (a
slow step: its process holds the attempt meanwhile).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time

from silver_orders import ORDERS

from wap import audit, ranges, sources, staging, steps, tables
from wap.ledger import Ledger
from wap.runtime import Runtime

progress = open(sys.argv[1], "a", buffering=1)  # noqa: SIM115 - lives as long as the process
command: dict = {}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def mark(event: str, phase: str) -> None:
    progress.write(json.dumps({"event": event, "phase": phase, "t": time.monotonic()}) + "\n")


def watch(phase: str, module, name: str, when=lambda *a, **k: True) -> None:
    """Mark entering and leaving `module.name`; start the kill timer on entering the chosen phase."""
    real = getattr(module, name)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        if not when(*args, **kwargs):
            return real(*args, **kwargs)
        mark("enter", phase)
        if command.get("phase") == phase and not command.get("calibrate"):
            threading.Timer(command["delay"], die).start()
        if command.get("pause", {}).get("phase") == phase:
            time.sleep(command["pause"]["seconds"])
        result = real(*args, **kwargs)
        mark("leave", phase)
        return result

    setattr(module, name, wrapper)


print("READY", flush=True)
command.update(json.loads(sys.stdin.readline()))
args = command["args"]
span = ORDERS.grain.parse_span(args["partition"])
ranged = "/" in args["partition"]
# The functions each phase is in: a single partition's, or a range's (the single ones call the
# range ones inside, so only one set is watched).
watch("transform", sources, "take_in_range" if ranged else "take_in")
watch("staging", staging, "write_staged_by" if ranged else "write_staged")
watch("audit", audit, "audit_by" if ranged else "audit")
watch("commit", tables, "swap_partitions" if ranged else "swap_partition")
watch("ledger", Ledger, "update", lambda self, pipeline, token, **fields: fields.get("status") == "published")

runtime = Runtime.from_env()
if ranged:
    if command["task"] == "stage":
        result = ranges.stage(runtime, ORDERS, span, args["run_id"], args["try_number"])
    elif command["task"] == "audit":
        result = ranges.audit(runtime, ORDERS, staging.StagedRange.from_dict(args["staged"]))
    else:
        result = ranges.publish(runtime, ORDERS, staging.StagedRange.from_dict(args["staged"]))
elif command["task"] == "stage":
    result = steps.stage(runtime, ORDERS, span, args["run_id"], args["try_number"])
elif command["task"] == "audit":
    result = steps.audit(runtime, ORDERS, staging.StagedRun.from_dict(args["staged"]))
else:
    result = steps.publish(runtime, ORDERS, staging.StagedRun.from_dict(args["staged"]))
mark("done", command["task"])
if not command.get("calibrate"):
    die()  # the task's work is over, but the process dies before Airflow hears of it
print("DONE " + json.dumps(result.to_dict() if hasattr(result, "to_dict") else result), flush=True)
