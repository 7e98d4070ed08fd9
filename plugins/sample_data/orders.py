"""Deterministic sample order events, landed as JSON lines per day, with realistic defects.

`landing/orders/dt=<day>/orders-<day>-<n>.jsonl` holds the events that *arrived* that day:
- each order has a `placed` event (with the amount) and may be `paid`, `shipped` or
  `cancelled` later the same day; update events carry no amount (null);
- some events are re-sent (exact duplicates), some arrive late, in the next day's folder;
- some events have no channel (null).

The same (day, seed, orders_per_day) always gives the same files.

    python -m sample_data.orders --start 2024-01-01 --days 7 --out data/landing
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

# The quickstart's size (scripts/quickstart.py): days generated here pass the example's volume rule next to its days.
ORDERS_PER_DAY = 500
CHANNELS = ("web", "app", "store")
CURRENCIES = ("EUR", "USD", "GBP")
DUPLICATE_RATE = 0.04
LATE_RATE = 0.05
NULL_CHANNEL_RATE = 0.03


def events_for_day(day: dt.date, orders_per_day: int = ORDERS_PER_DAY, seed: int = 7) -> list[dict[str, Any]]:
    """The events that happened on `day` (each tagged with the day it lands on)."""
    rng = random.Random(f"{seed}:{day.isoformat()}")
    start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC)
    events: list[dict[str, Any]] = []
    for n in range(orders_per_day):
        order_id = f"O-{day:%Y%m%d}-{n:05d}"
        customer = f"C-{rng.randrange(1, orders_per_day * 3):06d}"
        currency = rng.choice(CURRENCIES)
        channel = None if rng.random() < NULL_CHANNEL_RATE else rng.choice(CHANNELS)
        amount = round(rng.uniform(5, 500), 2)
        at = start + dt.timedelta(seconds=rng.randrange(0, 20 * 3600))
        steps = ["placed"]
        fate = rng.random()
        if fate < 0.1:
            steps.append("cancelled")
        elif fate < 0.8:
            steps.append("paid")
            if rng.random() < 0.5:
                steps.append("shipped")
        for i, status in enumerate(steps):
            at += dt.timedelta(seconds=rng.randrange(60, 3600) if i else 0)
            event = {
                "event_id": f"E-{order_id}-{i}",
                "order_id": order_id,
                "customer_id": customer,
                "event_ts": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "status": status,
                "amount": amount if status == "placed" else None,
                "currency": currency,
                "channel": channel,
            }
            lands = day + dt.timedelta(days=1) if rng.random() < LATE_RATE else day
            copies = 2 if rng.random() < DUPLICATE_RATE else 1
            events.extend([{**event, "_lands_on": lands}] * copies)
    return events


def write_landing(
    out: Path, start: dt.date, days: int, orders_per_day: int = ORDERS_PER_DAY, seed: int = 7
) -> list[Path]:
    """Write the landed files for `days` days from `start`; return the files written."""
    by_landing_day: dict[dt.date, list[dict[str, Any]]] = defaultdict(list)
    for offset in range(days):
        for event in events_for_day(start + dt.timedelta(days=offset), orders_per_day, seed):
            by_landing_day[event["_lands_on"]].append(event)
    written = []
    for day, events in sorted(by_landing_day.items()):
        folder = out / "orders" / f"dt={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"orders-{day.isoformat()}-{start.isoformat()}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for event in events:
                record = {k: v for k, v in event.items() if k != "_lands_on"}
                handle.write(json.dumps(record) + "\n")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--orders-per-day", type=int, default=ORDERS_PER_DAY)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True, help="the landing folder")
    args = parser.parse_args()
    for path in write_landing(args.out, args.start, args.days, args.orders_per_day, args.seed):
        print(path)


if __name__ == "__main__":
    main()
