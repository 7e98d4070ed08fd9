"""Crash safety under SIGKILL (I1, I2, I4): 15 task processes (3 in each phase) killed at
random moments of a run — transform, staging, audit, the publish commit, the ledger write —
each retried to completion, every invariant checked after every kill. `tests/crash_harness.py`
is the harness; `WAP_CRASH_TRIALS=30` for more here, or run it alone for a longer soak
(`python tests/crash_harness.py --trials 300`). The same for a range run of two days
(`RANGE_TRIALS`, `--range-days 2`): every day of it checked, and both days switching together.
"""

from __future__ import annotations

import os

import pytest
from crash_harness import PHASES, Harness

TRIALS = int(os.environ.get("WAP_CRASH_TRIALS", "15"))
RANGE_TRIALS = int(os.environ.get("WAP_CRASH_RANGE_TRIALS", "10"))


@pytest.fixture(scope="module")
def server(landed, spark):
    from wap.spark import ConnectServer

    with ConnectServer() as server:
        yield server


@pytest.fixture(scope="module")
def harness(server, landed):
    harness = Harness(server.remote, landed, seed=20261121)
    try:
        harness.prepare()
        yield harness
    finally:
        harness.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_never_breaks_a_partition_the_ledger_or_a_rerun(harness):
    results = [harness.trial(n) for n in range(TRIALS)]
    assert harness.trials == TRIALS
    # Every phase got its kills (where each process really died is in `died_in`).
    assert {r["phase"] for r in results} == set(PHASES)
    inside = sum(n for where, n in harness.kills.items() if where in PHASES)
    assert inside >= TRIALS // 2, f"most kills should land inside a phase, not after it: {dict(harness.kills)}"
    print(f"{TRIALS} kills, by where the process died: {dict(harness.kills)}; phase seconds {harness.durations}")


@pytest.mark.slow
def test_sigkill_in_a_range_run_never_breaks_a_day_the_ledger_or_a_rerun(harness, server, landed):
    """After the single-day trials (their module's table): a range run of two days, killed in
    each phase, retried; each day old or new and both together, then exactly the clean run."""
    ranged = Harness(server.remote, landed, seed=20261201, range_days=2)
    try:
        ranged.prepare()
        results = [ranged.trial(n) for n in range(RANGE_TRIALS)]
    finally:
        ranged.close()
    assert ranged.trials == RANGE_TRIALS and {r["phase"] for r in results} == set(PHASES)
    print(f"{RANGE_TRIALS} kills in range runs, by where the process died: {dict(ranged.kills)}")
