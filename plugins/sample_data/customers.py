"""A deterministic `customers` source table in PostgreSQL: the kind of OLTP table an
incremental (updated_at) extract reads.

Each `write_hour` inserts new customers and changes some existing ones (tier, email,
country), every row stamped with an `updated_at` inside that hour, so a window
`[hour, hour + 1h)` on `updated_at` selects exactly the rows that hour wrote. The same
hours written in the same order with the same seed give the same table.

    python -m sample_data.customers --url postgresql+psycopg2://postgres@127.0.0.1:5432/shop \\
        --start 2024-01-01T00:00 --hours 24
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import unicodedata
from typing import Any

import sqlalchemy as sa

COUNTRIES = ("DE", "FR", "NL", "US", "GB")
TIERS = ("bronze", "silver", "gold")
# A few non-ASCII names: the text must survive the driver and Spark unchanged.
FIRST_NAMES = ("Anna", "Ben", "Chloé", "David", "Emma", "Finn", "Grace", "Hugo", "Inès", "Jan", "Lena", "Noah")
LAST_NAMES = ("Bakker", "Dubois", "Fischer", "Jansen", "Martin", "Müller", "Smith", "Taylor", "Visser", "Walker")
DOMAINS = ("example.com", "example.org", "example.net")  # reserved for examples (RFC 2606)
CHANGEABLE = ("tier", "email", "country")

metadata = sa.MetaData()
customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("email", sa.Text),
    sa.Column("country", sa.Text),
    sa.Column("tier", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # What an incremental extract filters on; an OLTP table would index it.
    sa.Index("customers_updated_at", "updated_at"),
    schema="public",
)


def create_table(url: str) -> None:
    """Create `public.customers` (and its `updated_at` index) unless it exists."""
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def write_hour(url: str, hour: dt.datetime, new: int = 20, changed: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Insert `new` customers and change `changed` existing ones, all stamped inside `hour`.

    `hour` is a timezone-aware datetime on the hour (UTC). New ids are `c-<yyyymmddhh>-<n>`.
    Changed customers are drawn from those created in earlier hours (fewer if there are
    fewer), each getting a different tier, email and/or country. `updated_at` values are
    distinct, spread over the hour and always before the next hour. Write each hour once:
    an hour whose customers exist already is refused.

    Returns the rows as written (every column; `updated_at` in UTC), oldest first.
    """
    hour = _utc_hour(hour)
    if new < 0 or changed < 0:
        raise ValueError(f"new={new}, changed={changed}: counts cannot be negative")
    key = f"{seed}:{hour:%Y%m%d%H}"
    prefix = f"c-{hour:%Y%m%d%H}-"
    # One generator per purpose: the new customers do not depend on what the table holds.
    new_rng, change_rng, time_rng = (random.Random(f"customers:{key}:{part}") for part in ("new", "change", "time"))
    rows = [_new_customer(new_rng, f"{prefix}{n:04d}") for n in range(new)]

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            # Compared and sorted here, not in SQL: the database's collation must not change the picks.
            ids = conn.scalars(sa.select(customers.c.customer_id)).all()
            if any(customer_id.startswith(prefix) for customer_id in ids):
                raise ValueError(f"customers of {hour:%Y-%m-%d %H}:00 UTC exist already: write each hour once")
            earlier = sorted(customer_id for customer_id in ids if customer_id < prefix)  # created before this hour
            picked = change_rng.sample(earlier, min(changed, len(earlier)))
            current = {
                row["customer_id"]: dict(row)
                for row in conn.execute(sa.select(customers).where(customers.c.customer_id.in_(picked))).mappings()
            }
            updates = [_change(change_rng, current[customer_id]) for customer_id in picked]

            _stamp(time_rng, hour, [*rows, *updates])
            if rows:
                conn.execute(sa.insert(customers), rows)
            if updates:
                # Without .values(), the SET clause is the parameters' keys other than `key`.
                statement = sa.update(customers).where(customers.c.customer_id == sa.bindparam("key"))
                columns = (*CHANGEABLE, "updated_at")
                conn.execute(statement, [{"key": row["customer_id"]} | {c: row[c] for c in columns} for row in updates])
    finally:
        engine.dispose()
    return sorted([*rows, *updates], key=lambda row: row["updated_at"])


def snapshot(url: str) -> dict[str, dict[str, Any]]:
    """The table's current rows by customer_id (`updated_at` in UTC)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(customers)).mappings().all()
    finally:
        engine.dispose()
    return {
        row["customer_id"]: {**row, "updated_at": row["updated_at"].astimezone(dt.UTC)}
        for row in sorted(rows, key=lambda row: row["customer_id"])
    }


def _utc_hour(hour: dt.datetime) -> dt.datetime:
    if hour.tzinfo is None:
        raise ValueError(f"{hour}: give a timezone-aware datetime (UTC), not a naive one")
    hour = hour.astimezone(dt.UTC)
    if hour != hour.replace(minute=0, second=0, microsecond=0):
        raise ValueError(f"{hour}: not on the hour")
    return hour


def _email(rng: random.Random, name: str) -> str:
    local = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().replace(" ", ".")
    return f"{local}{rng.randrange(1, 100)}@{rng.choice(DOMAINS)}"


def _new_customer(rng: random.Random, customer_id: str) -> dict[str, Any]:
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    return {
        "customer_id": customer_id,
        "name": name,
        "email": _email(rng, name),
        "country": rng.choice(COUNTRIES),
        # Most customers start at the bottom tier, as they would.
        "tier": rng.choices(TIERS, weights=(6, 3, 1))[0],
    }


def _change(rng: random.Random, row: dict[str, Any]) -> dict[str, Any]:
    """The row with one to three of tier, email, country set to a different valid value."""
    row = {**row}
    for column in rng.sample(CHANGEABLE, rng.randint(1, len(CHANGEABLE))):
        if column == "email":
            email = row["email"]
            while email == row["email"]:
                email = _email(rng, row["name"])
            row["email"] = email
        else:
            options = COUNTRIES if column == "country" else TIERS
            row[column] = rng.choice([value for value in options if value != row[column]])
    return row


def _stamp(rng: random.Random, hour: dt.datetime, rows: list[dict[str, Any]]) -> None:
    """Give each row its own `updated_at` in [hour, hour + 1h), one per equal slice of the hour."""
    slices = list(range(len(rows)))
    rng.shuffle(slices)  # new and changed rows interleave in time
    micros = 3600 * 1_000_000
    for row, n in zip(rows, slices, strict=True):
        start, end = n * micros // len(rows), (n + 1) * micros // len(rows)
        row["updated_at"] = hour + dt.timedelta(microseconds=rng.randrange(start, end))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of the PostgreSQL database")
    parser.add_argument("--start", required=True, type=dt.datetime.fromisoformat, help="first hour, UTC")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--new", type=int, default=20, help="new customers per hour")
    parser.add_argument("--changed", type=int, default=5, help="changed customers per hour")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = args.start if args.start.tzinfo else args.start.replace(tzinfo=dt.UTC)
    create_table(args.url)
    for n in range(args.hours):
        hour = start + dt.timedelta(hours=n)
        rows = write_hour(args.url, hour, new=args.new, changed=args.changed, seed=args.seed)
        print(f"{hour:%Y-%m-%d %H}:00 UTC: {len(rows)} rows")


if __name__ == "__main__":
    main()
