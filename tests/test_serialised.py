"""Two runs of one partition at once (I5): the first to publish wins, the other fails
clearly and publishes nothing; never an interleaved or a lost publish.

Each round stages two real runs of the same day on the same live version, with different
data, then races their publishes in two processes released at the same instant.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from conftest import START, read_partition, session_runtime
from publish_worker import publish_at

from wap import steps, tables
from wap.ledger import Ledger

DAY = START + dt.timedelta(days=2)
ROUNDS = int(os.environ.get("WAP_RACE_ROUNDS", "5"))


@pytest.fixture(scope="module")
def orders(landed, spark):
    from silver_orders import ORDERS

    return ORDERS


@pytest.fixture(scope="module")
def workers(orders):
    # Started once (their imports cost seconds); they inherit this module's data folder.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        yield pool


def extra_order(folder: Path, n: str, day: dt.date = DAY) -> Path:
    """A valid extra order for the day: the second run's data differs from the first's."""
    event = {
        "event_id": f"E-RACE-{n}",
        "order_id": f"O-RACE-{n}",
        "customer_id": "C-1",
        "event_ts": f"{day.isoformat()}T12:00:00Z",
        "status": "placed",
        "amount": 10 + len(n),
        "currency": "EUR",
        "channel": "web",
    }
    path = folder / "race.jsonl"
    path.write_text(json.dumps(event) + "\n")
    return path


def staged_run(orders, run_id: str):
    return steps.audit(session_runtime(), orders, steps.stage(session_runtime(), orders, DAY, run_id, 1))


def test_two_runs_of_one_partition_race_and_the_first_to_publish_wins(orders, landed, workers):
    folder = landed / "orders" / f"dt={DAY.isoformat()}"
    seed = staged_run(orders, "race-seed")
    steps.publish(session_runtime(), orders, seed)
    winners = []
    for n in range(ROUNDS):
        before = tables.load_table(orders.table)
        base = tables.live_version(before, DAY)
        runs = []
        for side in "ab":  # each with its own extra order: different from each other and from the live day
            extra = extra_order(folder, f"{n}{side}")
            try:
                runs.append(staged_run(orders, f"race-{n}-{side}"))
            finally:
                extra.unlink()
        a, b = runs
        assert a.base_snapshot == b.base_snapshot == base.snapshot_id
        assert len({a.checksum, b.checksum, base.checksum}) == 3, "the versions must differ, or the race proves nothing"

        moment = time.time() + 0.5
        results = [workers.apply_async(publish_at, (moment, run.to_dict())) for run in (a, b)]
        outcomes = dict(r.get(timeout=120) for r in results)

        published = [run for run in (a, b) if outcomes[run.run_id] == "published"]
        lost = [run for run in (a, b) if outcomes[run.run_id].startswith("superseded")]
        assert len(published) == 1 and len(lost) == 1, outcomes
        (winner,), (loser,) = published, lost
        winners.append(winner.run_id[-1])
        assert f"run {winner.run_id} published this partition" in outcomes[loser.run_id]

        table = tables.load_table(orders.table)
        live = tables.live_version(table, DAY)
        assert (live.run_id, live.checksum) == (winner.run_id, winner.checksum)
        old = {s.snapshot_id for s in before.snapshots()}
        new = [s for s in table.snapshots() if s.snapshot_id not in old]
        assert new and {s.summary[tables.RUN_TOKEN] for s in new} == {winner.run_token}, "only the winner committed"
        rows = read_partition(orders.table, "order_date", DAY)
        ids = rows.column("order_id").to_pylist()
        assert len(ids) == len(set(ids)) == winner.rows_out, "the winner's rows, each once"
        assert f"O-RACE-{winner.run_id[5:].replace('-', '')}" in ids
        assert f"O-RACE-{loser.run_id[5:].replace('-', '')}" not in ids

        ledger = {r["run_token"]: r for r in Ledger().rows(orders.name, DAY.isoformat())}
        assert ledger[winner.run_token]["status"] == "published"
        assert ledger[winner.run_token]["snapshot_id"] == live.snapshot_id
        assert ledger[loser.run_token]["status"] == "superseded"
        assert winner.run_id in ledger[loser.run_token]["error"]
        assert not Path(loser.staged_dir.removeprefix("file://")).exists(), "the loser's staged files are removed"
    print(f"{ROUNDS} races, winners: {''.join(winners)}")


def test_a_run_that_staged_before_another_published_does_not_overwrite_it(orders, landed):
    """No race needed: a run whose base is stale when it publishes loses, unless its rows are the same."""
    folder = landed / "orders" / f"dt={DAY.isoformat()}"
    late = staged_run(orders, "stale-late")
    extra = extra_order(folder, "stale")
    try:
        first = staged_run(orders, "stale-first")
    finally:
        extra.unlink()
    same = staged_run(orders, "stale-same")
    assert late.checksum != first.checksum
    assert steps.publish(session_runtime(), orders, first)["status"] == "published"
    with pytest.raises(steps.SupersededError, match="stale-first"):
        steps.publish(session_runtime(), orders, late)
    assert tables.live_version(tables.load_table(orders.table), DAY).run_id == "stale-first"

    # Its data again, on the new live version: publishes.
    again = staged_run(orders, "stale-again")
    assert again.checksum == late.checksum
    assert steps.publish(session_runtime(), orders, again)["status"] == "published"
    # A run with the same rows as what is live: nothing to commit, nothing lost.
    assert same.checksum == again.checksum
    assert steps.publish(session_runtime(), orders, same)["status"] == "skipped"
