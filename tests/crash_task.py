"""A task process for the crash harness: it runs one task of a silver_orders run, as an
Airflow worker's task process would (`steps.stage`, `steps.audit` or `steps.publish` with
the upstream task's XCom), and SIGKILLs itself at a chosen moment of a chosen phase.

Protocol: it imports what a task imports, prints READY, reads one JSON command from stdin:
    {"task": "stage"|"audit"|"publish", "args": {...}, "phase": "transform"|..., "delay": s}
The kill timer starts when the process enters `phase`; each phase it enters or leaves is
appended to the progress file (argv[1]), so the harness knows where the process died.
`{"calibrate": true, ...}` runs the task without a kill and reports the phases' timings.
`"pause": {"phase": ..., "seconds": s}` makes the task wait that long on entering the phase (a
slow step: its process holds the attempt meanwhile).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import signal
import sys
import threading
import time

from silver_orders import ORDERS

from wap import audit, sources, staging, steps, tables
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


watch("transform", sources, "take_in")
watch("staging", staging, "write_staged")
watch("audit", audit, "audit")
watch("commit", tables, "swap_partition")
watch("ledger", Ledger, "update", lambda self, pipeline, token, **fields: fields.get("status") == "published")

print("READY", flush=True)
command.update(json.loads(sys.stdin.readline()))
args = command["args"]
if command["task"] == "stage":
    result = steps.stage(
        Runtime.from_env(), ORDERS, dt.date.fromisoformat(args["partition"]), args["run_id"], args["try_number"]
    )
elif command["task"] == "audit":
    result = steps.audit(Runtime.from_env(), ORDERS, staging.StagedRun.from_dict(args["staged"]))
else:
    result = steps.publish(Runtime.from_env(), ORDERS, staging.StagedRun.from_dict(args["staged"]))
mark("done", command["task"])
if not command.get("calibrate"):
    die()  # the task's work is over, but the process dies before Airflow hears of it
print("DONE " + json.dumps(result.to_dict() if hasattr(result, "to_dict") else result), flush=True)
