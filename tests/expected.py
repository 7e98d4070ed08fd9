"""An independent computation of what the tables must hold, straight from the landed files.

Plain Python over the JSON lines, sharing no code with the pipeline, so a bug in the
SQL or the mechanism cannot hide in both places at once.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path


def orders_for_day(landing: Path, day: dt.date) -> dict[str, dict]:
    events: dict[str, dict] = {}
    for path in sorted(landing.glob("orders/dt=*/*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["order_id"] and event["event_ts"][:10] == day.isoformat():
                events[event["event_id"]] = event  # re-sent copies collapse
    by_order: dict[str, list[dict]] = defaultdict(list)
    for event in events.values():
        by_order[event["order_id"]].append(event)
    orders = {}
    for order_id, evs in by_order.items():
        latest = max(evs, key=lambda e: (e["event_ts"], e["event_id"]))
        amounts = [Decimal(str(e["amount"])).quantize(Decimal("0.01")) for e in evs if e["amount"] is not None]
        orders[order_id] = {
            "status": latest["status"],
            "amount": max(amounts),
            "currency": evs[0]["currency"],
            "channel": next((e["channel"] for e in evs if e["channel"]), None) or "unknown",
            "customer_id": evs[0]["customer_id"],
            "events": len(evs),
        }
    return orders


def daily_sales(orders: dict[str, dict]) -> dict[tuple[str, str], dict]:
    groups: dict[tuple[str, str], dict] = defaultdict(
        lambda: {"orders": 0, "paid_orders": 0, "cancelled_orders": 0, "revenue": Decimal("0.00"), "customers": set()}
    )
    for order in orders.values():
        group = groups[(order["channel"], order["currency"])]
        group["orders"] += 1
        group["paid_orders"] += order["status"] in ("paid", "shipped")
        group["cancelled_orders"] += order["status"] == "cancelled"
        if order["status"] != "cancelled":
            group["revenue"] += order["amount"]
        group["customers"].add(order["customer_id"])
    return {key: {**g, "customers": len(g["customers"])} for key, g in groups.items()}
