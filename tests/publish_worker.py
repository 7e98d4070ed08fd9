"""A worker process's side of the publish race in test_serialised.py (kept apart from the
tests: a spawned worker imports this module, and importing conftest there would set up
another test session)."""

from __future__ import annotations

import time

from wap import steps
from wap.runtime import Runtime


def publish_at(moment: float, staged: dict) -> tuple[str, str]:
    """Wait for `moment`, publish the staged run, say how it went."""
    from silver_orders import ORDERS

    run = steps.staging.StagedRun.from_dict(staged)
    time.sleep(max(0.0, moment - time.time()))
    try:
        return run.run_id, steps.publish(Runtime.from_env(), ORDERS, run)["status"]
    except steps.SupersededError as exc:
        return run.run_id, f"superseded: {exc}"
